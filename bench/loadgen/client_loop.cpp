// client_loop.cpp — see client_loop.h. Connection lifecycle and I/O dispatch:
// connect, recv/send completions, flushing, two-phase teardown, deadlines.
// What the bytes mean (upgrade, frames, close handshake) is in client_ws.cpp.
#include "client_loop.h"

#include "clock.h"
#include "ws_handshake.h"
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wsbench {

namespace {

constexpr uint64_t sweep_interval_ns = 100 * ns_per_ms;

} // namespace

const char* to_string(close_reason r) noexcept {
    switch (r) {
    case close_reason::local: return "local";
    case close_reason::connect_failed: return "connect failed";
    case close_reason::handshake_failed: return "handshake failed";
    case close_reason::peer_closed: return "server sent close";
    case close_reason::eof: return "server closed TCP";
    case close_reason::io_error: return "I/O error";
    case close_reason::protocol_error: return "protocol error";
    case close_reason::timeout: return "close timeout";
    }
    return "?";
}

void loop_counters::merge(const loop_counters& o) {
    connects_started += o.connects_started;
    opened += o.opened;
    connect_failed += o.connect_failed;
    handshake_failed += o.handshake_failed;
    peer_closed += o.peer_closed;
    eof += o.eof;
    io_errors += o.io_errors;
    protocol_errors += o.protocol_errors;
    close_timeouts += o.close_timeouts;
    enobufs += o.enobufs;
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    if (first_error.empty()) {
        first_error = o.first_error;
    }
}

client_loop::client_loop(const loop_config& cfg, loop_handler& handler)
    : _cfg(cfg), _handler(handler), _ring(cfg.ring) {
    const uint8_t* tmpl = cfg.tmpl != nullptr ? cfg.tmpl->bytes.data() : nullptr;
    const size_t tmpl_len = cfg.tmpl != nullptr ? cfg.tmpl->bytes.size() : 0;
    _slab.reserve(cfg.max_connections);
    _free.reserve(cfg.max_connections);
    for (unsigned i = 0; i < cfg.max_connections; ++i) {
        _slab.push_back(
            std::make_unique<connection>(tmpl, tmpl_len, cfg.raw_message_size, cfg.collect_payloads));
        _slab.back()->slot = i;
        if (cfg.deflate) {
            _slab.back()->reader.enable_deflate();
        }
    }
    for (unsigned i = cfg.max_connections; i > 0; --i) {
        _free.push_back(i - 1);
    }
    _fixed_files = cfg.fixed_files && _ring.enable_fixed_files(cfg.max_connections);
    _connect_ts.tv_sec = static_cast<long long>(cfg.connect_timeout_ns / ns_per_s);
    _connect_ts.tv_nsec = static_cast<long long>(cfg.connect_timeout_ns % ns_per_s);
    _now = now_ns();
    _last_sweep = _now;
}

client_loop::~client_loop() {
    if (_live > 0) {
        shutdown_all(500 * ns_per_ms);
    }
    for (auto& c : _slab) {
        if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
}

bool client_loop::open() {
    if (_live + _queued >= _cfg.max_connections) {
        return false;
    }
    ++_queued;
    return true;
}

byte_buffer& client_loop::outbox(connection& c) {
    mark_dirty(c);
    return c.pending;
}

void client_loop::mark_dirty(connection& c) {
    if (!c.dirty) {
        c.dirty = true;
        _dirty.push_back(c.slot);
    }
}

void client_loop::record_failure(const connection& c, const char* what, int err) {
    (void)c;
    if (_counters.first_error.empty()) {
        _counters.first_error = what;
        if (err != 0) {
            _counters.first_error += ": ";
            _counters.first_error += std::strerror(err < 0 ? -err : err);
        }
    }
}

void client_loop::start_connect() {
    const uint32_t slot = _free.back();
    _free.pop_back();
    --_queued;
    ++_live;
    ++_opening;
    ++_counters.connects_started;
    connection& c = *_slab[slot];
    c.state = conn_state::connecting;
    c.started_ns = _now;
    c.deadline_ns = _now + _cfg.connect_timeout_ns;

    const target* chosen = _handler.connect_target(c);
    c.dest = chosen ? chosen : _cfg.dest;
    const target& t = *c.dest;
    c.fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        const int err = errno;
        record_failure(c, "socket", err);
        teardown(c, close_reason::connect_failed, err);
        return;
    }
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!_cfg.sources.empty() && t.addr.ss_family == AF_INET) {
        // Defer the port choice to connect() so each source address gets the
        // whole ephemeral range per destination.
        setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        const sockaddr_in& src = _cfg.sources[(_next_source++ + _cfg.source_offset) % _cfg.sources.size()];
        if (bind(c.fd, reinterpret_cast<const sockaddr*>(&src), sizeof(src)) != 0) {
            const int err = errno;
            record_failure(c, "bind source address", err);
            teardown(c, close_reason::connect_failed, err);
            return;
        }
    }

    c.fixed = _fixed_files && _ring.install_fixed(slot, c.fd);
    _ring.reserve(2);
    io_uring_sqe* s = _ring.sqe();
    io_uring_prep_connect(s, io_fd(c), reinterpret_cast<const sockaddr*>(&t.addr), t.addr_len);
    s->flags |= IOSQE_IO_LINK | io_flags(c);
    io_uring_sqe_set_data64(s, pack_user_data(op_kind::connect, slot, c.gen));
    io_uring_sqe* lt = _ring.sqe();
    io_uring_prep_link_timeout(lt, &_connect_ts, 0);
    io_uring_sqe_set_data64(lt, pack_user_data(op_kind::link_timeout, slot, c.gen));
    c.connect_inflight = true;
}

