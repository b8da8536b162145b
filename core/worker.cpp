// The worker event loop: accept, handshake, WebSocket I/O, sends, timers, stop.
#include "core/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace wsgate::core {

namespace {

constexpr unsigned sq_entries = 4096;
constexpr unsigned cq_entries = 65536;   // multishot accept/recv post many CQEs per SQE
constexpr unsigned recv_padding = 64;    // ≥ SIMDJSON_PADDING: parse complete messages in place
constexpr uint16_t recv_group = 1;
constexpr long tick_ns = 100'000'000;    // coarse timer sweep: 100 ms
constexpr size_t cache_buffer_min = 512;          // output buffers recycled through the worker cache:
constexpr size_t cache_buffer_max = 64 * 1024;    // capacities in [min, max] ...
constexpr size_t cache_buffers = 256;             // ... up to this many (≤ 16 MiB per worker)

enum : uint8_t { list_none = 0, list_handshake = 1, list_linger = 2 };

inline void bump(std::atomic<uint64_t>& counter) {
    // Single writer: a plain load/store pair, no locked instruction on the hot path.
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

uint64_t monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool deadline_passed(uint32_t deadline, uint32_t now) {
    return static_cast<int32_t>(deadline - now) <= 0;
}

}  // namespace

// Messages on /echo go straight back with the same opcode. Messages on the
// client endpoint (/ws) are dropped until the client protocol exists.
class worker::echo_handler final : public protocol::ws_handler {
public:
    echo_handler(worker& w, connection& c) : _w(w), _c(c) {}
    void on_message(protocol::ws_opcode opcode, std::span<const uint8_t> payload) override {
        bump(_w._stats.messages_in);
        if (_c.target == protocol::endpoint::echo) {
            protocol::ws_conn::write_frame(_w._frames, _c.out_pending, opcode, payload);
            bump(_w._stats.messages_out);
        }
    }

private:
    worker& _w;
    connection& _c;
};

worker::worker(unsigned index, int cpu, int listen_fd, const config& cfg)
    : _index(index), _cpu(cpu), _listen_fd(listen_fd), _cfg(cfg) {
    _hs_cfg.ws_path = cfg.ws_path;
    _hs_cfg.echo = cfg.echo;
    _hs_cfg.max_header_bytes = cfg.max_header_bytes;
    _ws_cfg.max_message = cfg.max_message;
    _tick.tv_sec = 0;
    _tick.tv_nsec = tick_ns;
}

worker::~worker() {
    for (auto b : _buffer_cache) {
        protocol::byte_buffer::free_block(b);
    }
    if (_ring_ready) {
        io_uring_queue_exit(&_ring);
    }
    if (_wake_fd >= 0) {
        close(_wake_fd);
    }
    if (!_listener_closed && _listen_fd >= 0) {
        close(_listen_fd);
    }
}

uint32_t worker::now_ms() const {
    return static_cast<uint32_t>((monotonic_ns() - _clock_base_ns) / 1'000'000ull);
}

int worker::setup() {
    if (_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(_cpu, &set);
        if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); err != 0) {
            std::fprintf(stderr, "wsgate: worker %u: cannot pin to CPU %d: %s\n", _index, _cpu, std::strerror(err));
        }
    }
    char name[16];
    std::snprintf(name, sizeof(name), "wsgate-w%u", _index);
    pthread_setname_np(pthread_self(), name);

    _clock_base_ns = monotonic_ns();
    _wake_fd = eventfd(0, EFD_CLOEXEC);
    if (_wake_fd < 0) {
        return -errno;
    }
    io_uring_params params;
    std::memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
                   IORING_SETUP_SUBMIT_ALL;
    params.cq_entries = cq_entries;
    if (int ret = io_uring_queue_init_params(sq_entries, &_ring, &params); ret < 0) {
        return ret;
    }
    _ring_ready = true;
    io_uring_register_ring_fd(&_ring);  // optional: saves an fd lookup per io_uring_enter
    if (int ret = _bufs.init(&_ring, recv_group, _cfg.recv_buffers, _cfg.recv_buffer_size, recv_padding);
        ret < 0) {
        return ret;
    }
    arm_accept();
    arm_timer();
    arm_wake();
    return 0;
}

