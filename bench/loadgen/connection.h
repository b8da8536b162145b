// connection.h — one client connection as the load generator sees it.
//
// Owned by a client_loop slab and addressed by slot; `gen` is bumped when the
// slot is freed so stale CQEs are recognised (see uring.h). A connection is
// freed only after its last in-flight op has completed (two-phase close):
// teardown cancels the ops, the reaper frees the slot once the counters are
// zero, so the kernel never holds a pointer into a freed send buffer.
#pragma once

#include "byte_buffer.h"
#include "ws_frame.h"
#include "ws_handshake.h"

#include <cstdint>

namespace wsbench {

struct target;  // url.h

enum class conn_state : uint8_t {
    free,        // slot unused
    connecting,  // TCP connect in flight
    handshaking, // upgrade request sent, waiting for the 101
    open,        // frames flow (or raw bytes in --raw mode)
    closing,     // close frame sent or received; waiting for the TCP close
    teardown,    // ops being cancelled; freed when none is left
};

// Why a connection ended; passed to loop_handler::on_closed.
enum class close_reason : uint8_t {
    local,            // we closed it (end of run, or the scenario asked)
    connect_failed,   // connect error or timeout
    handshake_failed, // bad or missing 101 response, or timeout waiting for it
    peer_closed,      // server sent a close frame
    eof,              // TCP closed by the server without a close frame
    io_error,         // recv/send error (ECONNRESET, EPIPE, ...)
    protocol_error,   // malformed frame from the server
    timeout,          // close handshake did not finish in time
};

[[nodiscard]] const char* to_string(close_reason r) noexcept;

struct connection {
    connection(const uint8_t* tmpl, size_t tmpl_len, size_t raw_size, bool collect)
        : reader(tmpl, tmpl_len, collect), raw(tmpl, raw_size) {}

    int fd = -1;                      // socket, -1 when free
    bool fixed = false;               // also registered as fixed file #slot; ops use the index
    uint32_t slot = 0;                // index in the slab
    uint32_t gen = 0;                 // generation, bumped on free (24 bits used)
    conn_state state = conn_state::free; // lifecycle
    close_reason reason = close_reason::local; // set at teardown
    int error = 0;                    // errno-style detail for the reason, 0 if none
    bool connect_inflight = false;    // connect SQE not completed
    bool recv_armed = false;          // multishot recv active
    bool send_inflight = false;       // a send of `sending` is in flight
    bool dirty = false;               // listed for the next flush
    bool reaping = false;             // listed for the reaper
    bool close_sent = false;          // we sent a close frame
    uint64_t started_ns = 0;          // when connect was issued
    uint64_t deadline_ns = 0;         // connect/handshake/close deadline, 0 = none
    byte_buffer pending;              // bytes queued, not yet handed to the kernel
    byte_buffer sending;              // bytes of the in-flight send (immutable while in flight)
    byte_buffer http_in;              // handshake response accumulator
    accept_token expected{};          // Sec-WebSocket-Accept we require
    frame_reader reader;              // server frames (WebSocket mode)
    raw_reader raw;                   // fixed-size messages (raw mode)
    uint32_t inflight = 0;            // scenario: messages sent, not yet echoed
    uint64_t user = 0;                // scenario-defined
    const target* dest = nullptr;    // where it connects (loop's, or the handler's choice)
};

} // namespace wsbench
