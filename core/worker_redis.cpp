// The Redis backplane on the worker's ring: two connections per worker (a
// subscriber and a command connection), driven like client sockets. The Redis
// protocol logic is backplane/redis_session (sans-I/O); this file only moves
// bytes, maps subscriptions to room/user interest, publishes client pushes and
// delivers channel messages. Design: docs/backplane.md.
//
// Plain redis:// (no cluster yet): publish/subscribe with the local fast path and
// echo suppression by message id, reconnect with backoff and re-subscription,
// presence kept in Redis per owner (worker) and refreshed every TTL/3.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <unordered_set>

#include "core/session.h"
#include "core/worker.h"
#include "core/worker_internal.h"
#include "protocol/json_codec.h"
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
    _owner = backplane::presence_owner(_cfg.server_id, _index);
    _owner_prefix = _cfg.server_id + ":";
    _ttl_ms_str = std::to_string(uint64_t{_cfg.presence_ttl_s} * 1000);
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
        if (which == redis_cmd) {
            _presence_due = true;  // (re-)register everything this worker holds
        }
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
            redis_reply(ev);
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
        if (which == redis_cmd && _refreshing) {
            presence_pump();
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
    _stats.redis_commands.store(
        _redis[redis_sub].s->counters().commands_sent + _redis[redis_cmd].s->counters().commands_sent,
        std::memory_order_relaxed);
}

