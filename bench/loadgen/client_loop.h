// client_loop.h — the load generator's per-thread event loop.
//
// One io_uring, one provided-buffer ring and a fixed slab of connections per
// thread; nothing is shared between threads. Each turn: start queued
// connects (bounded concurrency), hand queued bytes to the kernel (one send
// in flight per connection, later bytes coalesced behind it), submit once and
// wait, then dispatch every CQE. Scenarios drive it through loop_handler and
// by calling run_once() until they are done.
//
// Sockets connect with IORING_OP_CONNECT plus a linked timeout; receive with
// one multishot recv each (re-armed on -ENOBUFS or when the kernel ends it);
// the WebSocket upgrade and frame parsing happen here, so scenarios only see
// open / message / closed events.
#pragma once

#include "connection.h"
#include "payload.h"
#include "rng.h"
#include "uring.h"
#include "url.h"

#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wsbench {

class loop_handler {
public:
    virtual ~loop_handler() = default;
    // Connected (raw mode) or upgraded (WebSocket mode).
    virtual void on_open(connection& c) = 0;
    // A complete data message (WebSocket) or a fixed-size chunk (raw).
    virtual void on_message(connection& c, const message_info& m) = 0;
    // Always called exactly once per opened slot, before the slot is reused.
    virtual void on_closed(connection& c) = 0;
    // Called once per connection when its TCP connect starts. May tag the
    // connection (c.user) and return another destination than the loop's
    // (which must outlive the loop); nullptr keeps the loop's.
    virtual const target* connect_target(connection& c) {
        (void)c;
        return nullptr;
    }
    // Called once per connection when its upgrade request is built (TCP is
    // up). May tag the connection (c.user) and return the request target to
    // send instead of the destination's path; empty keeps it.
    virtual std::string request_target(connection& c) {
        (void)c;
        return {};
    }
};

struct loop_config {
    const target* dest = nullptr;          // where to connect (outlives the loop)
    bool raw = false;                      // plain TCP, no upgrade
    size_t raw_message_size = 0;           // raw mode: bytes per message
    const payload_template* tmpl = nullptr; // expected echo payload, or null
    bool collect_payloads = false;         // hand message bytes to on_message (message_info::data)
    bool deflate = false;                  // offer permessage-deflate; inflate compressed messages (collect mode)
    std::vector<sockaddr_in> sources;      // source addresses to spread over, may be empty
    unsigned source_offset = 0;            // rotates sources between threads
    unsigned max_connections = 1;          // slab size
    unsigned connect_concurrency = 256;    // connects + handshakes in flight at most
    uint64_t connect_timeout_ns = 10'000'000'000ull; // connect + upgrade deadline
    uint64_t close_timeout_ns = 2'000'000'000ull;    // graceful close deadline
    uring_config ring;                     // ring and buffer sizes
    bool fixed_files = true;               // register sockets in the ring's file table
};

// What went right and wrong, for the report.
struct loop_counters {
    uint64_t connects_started = 0;  // sockets created
    uint64_t opened = 0;            // reached conn_state::open
    uint64_t connect_failed = 0;    // connect error or timeout
    uint64_t handshake_failed = 0;  // bad/missing 101
    uint64_t peer_closed = 0;       // server close frames while open
    uint64_t eof = 0;               // TCP closed by the server while open
    uint64_t io_errors = 0;         // recv/send errors
    uint64_t protocol_errors = 0;   // malformed frames
    uint64_t close_timeouts = 0;    // graceful closes that timed out
    uint64_t enobufs = 0;           // multishot recv stopped for lack of buffers
    uint64_t bytes_sent = 0;        // all bytes the kernel accepted
    uint64_t bytes_received = 0;    // all bytes received
    std::string first_error;        // first failure, human-readable

    void merge(const loop_counters& o);
    [[nodiscard]] uint64_t errors() const noexcept {
        return connect_failed + handshake_failed + peer_closed + eof + io_errors + protocol_errors +
               close_timeouts;
    }
};

