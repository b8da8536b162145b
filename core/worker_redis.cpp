// The Redis backplane on the worker's ring: two connections per worker (a
// subscriber and a command connection), driven like client sockets. The Redis
// protocol logic is backplane/redis_session (sans-I/O); this file only moves
// bytes, maps subscriptions to room/user interest, publishes client pushes and
// delivers channel messages. Design: docs/backplane.md.
//
// In this step: plain redis:// (no cluster), publish/subscribe with the local
// fast path and echo suppression by message id, reconnect with backoff and
// re-subscription. Presence in Redis comes next.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/session.h"
#include "core/worker.h"
#include "core/worker_internal.h"
#include "protocol/utf8.h"

namespace wsgate::core {

namespace {

using detail::bump;

}  // namespace

void worker::redis_setup() {
    for (unsigned which : {redis_sub, redis_cmd}) {
        backplane::redis_session_options o;
        o.role = which == redis_sub ? backplane::redis_role::subscriber : backplane::redis_role::command;
        o.user = _cfg.redis_user;
        o.password = _cfg.redis_password;
        o.db = which == redis_cmd ? _cfg.redis_db : 0;
        o.seed = _rng();
        _redis[which].s = std::make_unique<backplane::redis_session>(o);
        _redis[which].rbuf = std::make_unique<uint8_t[]>(redis_rbuf);
    }
    _names = std::make_unique<backplane::redis_names>(std::string(), false);
    _mid_prefix = "{\"mid\":\"" + _cfg.server_id + ":";
    _redis[redis_sub].s->subscribe(_names->broadcast_channel());
    redis_connect(redis_sub);
    redis_connect(redis_cmd);
}

void worker::redis_connect(unsigned which) {
    redis_conn& r = _redis[which];
    int fd = socket(_cfg.redis_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r.s->on_disconnected(now_ms());
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    r.fd = fd;
    ++r.gen;
    r.connecting = true;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&_cfg.redis_addr), _cfg.redis_addr_len);
    io_uring_sqe_set_data64(sqe, pack(op::redis_connect, which, r.gen));
}

void worker::redis_drop(unsigned which, const char* why) {
    redis_conn& r = _redis[which];
    if (r.fd < 0) {
        return;
    }
    bool was_connected = r.s->connected();
    if (was_connected || r.connecting) {
        bump(_stats.redis_disconnects);
    }
    if (was_connected) {
        std::fprintf(stderr, "wsgate: worker %u: redis %s connection lost: %s\n", _index,
                     which == redis_sub ? "subscriber" : "command", why);
    }
    // Operations still in flight on this socket complete once it is shut down
    // (no cancel by fd: the number may be reused before the SQE is submitted);
    // they carry the old generation and are ignored.
    shutdown(r.fd, SHUT_RDWR);
    close(r.fd);
    r.fd = -1;
    ++r.gen;
    r.connecting = r.recv_armed = r.send_inflight = false;
    r.out.clear();
    r.s->on_disconnected(now_ms());
    redis_events(which);  // failed in-flight commands
}

void worker::redis_handle(op o, unsigned which, uint32_t gen, int res) {
    if (which > redis_cmd) {
        return;
    }
    redis_conn& r = _redis[which];
    if (!r.s || r.fd < 0 || (r.gen & 0xffffff) != gen) {
        return;  // for a socket already dropped
    }
    switch (o) {
    case op::redis_connect:
        if (res < 0) {
            redis_drop(which, std::strerror(-res));  // counted as a failed dial
            return;
        }
        r.connecting = false;
        bump(_stats.redis_connects);
        r.s->on_connected(now_ms());
        break;
    case op::redis_recv:
        r.recv_armed = false;
        if (res <= 0) {
            redis_drop(which, res == 0 ? "closed by the server" : std::strerror(-res));
            return;
        }
        r.s->feed(std::span<const uint8_t>(r.rbuf.get(), static_cast<size_t>(res)));
        redis_events(which);
        if (r.fd < 0) {
            return;
        }
        break;
    case op::redis_send:
        r.send_inflight = false;
        if (res <= 0) {
            redis_drop(which, res == 0 ? "send returned 0" : std::strerror(-res));
            return;
        }
        r.out.consume(static_cast<size_t>(res));
        break;
    default:
        return;
    }
    if (!r.recv_armed && r.s->connected()) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_recv(sqe, r.fd, r.rbuf.get(), redis_rbuf, 0);
        io_uring_sqe_set_data64(sqe, pack(op::redis_recv, which, r.gen));
        r.recv_armed = true;
    }
}