void worker::redis_tick() {
    uint32_t now = now_ms();
    for (unsigned which : {redis_sub, redis_cmd}) {
        redis_conn& r = _redis[which];
        if (r.fd < 0 && static_cast<int64_t>(now) >= r.s->next_connect_ms()) {
            redis_connect(which);
        }
    }
    if (presence_on() && !_refreshing && (_presence_due || static_cast<int32_t>(now - _presence_next_ms) >= 0)) {
        presence_refresh_start();
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
    if (!_redis[redis_cmd].s->command({"PUBLISH", channel, payload}, make_token(rtok::publish, 0))) {
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

// --- replies ----------------------------------------------------------------

void worker::redis_reply(const backplane::redis_event& ev) {
    auto kind = static_cast<rtok>(ev.token >> 56);
    uint64_t id = ev.token & ((uint64_t{1} << 56) - 1);
    bool error = ev.type == backplane::redis_type::error;
    switch (kind) {
    case rtok::none:
    case rtok::publish:
        if (error) {
            bump(_stats.redis_publish_failures);  // refused, or lost with the connection
        }
        return;
    case rtok::write:
        if (error && !ev.connection_lost) {
            bump(_stats.redis_errors);
            if (_stats.redis_errors.load(std::memory_order_relaxed) <= 3) {
                std::fprintf(stderr, "wsgate: worker %u: redis presence write failed: %.*s\n", _index,
                             static_cast<int>(ev.text.size()), ev.text.data());
            }
        }
        return;
    case rtok::presence:
    case rtok::online: {
        auto it = _queries.find(id);
        if (it == _queries.end()) {
            return;  // answered already (cannot happen) or never stored
        }
        pending_query& q = *it->second;
        if (kind == rtok::presence && ev.value.type() == backplane::redis_type::array) {
            for (size_t i = 0; i < ev.value.size(); ++i) {
                q.found.emplace(backplane::presence_member_user(ev.value[i].str()));
            }
        } else if (kind == rtok::online && q.redis_next < q.asked.size()) {
            if (ev.type == backplane::redis_type::integer && ev.integer > 0) {
                q.found.insert(q.asked[q.redis_next]);
            }
            ++q.redis_next;
        }
        if (error && !ev.connection_lost) {
            bump(_stats.redis_errors);
        }
        if (--q.redis_wait == 0 && q.remaining == 0) {
            finish_query(id, q);
        }
        return;
    }
    case rtok::unregister: {
        auto it = _unregistering.find(id);
        if (it == _unregistering.end()) {
            return;
        }
        std::string user = std::move(it->second);
        _unregistering.erase(it);
        if (error) {
            if (!ev.connection_lost) {
                bump(_stats.redis_errors);
            }
            return;  // the entries expire with the TTL
        }
        bool sibling = ev.value.type() == backplane::redis_type::array && ev.value.size() == 2 &&
                       ev.value[1].integer() != 0;
        // No other worker of this gateway holds the user (and it did not come back
        // here meanwhile): it leaves this gateway's set.
        if (!sibling && !_users.online(user) && presence_on()) {
            presence_write({"SREM", _names->server_connections_key(_cfg.server_id), user});
        }
        return;
    }
    }
}

// --- presence ---------------------------------------------------------------

int64_t worker::wall_ms() const {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

void worker::presence_write(std::span<const std::string_view> argv) {
    // Fails only when the output is past the session's bound (Redis not reading):
    // the entry is then written by the next refresh pass, or expires.
    if (_redis[redis_cmd].s->command(argv, make_token(rtok::write, 0))) {
        bump(_stats.redis_presence_writes);
    }
}

void worker::presence_join(std::string_view room, std::string_view user) {
    if (!_presence.add(room, user) || !presence_on()) {
        return;  // another local tab holds the pair, or the next refresh pass writes it
    }
    std::string key = _names->room_members_key(room);
    std::string score = std::to_string(wall_ms());
    presence_write({"ZADD", key, score, backplane::presence_member(user, _owner)});
    presence_write({"PEXPIRE", key, _ttl_ms_str});
}

void worker::presence_leave(std::string_view room, std::string_view user) {
    // While Redis is down the removal is not queued: the entry stops being
    // refreshed and drops out within the TTL.
    if (_presence.remove(room, user) && presence_on()) {
        presence_write({"ZREM", _names->room_members_key(room), backplane::presence_member(user, _owner)});
    }
}

void worker::write_user_record(std::string_view user, int64_t wall) {
    // connectedAt: the user's oldest connection here; lastActivity: its latest
    // inbound message on any of them. One write per user per refresh period,
    // however many messages it sent (coalesced).
    int64_t connected_at = wall;
    uint32_t last = 0;
    bool any = false;
    uint32_t mono = now_ms();
    for (backplane::conn_id id : _users.connections(user)) {
        const connection& c = _conns[static_cast<uint32_t>(id)];
        if (!c.sess) {
            continue;
        }
        connected_at = std::min(connected_at, c.sess->connected_at);
        if (!any || static_cast<int32_t>(c.sess->refill_ms - last) > 0) {
            last = c.sess->refill_ms;
        }
        any = true;
    }
    int64_t last_activity = any ? wall - static_cast<int64_t>(mono - last) : wall;
    _scratch.clear();
    backplane::append_connection_record(_scratch, user, _cfg.server_id, connected_at, last_activity);
    std::string record(reinterpret_cast<const char*>(_scratch.data()), _scratch.size());
    std::string owners = _names->connection_owners_key(user);
    presence_write({"SET", _names->connection_key(user), record, "PX", _ttl_ms_str});
    presence_write({"ZADD", owners, std::to_string(wall), _owner});
    presence_write({"PEXPIRE", owners, _ttl_ms_str});
}

void worker::presence_register(std::string_view user) {
    if (!presence_on()) {
        return;
    }
    write_user_record(user, wall_ms());
    std::string set = _names->server_connections_key(_cfg.server_id);
    presence_write({"SADD", set, user});
    presence_write({"PEXPIRE", set, _ttl_ms_str});
}

void worker::presence_unregister(std::string_view user) {
    if (!presence_on()) {
        return;  // the record expires with the TTL; the owners entry goes stale
    }
    uint64_t id = ++_unreg_seq & ((uint64_t{1} << 56) - 1);
    std::string cutoff = std::to_string(wall_ms() - int64_t{_cfg.presence_ttl_s} * 1000);
    std::string ck = _names->connection_key(user), ok = _names->connection_owners_key(user);
    std::string_view argv[] = {"EVAL", backplane::unregister_script, "2", ck, ok, _owner, cutoff, _owner_prefix};
    if (_redis[redis_cmd].s->command(std::span<const std::string_view>(argv), make_token(rtok::unregister, id))) {
        bump(_stats.redis_presence_writes);
        _unregistering.emplace(id, std::string(user));
    }
}

void worker::presence_refresh_start() {
    // Snapshot the names; the pass then writes them a slice at a time
    // (presence_pump), so a worker holding 100k users never builds megabytes of
    // commands in one go. Entries joined during the pass are written at once by
    // presence_join/register anyway; names gone by the time their turn comes are
    // skipped.
    _refresh_rooms.clear();
    _refresh_users.clear();
    _rooms.for_each_room([&](std::string_view r) { _refresh_rooms.emplace_back(r); });
    _users.for_each_user([&](std::string_view u) { _refresh_users.emplace_back(u); });
    _refresh_room_i = _refresh_user_i = 0;
    _refreshing = true;
    _presence_due = false;
    _presence_next_ms = now_ms() + _cfg.presence_ttl_s * 1000 / 3;
}

void worker::presence_pump() {
    constexpr size_t budget = 256 * 1024;     // bytes of commands per slice
    constexpr size_t members_per_command = 512;
    backplane::redis_session& s = *_redis[redis_cmd].s;
    int64_t wall = wall_ms();
    std::string score = std::to_string(wall);
    std::string cutoff = std::to_string(wall - int64_t{_cfg.presence_ttl_s} * 1000);
    std::vector<std::string> members;
    std::vector<std::string_view> argv;
    std::unordered_set<std::string_view> seen;
    while (_refresh_room_i < _refresh_rooms.size() && s.output_size() < budget) {
        const std::string& room = _refresh_rooms[_refresh_room_i++];
        std::span<const backplane::conn_id> conns = _rooms.members(room);
        if (conns.empty()) {
            continue;
        }
        std::string key = _names->room_members_key(room);
        seen.clear();
        members.clear();
        for (backplane::conn_id id : conns) {
            std::string_view u = _users.user_of(id);
            if (!u.empty() && seen.insert(u).second) {
                members.push_back(backplane::presence_member(u, _owner));
            }
        }
        for (size_t i = 0; i < members.size(); i += members_per_command) {
            argv.assign({"ZADD", key});
            for (size_t j = i; j < std::min(members.size(), i + members_per_command); ++j) {
                argv.push_back(score);
                argv.push_back(members[j]);
            }
            presence_write(std::span<const std::string_view>(argv));
        }
        // Dead owners' entries (a gateway killed) are trimmed by whoever is alive.
        presence_write({"ZREMRANGEBYSCORE", key, "-inf", cutoff});
        presence_write({"PEXPIRE", key, _ttl_ms_str});
    }
    std::string set = _names->server_connections_key(_cfg.server_id);
    while (_refresh_user_i < _refresh_users.size() && s.output_size() < budget) {
        size_t end = std::min(_refresh_users.size(), _refresh_user_i + members_per_command);
        argv.assign({"SADD", set});
        for (size_t i = _refresh_user_i; i < end; ++i) {
            const std::string& u = _refresh_users[i];
            if (_users.online(u)) {
                write_user_record(u, wall);
                argv.push_back(u);
            }
        }
        _refresh_user_i = end;
        if (argv.size() > 2) {
            presence_write(std::span<const std::string_view>(argv));
        }
    }
    if (_refresh_room_i < _refresh_rooms.size() || _refresh_user_i < _refresh_users.size()) {
        return;  // more at the next flush, once this slice is written
    }
    presence_write({"PEXPIRE", set, _ttl_ms_str});
    presence_write({"SET", _names->server_alive_key(_cfg.server_id), score, "PX", _ttl_ms_str});
    _refreshing = false;
    _refresh_rooms.clear();
    _refresh_users.clear();
    bump(_stats.redis_presence_refreshes);
}

}  // namespace wsgate::core