class client_loop {
public:
    client_loop(const loop_config& cfg, loop_handler& handler);
    ~client_loop();
    client_loop(const client_loop&) = delete;
    client_loop& operator=(const client_loop&) = delete;

    // Queues one new connection; it starts when concurrency allows. False when
    // the slab is full.
    bool open();

    // Bytes appended here are sent at the end of the turn. Valid for open
    // connections only.
    [[nodiscard]] byte_buffer& outbox(connection& c);

    // Sends a close frame (1000) and waits for the server's close / TCP close.
    void close_gracefully(connection& c);

    // Drops the connection now (no close frame).
    void abort(connection& c) { teardown(c, close_reason::local, 0); }

    // One loop turn, waiting at most max_wait_ns for completions.
    void run_once(uint64_t max_wait_ns);

    // Tears every connection down and turns the loop until all slots are free
    // or `grace_ns` passed. After this no op references loop memory.
    void shutdown_all(uint64_t grace_ns);

    [[nodiscard]] uint64_t now() const noexcept { return _now; }
    [[nodiscard]] unsigned live() const noexcept { return _live; }
    [[nodiscard]] unsigned queued() const noexcept { return _queued; }
    [[nodiscard]] unsigned opening() const noexcept { return _opening; }
    [[nodiscard]] const loop_counters& counters() const noexcept { return _counters; }
    [[nodiscard]] rng& random() noexcept { return _rng; }
    [[nodiscard]] bool raw_mode() const noexcept { return _cfg.raw; }

    // Dispatch targets for the frame reader's sink (public for the sink only).
    void deliver(connection& c, const message_info& m) { _handler.on_message(c, m); }
    bool control(connection& c, uint8_t opcode, const uint8_t* p, size_t n);

private:
    void start_connect();
    void on_connect(connection& c, int res);
    void on_recv(connection& c, const io_uring_cqe* cqe);
    void on_send(connection& c, int res);
    void consume(connection& c, const uint8_t* p, size_t n);
    void consume_handshake(connection& c, const uint8_t* p, size_t n);
    void became_open(connection& c);
    void teardown(connection& c, close_reason why, int err);
    void note_op_done(connection& c);
    void flush();
    void reap();
    void sweep_deadlines();
    void arm_recv(connection& c);
    void mark_dirty(connection& c);
    void record_failure(const connection& c, const char* what, int err);
    // The descriptor an SQE names for `c`, and the flag that goes with it.
    [[nodiscard]] static int io_fd(const connection& c) noexcept {
        return c.fixed ? static_cast<int>(c.slot) : c.fd;
    }
    [[nodiscard]] static uint8_t io_flags(const connection& c) noexcept {
        return c.fixed ? IOSQE_FIXED_FILE : 0;
    }

    loop_config _cfg;                         // copy; dest/tmpl outlive the loop
    loop_handler& _handler;                   // scenario callbacks
    uring _ring;                              // this thread's ring
    std::vector<std::unique_ptr<connection>> _slab; // fixed size, never reallocates elements
    std::vector<uint32_t> _free;              // free slots (stack)
    std::vector<uint32_t> _dirty;             // slots with bytes to flush
    std::vector<uint32_t> _reap;              // slots in teardown to check
    loop_counters _counters;                  // totals
    rng _rng;                                 // mask and handshake keys
    uint64_t _now = 0;                        // CLOCK_MONOTONIC at the start of this turn's dispatch
    uint64_t _last_sweep = 0;                 // last deadline sweep
    unsigned _live = 0;                       // slots not free
    unsigned _queued = 0;                     // open() calls not yet started
    unsigned _opening = 0;                    // connecting + handshaking
    unsigned _next_source = 0;                // round-robin over _cfg.sources
    __kernel_timespec _connect_ts{};          // linked connect timeout; read at submit time
    bool _fixed_files = false;                // registered file table available
};

} // namespace wsbench