void client_loop::arm_recv(connection& c) {
    _ring.prep_recv_multishot(io_fd(c), c.fixed, pack_user_data(op_kind::recv, c.slot, c.gen));
    c.recv_armed = true;
}

void client_loop::on_connect(connection& c, int res) {
    c.connect_inflight = false;
    if (c.state == conn_state::teardown) {
        note_op_done(c);
        return;
    }
    if (res < 0) {
        const int err = res == -ECANCELED ? ETIMEDOUT : -res;
        record_failure(c, "connect", err);
        teardown(c, close_reason::connect_failed, err);
        return;
    }
    arm_recv(c);
    if (_cfg.raw) {
        became_open(c);
        return;
    }
    c.state = conn_state::handshaking;
    const std::string path = _handler.request_target(c);
    const handshake_request req =
        make_handshake_request(c.dest->host_header, path.empty() ? c.dest->path : path, _rng);
    c.expected = req.expected;
    outbox(c).append(req.bytes.data(), req.bytes.size());
}

void client_loop::on_recv(connection& c, const io_uring_cqe* cqe) {
    const int res = cqe->res;
    if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
        const auto bid = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (res > 0) {
            _counters.bytes_received += static_cast<uint64_t>(res);
            consume(c, _ring.buffer(bid), static_cast<size_t>(res));
        }
        _ring.recycle(bid);
    }
    if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
        c.recv_armed = false;
    }
    if (c.state == conn_state::teardown) {
        note_op_done(c);
        return;
    }
    if (res == 0 || (res < 0 && res != -ENOBUFS)) {
        // The server ended the stream: expected while closing, a failure otherwise.
        if (c.state == conn_state::closing) {
            teardown(c, c.reason, 0);
        } else if (c.state == conn_state::handshaking) {
            record_failure(c, "connection closed during the upgrade", -res);
            teardown(c, close_reason::handshake_failed, -res);
        } else if (res == 0) {
            record_failure(c, "server closed the connection", 0);
            teardown(c, close_reason::eof, 0);
        } else {
            record_failure(c, "recv", -res);
            teardown(c, close_reason::io_error, -res);
        }
        return;
    }
    if (res == -ENOBUFS) {
        ++_counters.enobufs;
    }
    if (!c.recv_armed) {
        arm_recv(c);
    }
}