int worker::run() {
    int ret = setup();
    if (ret < 0) {
        _started.store(ret, std::memory_order_release);
        return ret;
    }
    _started.store(1, std::memory_order_release);
    for (;;) {
        flush();
        _bufs.publish();
        if (_stopping && _listener_closed && _conns.live() == 0) {
            break;
        }
        ret = io_uring_submit_and_wait(&_ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN) {
            std::fprintf(stderr, "wsgate: worker %u: io_uring_submit_and_wait: %s\n", _index, std::strerror(-ret));
            return ret;
        }
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&_ring, head, cqe) {
            handle(cqe);
            ++seen;
        }
        io_uring_cq_advance(&_ring, seen);
    }
    return 0;
}

void worker::stop() {
    uint64_t one = 1;
    ssize_t r = write(_wake_fd, &one, sizeof(one));
    (void)r;
}

io_uring_sqe* worker::get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&_ring);
    while (!sqe) {
        io_uring_submit(&_ring);
        sqe = io_uring_get_sqe(&_ring);
    }
    return sqe;
}

void worker::arm_accept() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, _listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, pack(op::accept, 0, 0));
    _accept_armed = true;
}

void worker::arm_recv(uint32_t slot) {
    connection& c = _conns[slot];
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c.fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = _bufs.group_id();
    io_uring_sqe_set_data64(sqe, pack(op::recv, slot, c.gen));
    c.recv_armed = true;
}

void worker::arm_timer() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_timeout(sqe, &_tick, 0, 0);
    io_uring_sqe_set_data64(sqe, pack(op::timer, 0, 0));
}

void worker::arm_wake() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, _wake_fd, &_wake_value, sizeof(_wake_value), 0);
    io_uring_sqe_set_data64(sqe, pack(op::wake, 0, 0));
}

void worker::handle(io_uring_cqe* cqe) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    auto o = static_cast<op>(ud >> 56);
    auto slot = static_cast<uint32_t>(ud);
    auto gen = static_cast<uint32_t>(ud >> 32) & 0xffffff;
    switch (o) {
    case op::accept:
        on_accept(cqe->res, cqe->flags);
        return;
    case op::timer:
        on_timer();
        return;
    case op::wake:
        on_wake();
        return;
    case op::ignore:
        return;
    default:
        break;
    }
    // Connection ops: a completion for a recycled slot is stale. With the
    // two-phase close this should not happen; if it does, give back its buffer.
    if (slot >= _conns.capacity() || !_conns[slot].in_use || (_conns[slot].gen & 0xffffff) != gen) {
        if (cqe->flags & IORING_CQE_F_BUFFER) {
            _bufs.recycle(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        }
        return;
    }
    connection& c = _conns[slot];
    switch (o) {
    case op::recv:
        on_recv(slot, cqe->res, cqe->flags);
        break;
    case op::send:
        on_send(slot, cqe->res);
        break;
    case op::cancel:
        c.cancel_inflight = false;
        break;
    default:
        break;
    }
    maybe_free(slot, c);
}

void worker::on_accept(int res, uint32_t flags) {
    if (!(flags & IORING_CQE_F_MORE)) {
        _accept_armed = false;
    }
    if (res >= 0) {
        int fd = res;
        if (_stopping) {
            close(fd);
        } else {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            uint32_t slot = _conns.allocate();
            connection& c = _conns[slot];
            c.fd = fd;
            c.phase = conn_phase::handshake;
            bump(_stats.accepted);
            list_push(list_handshake, slot, c, now_ms() + _cfg.handshake_timeout_ms);
            arm_recv(slot);
        }
    } else if (res != -ECANCELED) {
        // EMFILE/ENFILE and friends: the multishot may have ended; it is re-armed
        // on the next timer tick rather than here, so a full fd table does not spin.
        // Logged at most once a second: a full fd table fails every pending accept.
        bump(_stats.accept_errors);
        uint32_t now = now_ms();
        if (_accept_error_logged_ms == 0 || now - _accept_error_logged_ms >= 1000) {
            _accept_error_logged_ms = now ? now : 1;
            std::fprintf(stderr, "wsgate: worker %u: accept: %s\n", _index, std::strerror(-res));
        }
        if (!_stopping) {
            return;
        }
    }
    if (!_accept_armed) {
        if (_stopping) {
            if (!_listener_closed) {
                close(_listen_fd);
                _listener_closed = true;
            }
        } else {
            arm_accept();
        }
    }
}

