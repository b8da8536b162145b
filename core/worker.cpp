// The worker event loop: accept, handshake, WebSocket I/O, sends, timers, stop.
#include "core/worker.h"

#include "core/assets.h"
#include "core/log.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>

#include "core/metrics.h"
#include "core/session.h"
#include "core/worker_internal.h"
#include "protocol/ws_frame.h"

namespace wsgate::core {

namespace {

constexpr unsigned sq_entries = 4096;
constexpr unsigned cq_entries = 65536;   // multishot accept/recv post many CQEs per SQE
constexpr unsigned recv_padding = 64;    // ≥ SIMDJSON_PADDING: parse complete messages in place
constexpr uint16_t recv_group = 1;
constexpr long tick_ns = 100'000'000;    // coarse timer sweep: 100 ms
constexpr uint32_t tick_ms = static_cast<uint32_t>(tick_ns / 1'000'000);
constexpr size_t cache_buffer_min = 512;          // output buffers recycled through the worker cache:
constexpr size_t cache_buffer_max = 64 * 1024;    // capacities in [min, max] ...
constexpr size_t cache_buffers = 256;             // ... up to this many (≤ 16 MiB per worker)
constexpr uint32_t max_send_iov = 1024;           // UIO_MAXIOV: segments in one sendmsg
constexpr size_t batch_max_bytes = 64 * 1024;     // one batch frame: at most this payload (framing included) ...
constexpr uint32_t batch_max_pushes = 256;        // ... and this many pushes
constexpr uint32_t auth_logs_per_second = 10;     // per worker; the rest are only counted

using protocol::wire_format;
using protocol::ws_opcode;

using detail::add;
using detail::bump;
using detail::make_id;

enum : uint8_t { list_none = 0, list_handshake = 1, list_linger = 2 };


uint64_t monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool deadline_passed(uint32_t deadline, uint32_t now) {
    return static_cast<int32_t>(deadline - now) <= 0;
}

}  // namespace


// Messages on /echo go straight back with the same opcode.
class worker::echo_handler final : public protocol::ws_handler {
public:
    echo_handler(worker& w, connection& c) : _w(w), _c(c) {}
    void on_message(protocol::ws_opcode opcode, std::span<const uint8_t> payload) override {
        bump(_w._stats.messages_in);
        _c.spoke = true;
        // With permessage-deflate the echo comes back compressed too (conformance:
        // the client's inflater is exercised by our deflater).
        _w._zscratch.clear();
        if (_c.deflate_out && payload.size() >= _w._cfg.compression_min_size && _w._deflater &&
            _w._deflater->message(payload, _w._zscratch)) {
            protocol::ws_conn::write_frame(_w._frames, _c.out, opcode, _w._zscratch.span(), true);
        } else {
            protocol::ws_conn::write_frame(_w._frames, _c.out, opcode, payload);
        }
        bump(_w._stats.messages_out);
    }

private:
    worker& _w;
    connection& _c;
};

// Messages on the client endpoint are requests of the client protocol.
class worker::client_handler final : public protocol::ws_handler {
public:
    client_handler(worker& w, uint32_t slot, connection& c) : _w(w), _slot(slot), _c(c) {}
    void on_message(protocol::ws_opcode opcode, std::span<const uint8_t> payload) override {
        _w.on_client_message(_slot, _c, opcode, payload);
    }

private:
    worker& _w;
    uint32_t _slot;
    connection& _c;
};

worker::worker(unsigned index, int cpu, int listen_fd, const config& cfg, hub& h)
    : _index(index), _cpu(cpu), _listen_fd(listen_fd), _cfg(cfg), _hub(h) {
    _auth_cfg.jwt_secret = cfg.jwt_secret;
    _auth_cfg.leeway_s = cfg.jwt_leeway_s;
    _auth_cfg.allowed_origins = cfg.allowed_origins;
    _overflow.resize(h.workers());
    _wake.assign(h.workers(), 0);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
        seed = static_cast<uint64_t>(time(nullptr)) ^ (uint64_t{index} << 48);
    }
    _rng.seed(seed);
    _iov = std::make_unique<iovec[]>(iov_arena);
    _msg = std::make_unique<msghdr[]>(msg_arena);
    _hs_cfg.ws_path = cfg.ws_path;
    _hs_cfg.echo = cfg.echo;
    _hs_cfg.max_header_bytes = cfg.max_header_bytes;
    _ws_cfg.max_message = cfg.max_message;
    if (cfg.demo) {
        _hs_cfg.demo_page = assets::demo_page;
        _hs_cfg.demo_script = assets::demo_script;
    }
    _hs_cfg.deflate.enabled = cfg.compression;
    _hs_cfg.deflate.level = static_cast<int>(cfg.compression_level);
    _hs_cfg.deflate.min_size = cfg.compression_min_size;
    _hs_cfg.deflate.client_context_takeover = cfg.compression_client_context_takeover;
    _hs_cfg.deflate.server_window_bits = static_cast<uint8_t>(cfg.compression_server_window_bits);
    _hs_cfg.deflate.client_window_bits = static_cast<uint8_t>(cfg.compression_client_window_bits);
    if (cfg.compression) {
        _deflater = std::make_unique<protocol::deflater>(static_cast<int>(cfg.compression_level),
                                                         static_cast<uint8_t>(cfg.compression_server_window_bits));
        _inflater = std::make_unique<protocol::inflater>(15, false);
    }
    _tick.tv_sec = 0;
    _tick.tv_nsec = tick_ns;
}