void worker::redis_events(unsigned which) {
    redis_conn& r = _redis[which];
    backplane::redis_event ev;
    while (r.s->poll(ev)) {
        switch (ev.kind) {
        case backplane::redis_event_kind::message:
            on_redis_message(ev.channel, ev.text);
            break;
        case backplane::redis_event_kind::reply:
            if (ev.type == backplane::redis_type::error) {
                bump(_stats.redis_publish_failures);  // only PUBLISH goes through here so far
            }
            break;
        case backplane::redis_event_kind::handshake_failed:
        case backplane::redis_event_kind::protocol_error:
            std::fprintf(stderr, "wsgate: worker %u: redis: %.*s\n", _index, static_cast<int>(ev.text.size()),
                         ev.text.data());
            break;
        default:
            break;
        }
    }
    if (r.s->needs_disconnect() && r.fd >= 0) {
        redis_drop(which, "protocol or authentication error");
    }
}

void worker::redis_flush() {
    for (unsigned which : {redis_sub, redis_cmd}) {
        redis_conn& r = _redis[which];
        if (r.fd < 0 || !r.s->connected() || r.send_inflight) {
            continue;
        }
        if (r.out.empty()) {
            r.s->take_output(r.out);  // every command of this turn: one write (pipelining)
        }
        if (r.out.empty()) {
            continue;
        }
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_send(sqe, r.fd, r.out.data(), r.out.size(), MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, pack(op::redis_send, which, r.gen));
        r.send_inflight = true;
    }
}

void worker::redis_tick() {
    uint32_t now = now_ms();
    for (unsigned which : {redis_sub, redis_cmd}) {
        redis_conn& r = _redis[which];
        if (r.fd < 0 && static_cast<int64_t>(now) >= r.s->next_connect_ms()) {
            redis_connect(which);
        }
    }
}

void worker::redis_interest(bool add, bool room, std::string_view id) {
    std::string channel = room ? _names->room_channel(id) : _names->user_channel(id);
    if (add) {
        _redis[redis_sub].s->subscribe(channel);
    } else {
        _redis[redis_sub].s->unsubscribe(channel);
    }
}

bool worker::redis_publish(protocol::push_kind kind, std::string_view key, const protocol::push_fields& p) {
    // The JSON push other gateways forward verbatim; it starts with our message
    // id (p.mid), so this gateway's workers recognise and drop Redis' echo.
    _scratch.clear();
    protocol::encode_push(_scratch, protocol::wire_format::json, p);
    std::string_view payload(reinterpret_cast<const char*>(_scratch.data()), _scratch.size());
    std::string channel = kind == protocol::push_kind::message  ? _names->room_channel(key)
                          : kind == protocol::push_kind::direct ? _names->user_channel(key)
                                                                : _names->broadcast_channel();
    if (!_redis[redis_cmd].s->command({"PUBLISH", channel, payload}, 0)) {
        bump(_stats.redis_publish_failures);
        return false;
    }
    bump(_stats.redis_publishes);
    return true;
}

void worker::on_redis_message(std::string_view channel, std::string_view payload) {
    bump(_stats.redis_messages);
    if (payload.size() >= _mid_prefix.size() && payload.compare(0, _mid_prefix.size(), _mid_prefix) == 0) {
        bump(_stats.redis_echoes);  // published by this gateway: its members already have it
        return;
    }
    if (!protocol::is_valid_utf8(payload)) {
        bump(_stats.redis_invalid);  // a text frame must be UTF-8; a client would fail with 1007
        return;
    }
    backplane::channel_ref ref = _names->parse_channel(channel);
    std::span<const backplane::conn_id> targets;
    switch (ref.kind) {
    case backplane::channel_kind::room:
        targets = _rooms.members(ref.id);
        break;
    case backplane::channel_kind::user:
        targets = _users.connections(ref.id);
        break;
    case backplane::channel_kind::broadcast:
        break;
    case backplane::channel_kind::unknown:
        return;
    }
    // Verbatim, one text frame, built once for every local recipient.
    _scratch.clear();
    _scratch.append(payload);
    out_frame* f = make_frame(protocol::wire_format::json);
    auto send_to = [&](std::span<const backplane::conn_id> ids) {
        for (backplane::conn_id id : ids) {
            auto slot = static_cast<uint32_t>(id);
            connection& c = _conns[slot];
            if (!c.in_use || c.gen != static_cast<uint32_t>(id >> 32) || !c.sess || c.close_after_flush ||
                c.phase != conn_phase::websocket) {
                continue;
            }
            enqueue_push(slot, c, f, c.sess->batch);
        }
    };
    if (ref.kind == backplane::channel_kind::broadcast) {
        _users.for_each_user([&](std::string_view user) { send_to(_users.connections(user)); });
    } else {
        send_to(targets);
    }
    release_frame(f);
}

}  // namespace wsgate::core