void worker::on_recv(uint32_t slot, int res, uint32_t flags) {
    connection& c = _conns[slot];
    if (!(flags & IORING_CQE_F_MORE)) {
        c.recv_armed = false;
    }
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && (c.phase == conn_phase::handshake || c.phase == conn_phase::websocket) &&
            !c.close_after_flush) {
            on_data(slot, c, _bufs.buffer(bid), static_cast<size_t>(res));
        }
        // Closing connections discard what they read; the buffer goes back either way.
        _bufs.recycle(bid);
    }
    if (res == 0) {
        abort_conn(slot, c);  // peer closed (or finished its side of a lingering close)
        return;
    }
    if (res < 0 && res != -ENOBUFS) {
        if (res != -ECANCELED) {
            abort_conn(slot, c);
        }
        return;
    }
    if (res == -ENOBUFS) {
        // Backpressure, not a fault: every buffer is recycled by the end of this
        // turn and published before the re-armed recv is submitted.
        bump(_stats.enobufs);
    }
    if (!c.recv_armed && c.phase != conn_phase::dead) {
        arm_recv(slot);
    }
}

void worker::on_data(uint32_t slot, connection& c, const uint8_t* data, size_t len) {
    if (c.phase == conn_phase::handshake) {
        on_handshake_bytes(slot, c, data, len);
    } else {
        on_ws_bytes(slot, c, data, len);
    }
    if (c.phase == conn_phase::dead) {
        return;
    }
    if (c.close_after_flush) {
        arm_close_deadline(slot, c);
    }
    if (!c.out_pending.empty() || c.close_after_flush) {
        mark_dirty(slot, c);
    }
}

void worker::arm_close_deadline(uint32_t slot, connection& c) {
    // A connection we decided to close must be gone within the linger time even
    // if its peer stops reading and the last send never completes.
    if (c.timer_list != list_linger) {
        list_remove(slot, c);
        list_push(list_linger, slot, c, now_ms() + _cfg.close_linger_ms);
    }
}

void worker::on_handshake_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len) {
    std::string_view input;
    if (c.in.empty()) {
        input = std::string_view(reinterpret_cast<const char*>(data), len);
    } else {
        c.in.append(data, len);
        input = c.in.view();
    }
    protocol::handshake_result r = protocol::process_handshake(input, _hs_cfg);
    switch (r.action) {
    case protocol::handshake_action::need_more:
        if (c.in.empty()) {
            c.in.append(data, len);
        }
        return;
    case protocol::handshake_action::respond_and_close:
        if (r.status >= 400) {
            bump(_stats.handshake_failures);
        }
        list_remove(slot, c);
        c.out_pending.append(r.response);
        c.close_after_flush = true;
        c.in.release();
        return;
    case protocol::handshake_action::upgrade:
        break;
    }
    list_remove(slot, c);
    c.out_pending.append(r.response);
    c.target = r.target;
    c.phase = conn_phase::websocket;
    if (r.consumed < input.size()) {
        // The client pipelined frames behind its request: they belong to the WebSocket.
        on_ws_bytes(slot, c, reinterpret_cast<const uint8_t*>(input.data()) + r.consumed,
                    input.size() - r.consumed);
    }
    c.in.release();
}