void client_loop::on_send(connection& c, int res) {
    c.send_inflight = false;
    if (c.state == conn_state::teardown) {
        note_op_done(c);
        return;
    }
    if (res < 0) {
        if (c.state == conn_state::closing) {
            teardown(c, c.reason, 0);
        } else {
            record_failure(c, "send", -res);
            teardown(c, c.state == conn_state::handshaking ? close_reason::handshake_failed
                                                            : close_reason::io_error,
                     -res);
        }
        return;
    }
    _counters.bytes_sent += static_cast<uint64_t>(res);
    c.sending.consume(static_cast<size_t>(res));
    if (!c.sending.empty() || !c.pending.empty()) {
        mark_dirty(c);
    }
}

void client_loop::flush() {
    for (const uint32_t slot : _dirty) {
        connection& c = *_slab[slot];
        c.dirty = false;
        if (c.state == conn_state::teardown || c.state == conn_state::free || c.send_inflight) {
            continue; // a completing send re-marks the connection
        }
        if (c.sending.empty()) {
            c.sending.swap(c.pending);
        }
        if (c.sending.empty()) {
            continue;
        }
        io_uring_sqe* s = _ring.sqe();
        io_uring_prep_send(s, io_fd(c), c.sending.data(), c.sending.size(), MSG_NOSIGNAL);
        s->flags |= io_flags(c);
        io_uring_sqe_set_data64(s, pack_user_data(op_kind::send, slot, c.gen));
        c.send_inflight = true;
    }
    _dirty.clear();
}

void client_loop::teardown(connection& c, close_reason why, int err) {
    if (c.state == conn_state::teardown || c.state == conn_state::free) {
        return;
    }
    if (c.state == conn_state::connecting || c.state == conn_state::handshaking) {
        --_opening;
    }
    c.state = conn_state::teardown;
    c.reason = why;
    c.error = err;
    switch (why) {
    case close_reason::connect_failed: ++_counters.connect_failed; break;
    case close_reason::handshake_failed: ++_counters.handshake_failed; break;
    case close_reason::peer_closed: ++_counters.peer_closed; break;
    case close_reason::eof: ++_counters.eof; break;
    case close_reason::io_error: ++_counters.io_errors; break;
    case close_reason::protocol_error: ++_counters.protocol_errors; break;
    case close_reason::timeout: ++_counters.close_timeouts; break;
    case close_reason::local: break;
    }
    // Cancel each op by its user_data: the kernel finds it in a hash. (A
    // cancel by fd scans every pending op of the ring, so tearing down N
    // connections that way costs O(N^2): seconds at 10k connections, spent
    // in one io_uring_enter that starves everything else on the CPU.)
    const auto cancel = [this, &c](op_kind op) {
        io_uring_sqe* s = _ring.sqe();
        io_uring_prep_cancel64(s, pack_user_data(op, c.slot, c.gen), 0);
        io_uring_sqe_set_data64(s, pack_user_data(op_kind::cancel, c.slot, c.gen));
    };
    if (c.connect_inflight) {
        cancel(op_kind::connect);
    }
    if (c.recv_armed) {
        cancel(op_kind::recv);
    }
    if (c.send_inflight) {
        cancel(op_kind::send);
    }
    note_op_done(c);
}

void client_loop::note_op_done(connection& c) {
    if (c.state == conn_state::teardown && !c.reaping && !c.connect_inflight && !c.recv_armed &&
        !c.send_inflight) {
        c.reaping = true;
        _reap.push_back(c.slot);
    }
}