worker::~worker() {
    for (auto& q : _overflow) {
        for (xmsg* m : q) {
            xmsg_release(m);
        }
    }
    for (uint32_t slot = 0; slot < _conns.capacity(); ++slot) {
        connection& c = _conns[slot];
        delete c.sess;
        c.sess = nullptr;
        while (!c.q.empty()) {
            release_frame(c.q.front().f);
            c.q.pop_front();
        }
    }
    for (out_segment* r : _ring_cache) {
        std::free(r);
    }
    for (auto& n : _rnodes) {
        for (redis_conn& r : n->c) {
            if (r.fd >= 0) {
                close(r.fd);
            }
        }
    }
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
            log_line(log_level::warn, "pin_failed").kv("worker", _index).kv("cpu", _cpu).kv("error", std::strerror(err));
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
    _hub.set_ring_fd(_index, _ring.ring_fd);
    if (!_cfg.redis_url.empty()) {
        redis_setup();
    }
    return 0;
}

int worker::run() {
    int ret = setup();
    if (ret < 0) {
        _started.store(ret, std::memory_order_release);
        return ret;
    }
    _tick_stamp_ms.store(monotonic_ns() / 1'000'000ull, std::memory_order_relaxed);
    _started.store(1, std::memory_order_release);
    for (;;) {
        flush();
        _bufs.publish();
        if (_stopping && _listener_closed && _conns.live() == 0 &&
            (redis_quiet() || deadline_passed(_stop_deadline + 2000, now_ms()))) {
            break;  // (Redis: this worker's presence removals written, or 2 s past the close timeout)
        }
        ret = io_uring_submit_and_wait(&_ring, 1);
        reset_arena();
        _turn_ms = now_ms();
        if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN) {
            log_line(log_level::error, "ring_failed").kv("worker", _index).kv("call", "io_uring_submit_and_wait")
                .kv("error", std::strerror(-ret));
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
    // Every connection is gone, so every output frame must have been released:
    // anything else is a reference-count bug. Fail loudly (exit status 1), so
    // every test that stops a gateway checks it.
    if (_fpool.live() != 0) {
        log_line(log_level::error, "bug_frames_leaked").kv("worker", _index).kv("frames", uint64_t{_fpool.live()});
        return -EFAULT;
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
    case op::inbox:
        drain_inbox();
        return;
    case op::redis_connect:
    case op::redis_recv:
    case op::redis_send:
        redis_handle(o, slot, gen, cqe->res);
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

void worker::adopt(int fd) {
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

void worker::close_listener() {
    if (_listener_closed) {
        return;
    }
    // Connections already in the accept queue completed their handshake with
    // us: closing the listener would reset them. Take them first (the window
    // left is the few microseconds between the last accept and the close).
    int flags = fcntl(_listen_fd, F_GETFL);
    if (flags >= 0 && fcntl(_listen_fd, F_SETFL, flags | O_NONBLOCK) == 0) {
        for (;;) {
            int fd = accept4(_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                break;
            }
            adopt(fd);
            bump(_stats.drain_late_accepts);
        }
    }
    close(_listen_fd);
    _listener_closed = true;
}

void worker::on_accept(int res, uint32_t flags) {
    if (!(flags & IORING_CQE_F_MORE)) {
        _accept_armed = false;
    }
    if (res >= 0) {
        // Also while draining: the kernel completed this handshake before the
        // listener closed, so the client is served (and told to leave with the
        // others) rather than reset.
        adopt(res);
    } else if (res != -ECANCELED) {
        // EMFILE/ENFILE and friends: the multishot may have ended; it is re-armed
        // on the next timer tick rather than here, so a full fd table does not spin.
        // Logged at most once a second: a full fd table fails every pending accept.
        bump(_stats.accept_errors);
        uint32_t now = now_ms();
        if (_accept_error_logged_ms == 0 || now - _accept_error_logged_ms >= 1000) {
            _accept_error_logged_ms = now ? now : 1;
            log_line(log_level::warn, "accept_failed").kv("worker", _index).kv("error", std::strerror(-res))
                .kv("note", "logged at most once a second; see wsgate_accept_errors_total");
        }
        if (!_draining) {
            return;
        }
    }
    if (!_accept_armed) {
        if (_draining) {
            close_listener();
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
        if (res > 0) {
            add(_stats.bytes_in, static_cast<uint64_t>(res));
        }
        if (res > 0 && (c.phase == conn_phase::handshake || c.phase == conn_phase::websocket) &&
            !c.close_after_flush) {
            c.heard = true;
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
    if (!c.out.empty() || !c.q.empty() || c.close_after_flush) {
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
        if (r.target == protocol::endpoint::metrics) {
            metrics_gauges g;
            g.draining = _hub.draining.load(std::memory_order_relaxed);
            g.server_id = _cfg.server_id;
            g.version = WSGATE_VERSION;
            r.response = metrics_response(render_metrics(_hub.stats, g));
        }
        if (r.target == protocol::endpoint::readyz && _hub.draining.load(std::memory_order_relaxed)) {
            r.status = 503;  // taken out of rotation: the load balancer stops sending clients
            r.response = protocol::http_error_response(503, "draining");
        }
        if (r.status >= 400 && r.target != protocol::endpoint::readyz) {
            bump(_stats.handshake_failures);
            bump(_stats.handshake_by_status[handshake_status_index(r.status)]);
            log_line(log_level::debug, "upgrade_failed").kv("worker", _index).kv("status", r.status);
        }
        list_remove(slot, c);
        c.out.append(r.response);
        c.close_after_flush = true;
        c.in.release();
        return;
    case protocol::handshake_action::upgrade:
        break;
    }
    list_remove(slot, c);
    std::string reject;
    if (_cfg.max_connections != 0) {
        if (_hub.connections.fetch_add(1, std::memory_order_relaxed) >= _cfg.max_connections) {
            _hub.connections.fetch_sub(1, std::memory_order_relaxed);
            bump(_stats.rejected_full);
            reject = protocol::http_error_response(503, "connection limit reached", "Retry-After: 5\r\n");
        } else {
            c.counted = true;
        }
    }
    if (reject.empty() && r.target == protocol::endpoint::ws) {
        start_session(slot, c, r.request, reject);
    }
    if (!reject.empty()) {
        bump(_stats.handshake_failures);
        uint16_t status = reject.size() > 12 ? static_cast<uint16_t>((reject[9] - '0') * 100 + (reject[10] - '0') * 10 +
                                                                     (reject[11] - '0'))
                                             : 0;  // "HTTP/1.1 NNN ..."
        bump(_stats.handshake_by_status[handshake_status_index(status)]);
        log_line(log_level::debug, "upgrade_failed").kv("worker", _index).kv("status", status);
        if (c.counted) {
            _hub.connections.fetch_sub(1, std::memory_order_relaxed);
            c.counted = false;
        }
        c.out.append(reject);
        c.close_after_flush = true;
        c.in.release();
        return;
    }
    c.out.append(r.response);
    c.target = r.target;
    c.phase = conn_phase::websocket;
    bump(_stats.upgrades);
    if (r.deflate.on) {
        c.ws.enable_deflate();
        c.deflate_out = r.deflate.compress_out;
        bump(_stats.deflate_negotiated);
        if (r.deflate.client_takeover) {
            _own_inflaters[slot] = std::make_unique<protocol::inflater>(r.deflate.client_window_bits, true);
            c.inflate_own = true;
        }
    }
    if (log_enabled(log_level::debug)) {
        log_line(log_level::debug, "ws_open").kv("worker", _index).kv("conn", make_id(slot, c.gen))
            .kv("path", r.target == protocol::endpoint::ws ? "ws" : "echo")
            .kv("user", c.sess ? std::string_view(c.sess->who.user) : std::string_view("-"));
    }
    if (c.sess && _users.add(make_id(slot, c.gen), c.sess->who.user) == backplane::user_outcome::first_connection &&
        redis_on()) {
        redis_interest(true, false, c.sess->who.user);
        presence_register(c.sess->who.user);
    }
    if (r.consumed < input.size()) {
        // The client pipelined frames behind its request: they belong to the WebSocket.
        on_ws_bytes(slot, c, reinterpret_cast<const uint8_t*>(input.data()) + r.consumed,
                    input.size() - r.consumed);
    }
    c.in.release();
}

bool worker::start_session(uint32_t slot, connection& c, const protocol::http_request& req,
                           std::string& reject) {
    (void)slot;
    protocol::auth_result a = protocol::authenticate(req, _auth_cfg, static_cast<int64_t>(time(nullptr)), _rng());
    std::string fmt;
    std::string batch;
    if (a.status == 0 && protocol::query_param(req.query, "format", fmt) && fmt != "json" && fmt != "binary") {
        a.status = 400;
        reject = protocol::http_error_response(400, "format must be json or binary");
        return false;
    }
    if (a.status != 0) {
        if (a.status == 403) {
            bump(_stats.origin_rejects);
        } else {
            bump(_stats.auth_failures);
        }
        // The reason goes to the log, not to the client (it would help an attacker).
        uint32_t now = _turn_ms;
        if (now - _auth_logged_ms >= 1000) {
            _auth_logged_ms = now;
            _auth_logs = 0;
        }
        if (_auth_logs++ < auth_logs_per_second) {
            log_line(log_level::warn, "upgrade_refused").kv("worker", _index).kv("status", a.status)
                .kv("reason", protocol::auth_failure_name(a.failure));
        }
        reject = protocol::http_error_response(a.status, "",
                                               a.status == 401 ? "WWW-Authenticate: Bearer\r\n" : "");
        return false;
    }
    auto* s = new client_session;
    s->who = std::move(a.who);
    s->format = fmt == "binary" ? wire_format::binary : wire_format::json;
    s->batch = protocol::query_param(req.query, "batch", batch) && (batch == "1" || batch == "true");
    s->tokens = uint64_t{_cfg.rate_burst} * 1000;
    s->refill_ms = _turn_ms;
    s->connected_at = redis_on() ? wall_ms() : 0;
    c.sess = s;
    c.batch = s->batch;
    return true;
}

protocol::inflater* worker::inflater_for(uint32_t slot, const connection& c) {
    if (!c.ws.deflate_enabled()) {
        return nullptr;
    }
    if (c.inflate_own) {
        auto it = _own_inflaters.find(slot);
        return it == _own_inflaters.end() ? nullptr : it->second.get();
    }
    return _inflater.get();
}

void worker::on_ws_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len) {
    take_buffer(c.out);
    if (c.target == protocol::endpoint::echo) {
        echo_handler h(*this, c);
        c.ws.feed(std::span<const uint8_t>(data, len), _frames, _ws_cfg, h, c.out, inflater_for(slot, c));
    } else {
        client_handler h(*this, slot, c);
        c.ws.feed(std::span<const uint8_t>(data, len), _frames, _ws_cfg, h, c.out, inflater_for(slot, c));
    }
    if (c.out.empty()) {
        give_buffer(c.out);  // nothing to send: an idle connection holds no buffer
    }
    if (c.ws.should_close_socket() && !c.close_after_flush) {
        c.close_after_flush = true;
        schedule_teardown(slot, c);
    }
    if (c.phase != conn_phase::dead && c.out.size() + c.out_bytes > _cfg.max_outbound_bytes) {
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
    run_teardowns();
    if (redis_on()) {
        redis_flush();
    }
    // Cross-worker messages that did not fit their ring last turn, then one
    // MSG_RING per worker we queued anything for.
    for (unsigned t = 0; t < _overflow.size(); ++t) {
        auto& q = _overflow[t];
        while (!q.empty() && _hub.ring(_index, t).push(q.front())) {
            q.pop_front();
            _wake[t] = 1;
        }
    }
    for (unsigned t = 0; t < _wake.size(); ++t) {
        if (!_wake[t]) {
            continue;
        }
        _wake[t] = 0;
        int fd = _hub.ring_fd(t);
        if (fd < 0) {
            continue;  // not up yet: it drains its inbox on its first timer tick
        }
        if (!_hub.claim_wake(t)) {
            continue;  // a wake-up is already on its way and not yet acted on
        }
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_msg_ring(sqe, fd, 0, pack(op::inbox, _index, 0), 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(sqe, pack(op::ignore, 0, 0));
        bump(_stats.wakes_sent);
    }
    while (_dirty_head != no_slot) {
        uint32_t slot = _dirty_head;
        connection& c = _conns[slot];
        _dirty_head = c.dirty_next;
        c.dirty = false;
        c.dirty_next = no_slot;
        if (!c.in_use || c.phase == conn_phase::dead || c.phase == conn_phase::closing || c.send_inflight) {
            continue;
        }
        if (!c.out.empty() || !c.q.empty()) {
            start_send(slot, c);
        } else if (c.close_after_flush) {
            begin_close(slot, c);
        }
    }
}

void worker::seal(connection& c) {
    if (c.out.empty()) {
        return;
    }
    auto n = static_cast<uint32_t>(c.out.size());
    out_frame* f = _fpool.get();
    protocol::byte_buffer::block b = c.out.detach();
    f->data = b.data;
    f->cap = b.capacity;
    f->len = n;
    f->refs = 1;
    if (c.q.capacity() == 0 && !_ring_cache.empty()) {
        c.q.adopt_small(_ring_cache.back());
        _ring_cache.pop_back();
    }
    c.q.push_back(out_segment{f, 0, n, seg_private});
    c.out_bytes += n;
}

void worker::release_ring(connection& c) {
    if (out_segment* r = c.q.detach_small(); r && _ring_cache.size() < 4096) {
        _ring_cache.push_back(r);
    } else {
        if (r) {
            std::free(r);
        }
        c.q.release();
    }
}

void worker::release_frame(out_frame* f) {
    if (--f->refs == 0) {
        give_block(protocol::byte_buffer::block{f->data, f->cap});
        _fpool.put(f);
    }
}

void worker::release_segments(connection& c, uint32_t from) {
    for (uint32_t i = from; i < c.q.size(); ++i) {
        c.out_bytes -= c.q[i].end - c.q[i].off;
        release_frame(c.q[i].f);
    }
    c.q.truncate(from);
}

void worker::frame_batches(connection& c) {
    // Runs of batchable pushes (queued for a connection that opted in) become
    // batch frames. Each push frame carries its batch record right behind its
    // wire frame (JSON: the payload and a ','; binary: [u32 length][payload]),
    // so a batch of k is k+2 iovecs (JSON) or k+1 (binary): the records stay
    // shared; only the frame header, '[' and ']' (or the batch header) are this
    // connection's own bytes.
    _seg_tmp.clear();
    uint32_t n = c.q.size();
    uint32_t i = 0;
    while (i < n) {
        const out_segment& s = c.q[i];
        if (s.kind != seg_batchable) {
            _seg_tmp.push_back(s);
            ++i;
            continue;
        }
        uint8_t opcode = s.f->opcode;
        bool bin = opcode == static_cast<uint8_t>(ws_opcode::binary);
        // Frame payload of a batch whose records total `bytes`: JSON "[" records "]"
        // minus the last record's ','; binary: batch header, then the records.
        auto framed = [bin](size_t bytes) { return bin ? protocol::binary_batch_header + bytes : bytes + 1; };
        uint32_t k = 0;
        size_t bytes = 0;
        while (i + k < n && k < batch_max_pushes && c.q[i + k].kind == seg_batchable &&
               c.q[i + k].f->opcode == opcode &&
               (k == 0 || framed(bytes + (c.q[i + k].end - c.q[i + k].off)) <= batch_max_bytes)) {
            bytes += c.q[i + k].end - c.q[i + k].off;
            ++k;
        }
        if (k == 1) {
            out_segment whole{s.f, 0, s.f->len, seg_push};  // a lone push goes out as its own frame
            c.out_bytes += whole.end - (s.end - s.off);
            _seg_tmp.push_back(whole);
            ++i;
            continue;
        }
        protocol::byte_buffer tmp;
        take_buffer(tmp);
        uint8_t* base = tmp.prepare(protocol::frame::max_server_header + protocol::binary_batch_header + 1);
        size_t pos = protocol::frame::write_server_header(base, opcode, framed(bytes));
        if (bin) {
            base[pos++] = protocol::binary::version;
            base[pos++] = protocol::binary_batch_type;
            base[pos++] = 0;
        } else {
            base[pos++] = '[';
        }
        out_frame* f = _fpool.get();
        _seg_tmp.push_back(out_segment{f, 0, static_cast<uint32_t>(pos), seg_private});
        c.out_bytes += static_cast<uint32_t>(pos);
        f->refs = 1;
        for (uint32_t j = 0; j < k; ++j) {
            out_segment rec = c.q[i + j];
            // Part of a batch frame now: never dropped on its own (the frame header
            // counts its bytes), so it is marked like the connection's own bytes.
            rec.kind = seg_private;
            if (!bin && j + 1 == k) {
                rec.end -= 1;  // the last record without its ','
                c.out_bytes -= 1;
            }
            _seg_tmp.push_back(rec);
        }
        if (!bin) {
            base[pos] = ']';
            _seg_tmp.push_back(out_segment{f, static_cast<uint32_t>(pos), static_cast<uint32_t>(pos + 1), seg_private});
            c.out_bytes += 1;
            ++pos;
            f->refs = 2;
        }
        tmp.commit(pos);
        protocol::byte_buffer::block b = tmp.detach();
        f->data = b.data;
        f->cap = b.capacity;
        f->len = static_cast<uint32_t>(pos);
        i += k;
    }
    c.q.truncate(0);
    for (const out_segment& s : _seg_tmp) {
        c.q.push_back(s);
    }
}

void worker::start_send(uint32_t slot, connection& c) {
    seal(c);
    if (c.batch) {
        frame_batches(c);  // not the session's flag: pushes may still be queued after teardown
    }
    uint32_t n = std::min(c.q.size(), max_send_iov);
    io_uring_sqe* sqe;
    if (n == 1) {
        const out_segment& s = c.q.front();
        sqe = get_sqe();
        io_uring_prep_send(sqe, c.fd, s.f->data + s.off, s.end - s.off, MSG_NOSIGNAL);
    } else {
        if (_iov_used + n > iov_arena || _msg_used == msg_arena) {
            io_uring_submit(&_ring);  // the kernel has copied every iovec queued so far
            reset_arena();
        }
        iovec* iov = &_iov[_iov_used];
        _iov_used += n;
        for (uint32_t i = 0; i < n; ++i) {
            const out_segment& s = c.q[i];
            iov[i].iov_base = s.f->data + s.off;
            iov[i].iov_len = s.end - s.off;
        }
        msghdr* m = &_msg[_msg_used++];
        std::memset(m, 0, sizeof(*m));
        m->msg_iov = iov;
        m->msg_iovlen = n;
        sqe = get_sqe();
        io_uring_prep_sendmsg(sqe, c.fd, m, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, pack(op::send, slot, c.gen));
    c.send_inflight = true;
    c.pinned_segs = n;
}

void worker::consume_sent(connection& c, size_t n) {
    c.pinned_segs = 0;
    while (n > 0) {
        out_segment& s = c.q.front();
        size_t len = s.end - s.off;
        if (n < len) {
            s.off += static_cast<uint32_t>(n);
            c.out_bytes -= static_cast<uint32_t>(n);
            c.pinned_segs = 1;  // partly sent: must go out whole
            return;
        }
        n -= len;
        c.out_bytes -= static_cast<uint32_t>(len);
        release_frame(s.f);
        c.q.pop_front();
    }
}

void worker::on_send(uint32_t slot, int res) {
    connection& c = _conns[slot];
    c.send_inflight = false;
    c.pinned_segs = 0;
    if (c.phase == conn_phase::dead) {
        return;
    }
    if (res <= 0) {
        abort_conn(slot, c);  // EPIPE, ECONNRESET, ECANCELED...
        return;
    }
    add(_stats.bytes_out, static_cast<uint64_t>(res));
    consume_sent(c, static_cast<size_t>(res));
    bump(_stats.sends);
    if (c.q.empty()) {
        // Drained: an idle connection keeps no output memory.
        release_ring(c);
    }
    if (!c.q.empty() || !c.out.empty() || c.close_after_flush) {
        mark_dirty(slot, c);  // the next send carries what is left and everything queued meanwhile
    }
}

void worker::give_buffer(protocol::byte_buffer& b) {
    if (b.capacity() == 0) {
        return;
    }
    if (!b.empty()) {
        b.release();
        return;
    }
    give_block(b.detach());
}

void worker::give_block(protocol::byte_buffer::block b) {
    if (b.capacity >= cache_buffer_min && b.capacity <= cache_buffer_max && _buffer_cache.size() < cache_buffers) {
        _buffer_cache.push_back(b);
    } else {
        protocol::byte_buffer::free_block(b);
    }
}

void worker::take_buffer(protocol::byte_buffer& b) {
    if (b.capacity() == 0 && !_buffer_cache.empty()) {
        b.adopt(_buffer_cache.back());
        _buffer_cache.pop_back();
    }
}

void worker::close_ws(uint32_t slot, connection& c, uint16_t code, std::string_view reason) {
    take_buffer(c.out);
    c.ws.close(_frames, c.out, code, reason);
    c.close_after_flush = true;
    schedule_teardown(slot, c);
    arm_close_deadline(slot, c);
    mark_dirty(slot, c);
}

void worker::begin_close(uint32_t slot, connection& c) {
    // Everything is flushed. Half-close and keep reading until the peer's FIN
    // (or the linger timeout): closing with unread input would make the kernel
    // send RST, and the peer could lose our last bytes (close frame, HTTP error).
    c.phase = conn_phase::closing;
    schedule_teardown(slot, c);
    give_buffer(c.out);
    release_ring(c);
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
    schedule_teardown(slot, c);
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
    if (c.target == protocol::endpoint::ws || c.target == protocol::endpoint::echo) {
        // The code of the closing handshake: ours (an echo of the peer's when it
        // closed first), else the peer's if we never answered, else none (cut).
        uint16_t code = c.ws.sent_close_code() ? c.ws.sent_close_code() : c.ws.received_close_code();
        bump(_stats.closes_by_code[close_code_index(code)]);
        if (log_enabled(log_level::debug)) {
            log_line(log_level::debug, "ws_closed").kv("worker", _index).kv("conn", make_id(slot, c.gen))
                .kv("code", code).kv("peer_code", c.ws.received_close_code());
        }
    }
    teardown(slot, c);
    if (c.counted) {
        _hub.connections.fetch_sub(1, std::memory_order_relaxed);
        c.counted = false;
    }
    close(c.fd);
    c.fd = -1;
    c.ws.reset(_frames);
    c.out.clear();
    give_buffer(c.out);
    c.pinned_segs = 0;
    release_segments(c, 0);
    release_ring(c);
    c.in.release();
    c.target = protocol::endpoint::none;
    c.close_after_flush = false;
    c.batch = false;
    c.heard = false;
    c.pinged = false;
    c.spoke = false;
    c.idle_visits = 0;
    c.deflate_out = false;
    if (c.inflate_own) {
        _own_inflaters.erase(slot);
        c.inflate_own = false;
    }
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
    _tick_stamp_ms.store(monotonic_ns() / 1'000'000ull, std::memory_order_relaxed);
    _stats.rooms.store(_rooms.size(), std::memory_order_relaxed);
    _stats.users.store(_users.user_count(), std::memory_order_relaxed);
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
                bump(_stats.drain_cut);
                abort_conn(slot, c);
                maybe_free(slot, c);
            }
        }
    }
    if (!_accept_armed && !_draining) {
        arm_accept();
    }
    drain_step();
    heartbeat_step();
    drain_inbox();  // safety net: messages queued before this worker's ring fd was published
    if (redis_on()) {
        redis_tick();
    }
    arm_timer();
}

void worker::on_wake() {
    // SIGTERM/SIGINT (main set hub::draining, so /readyz already answers 503):
    // no new connections from now on; the connections we hold are told to go
    // after the drain delay, in batches (drain_step).
    if (_draining) {
        return;
    }
    _draining = true;
    _drain_notice_ms = now_ms() + _cfg.drain_delay_ms;
    if (_accept_armed) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, pack(op::accept, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, pack(op::ignore, 0, 0));
    } else {
        close_listener();
    }
    drain_step();  // at once when there is no delay
}

void worker::drain_step() {
    if (!_draining || _stopping) {
        return;
    }
    uint32_t now = now_ms();
    if (!deadline_passed(_drain_notice_ms, now) && _conns.live() > 0) {
        return;  // (a worker without connections has nobody to warn: it finishes at once)
    }
    // Pushes already acknowledged to a publisher on another worker are in our
    // inbox: deliver them before any close frame.
    drain_inbox();
    if (!_drain_listed) {
        for (uint32_t slot = 0; slot < _conns.capacity(); ++slot) {
            connection& c = _conns[slot];
            if (c.in_use && c.phase != conn_phase::dead && c.phase != conn_phase::closing) {
                _drain_slots.emplace_back(slot, c.gen);
            }
        }
        size_t ticks = std::max<size_t>(1, _cfg.drain_spread_ms / tick_ms);
        _drain_batch = std::max<size_t>(1, (_drain_slots.size() + ticks - 1) / ticks);
        _drain_listed = true;
    }
    size_t end = std::min(_drain_slots.size(), _drain_next + _drain_batch);
    for (; _drain_next < end; ++_drain_next) {
        auto [slot, gen] = _drain_slots[_drain_next];
        connection& c = _conns[slot];
        if (!c.in_use || c.gen != gen || c.close_after_flush) {
            continue;
        }
        if (c.phase == conn_phase::websocket) {
            if (c.sess) {
                // Where to go is the load balancer's business; when is ours: a
                // jittered delay so the clients of a restart do not all arrive
                // somewhere else in the same millisecond.
                uint64_t in_ms = _cfg.reconnect_jitter_ms ? _rng() % (uint64_t{_cfg.reconnect_jitter_ms} + 1) : 0;
                _scratch.clear();
                _scratch.append(std::string_view("{\"type\":\"server_shutdown\",\"reconnect_in_ms\":"));
                _scratch.append(std::to_string(in_ms));
                _scratch.append(std::string_view("}"));
                write_reply(c, wire_format::json);
                bump(_stats.drain_notices);
            }
            close_ws(slot, c, protocol::close_code::going_away, "server shutting down");
        } else if (c.phase == conn_phase::handshake) {
            abort_conn(slot, c);
            maybe_free(slot, c);
        }
    }
    if (_drain_next >= _drain_slots.size()) {
        _stopping = true;  // every close frame is queued: cut what is left after the close timeout
        _stop_deadline = now + _cfg.shutdown_timeout_ms;
        _drain_slots.clear();
        _drain_slots.shrink_to_fit();
    }
}

uint32_t worker::sweep_period_s() const {
    // The ping interval when pings are on (the idle timeout is then at least
    // one interval: checked at start-up), else a quarter of the idle timeout.
    if (_cfg.ping_interval_s) {
        return _cfg.ping_interval_s;
    }
    return _cfg.idle_timeout_s ? std::max(1u, _cfg.idle_timeout_s / 4) : 0;
}

void worker::heartbeat_step() {
    // One pass over every slot per sweep period, a slice per tick. Ping: a
    // connection silent since the last visit gets a ping; one still silent at
    // the visit after that is cut. Any bytes count as life (a busy client's pong
    // may queue behind its data). Idle timeout: a connection that sent no
    // message for --idle-timeout-s (counted in visits) is closed 1000. Cost per
    // tick: capacity / ticks per period slots, whatever the connections do.
    uint32_t period_s = sweep_period_s();
    if (period_s == 0 || _draining) {
        return;
    }
    bool ping = _cfg.ping_interval_s != 0;
    // Visits in a row without a message: the first visit may come right after
    // one, so one more than timeout / period (closed T to T + period after it).
    uint32_t idle_visits = _cfg.idle_timeout_s ? (_cfg.idle_timeout_s + period_s - 1) / period_s + 1 : 0;
    uint32_t cap = _conns.capacity();
    uint64_t ticks = std::max<uint64_t>(1, uint64_t{period_s} * 1000 / tick_ms);
    _hb_carry += cap;
    uint32_t n = static_cast<uint32_t>(_hb_carry / ticks);
    _hb_carry -= static_cast<uint32_t>(n * ticks);
    for (uint32_t i = 0; i < n && cap > 0; ++i) {
        uint32_t slot = _hb_cursor++ % cap;
        connection& c = _conns[slot];
        if (!c.in_use || c.phase != conn_phase::websocket || c.close_after_flush) {
            continue;
        }
        if (idle_visits) {
            c.idle_visits = c.spoke ? 0 : static_cast<uint16_t>(std::min<uint32_t>(c.idle_visits + 1u, 65535u));
            c.spoke = false;
            if (c.idle_visits >= idle_visits) {
                bump(_stats.idle_closes);
                close_ws(slot, c, protocol::close_code::normal, "idle timeout");
                continue;
            }
        }
        if (!ping) {
            continue;
        }
        if (c.heard) {
            c.heard = false;
            c.pinged = false;
        } else if (c.pinged) {
            bump(_stats.heartbeat_timeouts);
            abort_conn(slot, c);  // a dead peer would not complete a close handshake
            maybe_free(slot, c);
        } else {
            take_buffer(c.out);
            protocol::ws_conn::write_frame(_frames, c.out, protocol::ws_opcode::ping, {});
            c.pinged = true;
            bump(_stats.pings_sent);
            mark_dirty(slot, c);
        }
    }
    if (_hb_cursor >= cap) {
        _hb_cursor = 0;
    }
}

}  // namespace wsgate::core