void worker::on_ws_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len) {
    echo_handler h(*this, c);
    take_buffer(c.out_pending);
    c.ws.feed(std::span<const uint8_t>(data, len), _frames, _ws_cfg, h, c.out_pending);
    if (c.out_pending.empty()) {
        give_buffer(c.out_pending);  // nothing to send: an idle connection holds no buffer
    }
    if (c.ws.should_close_socket()) {
        c.close_after_flush = true;
    }
    if (c.out_pending.size() + c.out_inflight.size() > _cfg.max_outbound_bytes) {
        // A peer that sends but does not read: bound the memory it can pin.
        bump(_stats.outbound_overflow_closes);
        abort_conn(slot, c);
    }
}

void worker::mark_dirty(uint32_t slot, connection& c) {
    if (!c.dirty) {
        c.dirty = true;
        c.dirty_next = _dirty_head;
        _dirty_head = slot;
    }
}

void worker::flush() {
    while (_dirty_head != no_slot) {
        uint32_t slot = _dirty_head;
        connection& c = _conns[slot];
        _dirty_head = c.dirty_next;
        c.dirty = false;
        c.dirty_next = no_slot;
        if (!c.in_use || c.phase == conn_phase::dead || c.phase == conn_phase::closing || c.send_inflight) {
            continue;
        }
        if (!c.out_pending.empty()) {
            start_send(slot, c);
        } else if (c.close_after_flush) {
            begin_close(slot, c);
        }
    }
}

void worker::start_send(uint32_t slot, connection& c) {
    if (c.out_inflight.empty()) {
        c.out_inflight.swap(c.out_pending);  // double buffering: no copy, no allocation
    }
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_send(sqe, c.fd, c.out_inflight.data(), c.out_inflight.size(), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, pack(op::send, slot, c.gen));
    c.send_inflight = true;
}

void worker::on_send(uint32_t slot, int res) {
    connection& c = _conns[slot];
    c.send_inflight = false;
    if (c.phase == conn_phase::dead) {
        return;
    }
    if (res <= 0) {
        abort_conn(slot, c);  // EPIPE, ECONNRESET, ECANCELED...
        return;
    }
    c.out_inflight.consume(static_cast<size_t>(res));
    bump(_stats.sends);
    if (!c.out_inflight.empty()) {
        start_send(slot, c);  // partial send: resume where it stopped
        return;
    }
    // Drained: the buffer goes back to the worker's cache, so an idle connection
    // keeps no output memory and a busy one does not pay malloc/free per send.
    give_buffer(c.out_inflight);
    if (!c.out_pending.empty() || c.close_after_flush) {
        mark_dirty(slot, c);  // the next send carries everything queued meanwhile
    }
}

void worker::give_buffer(protocol::byte_buffer& b) {
    size_t cap = b.capacity();
    if (cap == 0) {
        return;
    }
    if (b.empty() && cap >= cache_buffer_min && cap <= cache_buffer_max && _buffer_cache.size() < cache_buffers) {
        _buffer_cache.push_back(b.detach());
    } else {
        b.release();
    }
}

void worker::take_buffer(protocol::byte_buffer& b) {
    if (b.capacity() == 0 && !_buffer_cache.empty()) {
        b.adopt(_buffer_cache.back());
        _buffer_cache.pop_back();
    }
}

void worker::begin_close(uint32_t slot, connection& c) {
    // Everything is flushed. Half-close and keep reading until the peer's FIN
    // (or the linger timeout): closing with unread input would make the kernel
    // send RST, and the peer could lose our last bytes (close frame, HTTP error).
    c.phase = conn_phase::closing;
    give_buffer(c.out_pending);
    give_buffer(c.out_inflight);
    shutdown(c.fd, SHUT_WR);
    list_remove(slot, c);  // a fresh linger period for the peer's FIN
    list_push(list_linger, slot, c, now_ms() + _cfg.close_linger_ms);
    if (!c.recv_armed) {
        arm_recv(slot);
    }
}

void worker::abort_conn(uint32_t slot, connection& c) {
    if (c.phase == conn_phase::dead) {
        return;
    }
    list_remove(slot, c);
    c.phase = conn_phase::dead;
    bump(_stats.closed);
    if (c.recv_armed || c.send_inflight) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel_fd(sqe, c.fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, pack(op::cancel, slot, c.gen));
        c.cancel_inflight = true;
    }
}