void client_loop::reap() {
    // Handlers may open() from on_closed; that only queues, so _reap is stable.
    for (size_t i = 0; i < _reap.size(); ++i) {
        connection& c = *_slab[_reap[i]];
        c.reaping = false;
        if (c.connect_inflight || c.recv_armed || c.send_inflight) {
            continue; // re-listed by note_op_done when the last op completes
        }
        if (c.fixed) {
            _ring.remove_fixed(c.slot); // the table holds a reference to the socket
            c.fixed = false;
        }
        if (c.fd >= 0) {
            close(c.fd);
        }
        // Not live any more, so on_closed may open() a replacement right away.
        --_live;
        _handler.on_closed(c);
        const uint8_t* tmpl = _cfg.tmpl != nullptr ? _cfg.tmpl->bytes.data() : nullptr;
        const size_t tmpl_len = _cfg.tmpl != nullptr ? _cfg.tmpl->bytes.size() : 0;
        c.fd = -1;
        c.gen = (c.gen + 1) & 0xffffff;
        c.state = conn_state::free;
        c.reason = close_reason::local;
        c.error = 0;
        c.close_sent = false;
        c.dirty = false;
        c.deadline_ns = 0;
        c.pending.release();
        c.sending.release();
        c.http_in.release();
        c.reader = frame_reader(tmpl, tmpl_len, _cfg.collect_payloads);
        if (_cfg.deflate) {
            c.reader.enable_deflate();
        }
        c.raw = raw_reader(tmpl, _cfg.raw_message_size);
        c.inflight = 0;
        c.user = 0;
        _free.push_back(c.slot);
    }
    _reap.clear();
}

void client_loop::sweep_deadlines() {
    _last_sweep = _now;
    if (_opening == 0 && _live == 0) {
        return;
    }
    for (auto& cp : _slab) {
        connection& c = *cp;
        if (c.deadline_ns == 0 || _now < c.deadline_ns) {
            continue;
        }
        if (c.state == conn_state::connecting) {
            record_failure(c, "connect", ETIMEDOUT);
            teardown(c, close_reason::connect_failed, ETIMEDOUT);
        } else if (c.state == conn_state::handshaking) {
            record_failure(c, "timed out waiting for the 101 response", 0);
            teardown(c, close_reason::handshake_failed, ETIMEDOUT);
        } else if (c.state == conn_state::closing) {
            teardown(c, c.reason == close_reason::local ? close_reason::timeout : c.reason, ETIMEDOUT);
        }
    }
}

void client_loop::run_once(uint64_t max_wait_ns) {
    while (_queued > 0 && _opening < _cfg.connect_concurrency && !_free.empty()) {
        start_connect();
    }
    flush();
    _ring.publish();
    _ring.submit_and_wait(max_wait_ns);
    _now = now_ns();
    _ring.drain([this](const io_uring_cqe* cqe) {
        const uint64_t ud = cqe->user_data;
        const op_kind op = user_data_op(ud);
        const uint32_t slot = user_data_slot(ud);
        if (op == op_kind::link_timeout || op == op_kind::cancel || slot >= _slab.size()) {
            return;
        }
        connection& c = *_slab[slot];
        const bool stale = c.gen != user_data_gen(ud) || c.state == conn_state::free;
        if (stale) {
            if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
                _ring.recycle(static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
            }
            return;
        }
        switch (op) {
        case op_kind::connect: on_connect(c, cqe->res); break;
        case op_kind::recv: on_recv(c, cqe); break;
        case op_kind::send: on_send(c, cqe->res); break;
        default: break;
        }
    });
    reap();
    if (_now - _last_sweep >= sweep_interval_ns) {
        sweep_deadlines();
        reap();
    }
}

void client_loop::shutdown_all(uint64_t grace_ns) {
    _queued = 0;
    for (auto& c : _slab) {
        if (c->state != conn_state::free) {
            // Open connections carry reason `local`; a pending server close keeps its reason.
            teardown(*c, c->reason, 0);
        }
    }
    const uint64_t deadline = now_ns() + grace_ns;
    while (_live > 0 && now_ns() < deadline) {
        run_once(10 * ns_per_ms);
    }
}

} // namespace wsbench
