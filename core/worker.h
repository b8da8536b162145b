// One worker: a thread pinned to one CPU that owns one io_uring ring, one
// SO_REUSEPORT listener, a provided-buffer ring and every connection it accepted.
//
// Ring setup: IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (only this
// thread submits; completions run when it asks for them), a CQ sized well above
// the SQ for multishot accept and recv. Kernel ≥ 6.1 assumed (6.18 here).
//
// Loop turn: wait for ≥1 completion, handle every CQE (parse, answer, echo into
// per-connection output), recycle provided buffers, re-arm ended multishots,
// then flush: one send per connection with output and no send in flight. All
// of a turn's SQEs go to the kernel in the next io_uring_submit_and_wait.
#pragma once

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "core/buf_ring.h"
#include "core/config.h"
#include "core/connection.h"
#include "protocol/http_upgrade.h"
#include "protocol/ws_conn.h"

namespace wsgate::core {

// Counters of one worker, read by others only for reporting (relaxed atomics,
// written by the owning thread alone).
struct worker_stats {
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> closed{0};
    std::atomic<uint64_t> handshake_failures{0};
    std::atomic<uint64_t> handshake_timeouts{0};
    std::atomic<uint64_t> messages_in{0};
    std::atomic<uint64_t> messages_out{0};
    std::atomic<uint64_t> sends{0};
    std::atomic<uint64_t> enobufs{0};
    std::atomic<uint64_t> outbound_overflow_closes{0};
    std::atomic<uint64_t> accept_errors{0};
};

class worker {
public:
    worker(unsigned index, int cpu, int listen_fd, const config& cfg);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    // Set up the ring on the calling thread (SINGLE_ISSUER binds it) and run
    // until stop() was called and every connection closed. Returns 0 or -errno.
    int run();
    // Thread-safe: ask the worker to stop (wakes it through its eventfd).
    void stop();

    const worker_stats& stats() const { return _stats; }
    // 0 while starting, 1 running, -errno when setup failed.
    int started() const { return _started.load(std::memory_order_acquire); }

private:
    enum class op : uint8_t { accept = 1, recv, send, cancel, timer, wake, ignore };

    static uint64_t pack(op o, uint32_t slot, uint32_t gen) {
        return (static_cast<uint64_t>(o) << 56) | (static_cast<uint64_t>(gen & 0xffffff) << 32) | slot;
    }

    int setup();
    io_uring_sqe* get_sqe();
    void arm_accept();
    void arm_recv(uint32_t slot);
    void arm_timer();
    void arm_wake();

    void handle(io_uring_cqe* cqe);
    void on_accept(int res, uint32_t flags);
    void on_recv(uint32_t slot, int res, uint32_t flags);
    void on_send(uint32_t slot, int res);
    void on_timer();
    void on_wake();

    void on_data(uint32_t slot, connection& c, const uint8_t* data, size_t len);
    void on_handshake_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len);
    void on_ws_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len);

    void mark_dirty(uint32_t slot, connection& c);
    void arm_close_deadline(uint32_t slot, connection& c);
    void flush();
    void start_send(uint32_t slot, connection& c);
    void begin_close(uint32_t slot, connection& c);   // after output is flushed: linger
    void abort_conn(uint32_t slot, connection& c);    // close now, drop unsent output
    void maybe_free(uint32_t slot, connection& c);
    void give_buffer(protocol::byte_buffer& b);   // to the cache (or the allocator)
    void take_buffer(protocol::byte_buffer& b);   // from the cache, if b owns none

    void list_push(uint8_t which, uint32_t slot, connection& c, uint32_t deadline);
    void list_remove(uint32_t slot, connection& c);
    uint32_t now_ms() const;

    class echo_handler;

    unsigned _index;
    int _cpu;
    int _listen_fd;
    int _wake_fd = -1;
    const config& _cfg;
    protocol::handshake_config _hs_cfg;
    protocol::ws_config _ws_cfg;

    io_uring _ring{};
    bool _ring_ready = false;
    buf_ring _bufs;
    protocol::ws_frame_pool _frames;
    connection_slab _conns;
    // Output buffer memory recycled between connections: a connection holds an
    // output buffer only while it has output queued, and taking one from here
    // instead of the allocator keeps malloc/free off the per-message path.
    std::vector<protocol::byte_buffer::block> _buffer_cache;

    uint32_t _dirty_head = no_slot;   // connections with output to flush this turn
    uint32_t _list_head[3] = {no_slot, no_slot, no_slot};
    uint32_t _list_tail[3] = {no_slot, no_slot, no_slot};
    bool _accept_armed = false;
    bool _stopping = false;
    bool _listener_closed = false;
    uint32_t _stop_deadline = 0;
    uint64_t _wake_value = 0;         // eventfd read target
    uint32_t _accept_error_logged_ms = 0;  // rate limit for accept error logs
    __kernel_timespec _tick{};
    uint64_t _clock_base_ns = 0;

    std::atomic<int> _started{0};
    worker_stats _stats;
};

}  // namespace wsgate::core