void worker::maybe_free(uint32_t slot, connection& c) {
    if (c.phase != conn_phase::dead || c.ops_pending()) {
        return;
    }
    close(c.fd);
    c.fd = -1;
    c.ws.reset(_frames);
    c.out_pending.clear();
    c.out_inflight.clear();
    give_buffer(c.out_pending);
    give_buffer(c.out_inflight);
    c.in.release();
    c.target = protocol::endpoint::none;
    c.close_after_flush = false;
    c.phase = conn_phase::handshake;
    c.timer_list = list_none;
    // c.dirty may still be set: flush() skips slots that are not in use, and
    // a reused slot re-enters the list only through mark_dirty().
    _conns.release(slot);
}

void worker::list_push(uint8_t which, uint32_t slot, connection& c, uint32_t deadline) {
    c.timer_list = which;
    c.deadline_ms = deadline;
    c.list_next = no_slot;
    c.list_prev = _list_tail[which];
    if (_list_tail[which] != no_slot) {
        _conns[_list_tail[which]].list_next = slot;
    } else {
        _list_head[which] = slot;
    }
    _list_tail[which] = slot;
}

void worker::list_remove(uint32_t slot, connection& c) {
    uint8_t which = c.timer_list;
    if (which == list_none) {
        return;
    }
    if (c.list_prev != no_slot) {
        _conns[c.list_prev].list_next = c.list_next;
    } else {
        _list_head[which] = c.list_next;
    }
    if (c.list_next != no_slot) {
        _conns[c.list_next].list_prev = c.list_prev;
    } else {
        _list_tail[which] = c.list_prev;
    }
    c.list_prev = c.list_next = no_slot;
    c.timer_list = list_none;
    (void)slot;
}

void worker::on_timer() {
    uint32_t now = now_ms();
    // Each list is ordered by deadline (one timeout per list, pushed in time
    // order), so a sweep costs O(expired), not O(connections).
    for (uint8_t which : {list_handshake, list_linger}) {
        while (_list_head[which] != no_slot) {
            uint32_t slot = _list_head[which];
            connection& c = _conns[slot];
            if (!deadline_passed(c.deadline_ms, now)) {
                break;
            }
            if (which == list_handshake) {
                bump(_stats.handshake_timeouts);
            }
            abort_conn(slot, c);  // removes it from the list
            maybe_free(slot, c);
        }
    }
    if (_stopping && deadline_passed(_stop_deadline, now)) {
        // Closing handshakes that did not finish in time: terminate.
        for (uint32_t slot = 0; slot < _conns.capacity(); ++slot) {
            connection& c = _conns[slot];
            if (c.in_use && c.phase != conn_phase::dead) {
                abort_conn(slot, c);
                maybe_free(slot, c);
            }
        }
    }
    if (!_accept_armed && !_stopping) {
        arm_accept();
    }
    arm_timer();
}

void worker::on_wake() {
    if (_stopping) {
        return;
    }
    _stopping = true;
    _stop_deadline = now_ms() + _cfg.shutdown_timeout_ms;
    if (_accept_armed) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, pack(op::accept, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, pack(op::ignore, 0, 0));
    } else if (!_listener_closed) {
        close(_listen_fd);
        _listener_closed = true;
    }
    for (uint32_t slot = 0; slot < _conns.capacity(); ++slot) {
        connection& c = _conns[slot];
        if (!c.in_use || c.phase == conn_phase::dead) {
            continue;
        }
        if (c.phase == conn_phase::websocket && !c.close_after_flush) {
            c.ws.close(_frames, c.out_pending, protocol::close_code::going_away, "server shutting down");
            c.close_after_flush = true;
            arm_close_deadline(slot, c);
            mark_dirty(slot, c);
        } else if (c.phase == conn_phase::handshake && !c.close_after_flush) {
            abort_conn(slot, c);
            maybe_free(slot, c);
        }
    }
}

}  // namespace wsgate::core
