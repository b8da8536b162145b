// The Redis backplane on the worker's ring: per Redis node a subscriber and a
// command connection, driven like client sockets. One node with redis://; with
// redis+cluster:// one per master, found with CLUSTER SLOTS from the seed node and
// routed by hash slot (SSUBSCRIBE/SPUBLISH on the owner, -MOVED/-ASK followed,
// an sunsubscribe push re-resolves the slot). The Redis protocol logic is
// backplane/redis_session and backplane/cluster_map (sans-I/O); this file moves
// bytes, maps subscriptions to room/user interest, publishes client pushes,
// delivers channel messages and keeps presence (per owner = worker, refreshed
// every TTL/3). Design: docs/backplane.md.
#include <arpa/inet.h>
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

using detail::add;
using detail::bump;

uint64_t precise_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint32_t cluster_recheck_ms = 5000;  // CLUSTER SLOTS at least this often
constexpr uint8_t max_redirects = 3;           // per publication

}  // namespace

void worker::redis_setup() {
    _names = std::make_unique<backplane::redis_names>(std::string(), _cfg.redis_cluster);
    _mid_prefix = "{\"mid\":\"" + _cfg.server_id + ":";
    _owner = backplane::presence_owner(_cfg.server_id, _index);
    _owner_prefix = _cfg.server_id + ":";
    _ttl_ms_str = std::to_string(uint64_t{_cfg.presence_ttl_s} * 1000);
    if (_cfg.redis_cluster) {
        _cmap = std::make_unique<backplane::cluster_map>(_cfg.redis_host);
        _cmap->find_or_add(_cfg.redis_host, _cfg.redis_port);  // the seed is node 0
    }
    redis_add_node(_cfg.redis_host, _cfg.redis_port);
    // The seed's resolved address (it may have been given as a name).
    std::memcpy(&_rnodes[0]->addr, &_cfg.redis_addr, _cfg.redis_addr_len);
    _rnodes[0]->addr_len = _cfg.redis_addr_len;
    if (!cluster()) {
        _rnodes[0]->c[redis_sub].s->subscribe(_names->broadcast_channel());
    }
    redis_connect(0, redis_sub);
    redis_connect(0, redis_cmd);
}

void worker::redis_add_node(std::string_view host, uint16_t port) {
    auto n = std::make_unique<redis_node>();
    n->name = std::string(host) + ":" + std::to_string(port);
    std::string h(host);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&n->addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&n->addr);
    if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        n->addr_len = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        n->addr_len = sizeof(sockaddr_in6);
    } else if (!_rnodes.empty()) {
        log_line(log_level::warn, "redis_node_skipped").kv("worker", _index).kv("node", n->name)
            .kv("reason", "not an IP address");
    }
    for (unsigned which : {redis_sub, redis_cmd}) {
        backplane::redis_session_options o;
        o.role = which == redis_sub ? backplane::redis_role::subscriber : backplane::redis_role::command;
        o.user = _cfg.redis_user;
        o.password = _cfg.redis_password;
        o.db = which == redis_cmd ? _cfg.redis_db : 0;
        o.sharded = cluster();
        o.seed = _rng();
        n->c[which].s = std::make_unique<backplane::redis_session>(o);
        n->c[which].rbuf = std::make_unique_for_overwrite<uint8_t[]>(redis_rbuf(which));
    }
    _rnodes.push_back(std::move(n));
}

uint32_t worker::node_for(std::string_view name) const {
    if (!cluster()) {
        return 0;
    }
    if (!_cmap->loaded()) {
        return no_node;
    }
    uint32_t n = _cmap->node_of(backplane::key_hash_slot(name));
    return n < _rnodes.size() ? n : no_node;
}

backplane::redis_session* worker::cmd_for(std::string_view key) {
    uint32_t n = node_for(key);
    if (n == no_node) {
        return nullptr;
    }
    backplane::redis_session* s = rconn(n, redis_cmd).s.get();
    return s->connected() ? s : nullptr;
}

bool worker::redis_quiet() const {
    // At shutdown: this worker's presence removals (ZREM, the unregister script and
    // the SREM after it) are written and answered, or cannot be (Redis is down).
    if (!redis_on()) {
        return true;
    }
    if (!_unregistering.empty() && presence_on()) {
        return false;
    }
    for (const auto& n : _rnodes) {
        const redis_conn& r = n->c[redis_cmd];
        if (r.s->connected() && (r.s->in_flight() > 0 || r.s->output_size() > 0 || !r.out.empty())) {
            return false;
        }
    }
    return true;
}

bool worker::presence_on() const {
    for (const auto& n : _rnodes) {
        if (n->c[redis_cmd].s->connected()) {
            return true;
        }
    }
    return false;
}

void worker::redis_connect(uint32_t node, unsigned which) {
    redis_node& n = *_rnodes[node];
    redis_conn& r = n.c[which];
    if (n.addr_len == 0) {
        r.s->on_disconnected(now_ms());  // not dialable: retried only if the map changes
        return;
    }
    int fd = socket(n.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
    io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&n.addr), n.addr_len);
    io_uring_sqe_set_data64(sqe, pack(op::redis_connect, node * 2 + which, r.gen));
}

void worker::redis_drop(uint32_t node, unsigned which, const char* why) {
    redis_conn& r = rconn(node, which);
    if (r.fd < 0) {
        return;
    }
    bool was_connected = r.s->connected();
    if (was_connected || r.connecting) {
        bump(_stats.redis_disconnects);
    }
    if (was_connected) {
        log_line(log_level::warn, "redis_disconnected").kv("worker", _index).kv("node", _rnodes[node]->name)
            .kv("conn", which == redis_sub ? "subscriber" : "command").kv("error", why);
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
    redis_events(node, which);  // failed in-flight commands
    if (cluster()) {
        _cmap_wanted = true;  // a master that went away may have failed over
    }
}

void worker::redis_handle(op o, uint32_t idx, uint32_t gen, int res) {
    uint32_t node = idx / 2;
    unsigned which = idx % 2;
    if (node >= _rnodes.size()) {
        return;
    }
    redis_conn& r = rconn(node, which);
    if (!r.s || r.fd < 0 || (r.gen & 0xffffff) != gen) {
        return;  // for a socket already dropped
    }
    switch (o) {
    case op::redis_connect:
        if (res < 0) {
            redis_drop(node, which, std::strerror(-res));  // counted as a failed dial
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
            redis_drop(node, which, res == 0 ? "closed by the server" : std::strerror(-res));
            return;
        }
        r.s->feed(std::span<const uint8_t>(r.rbuf.get(), static_cast<size_t>(res)));
        redis_events(node, which);
        if (r.fd < 0) {
            return;
        }
        break;
    case op::redis_send:
        r.send_inflight = false;
        if (res <= 0) {
            redis_drop(node, which, res == 0 ? "send returned 0" : std::strerror(-res));
            return;
        }
        r.out.consume(static_cast<size_t>(res));
        break;
    default:
        return;
    }
    if (!r.recv_armed && r.s->connected()) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_recv(sqe, r.fd, r.rbuf.get(), redis_rbuf(which), 0);
        io_uring_sqe_set_data64(sqe, pack(op::redis_recv, idx, r.gen));
        r.recv_armed = true;
    }
}

void worker::redis_events(uint32_t node, unsigned which) {
    redis_conn& r = rconn(node, which);
    backplane::redis_event ev;
    while (r.s->poll(ev)) {
        switch (ev.kind) {
        case backplane::redis_event_kind::message:
            on_redis_message(ev.channel, ev.text);
            break;
        case backplane::redis_event_kind::reply:
            redis_reply(ev);
            break;
        case backplane::redis_event_kind::slot_moved:
            // The slot of this sharded channel migrated: the channel stays wanted
            // here but unsent; the next map says where it lives now.
            _cmap_wanted = true;
            break;
        case backplane::redis_event_kind::subscribe_error:
            bump(_stats.redis_errors);
            if (ev.redirect.valid && !ev.redirect.ask && cluster()) {
                cluster_follow(ev.redirect);
            }
            _cmap_wanted = cluster();
            break;
        case backplane::redis_event_kind::handshake_failed:
        case backplane::redis_event_kind::protocol_error:
            log_line(log_level::error, "redis_error").kv("worker", _index).kv("node", _rnodes[node]->name)
                .kv("error", ev.text);
            break;
        default:
            break;
        }
    }
    if (r.s->needs_disconnect() && r.fd >= 0) {
        redis_drop(node, which, "protocol or authentication error");
    }
}

void worker::redis_flush() {
    if (_refreshing) {
        presence_pump();
    }
    uint64_t commands = 0;
    for (uint32_t node = 0; node < _rnodes.size(); ++node) {
        for (unsigned which : {redis_sub, redis_cmd}) {
            redis_conn& r = rconn(node, which);
            commands += r.s->counters().commands_sent;
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
            io_uring_sqe_set_data64(sqe, pack(op::redis_send, node * 2 + which, r.gen));
            r.send_inflight = true;
        }
    }
    _stats.redis_commands.store(commands, std::memory_order_relaxed);
}

void worker::redis_tick() {
    uint32_t now = now_ms();
    for (uint32_t node = 0; node < _rnodes.size(); ++node) {
        for (unsigned which : {redis_sub, redis_cmd}) {
            redis_conn& r = rconn(node, which);
            if (r.fd < 0 && _rnodes[node]->addr_len && static_cast<int64_t>(now) >= r.s->next_connect_ms()) {
                redis_connect(node, which);
            }
        }
    }
    // Round-trip probe: one PING per node per second on the command connection.
    // It queues behind the commands already written, so it measures what a
    // presence query or a publish waits, not an idle server's best case.
    for (uint32_t node = 0; node < _rnodes.size(); ++node) {
        redis_node& n = *_rnodes[node];
        backplane::redis_session& s = *n.c[redis_cmd].s;
        if (!n.ping_inflight && s.connected() && static_cast<int32_t>(now - n.ping_next_ms) >= 0 &&
            s.command({"PING"}, make_token(rtok::ping, node))) {
            n.ping_inflight = true;
            n.ping_sent_ns = precise_ns();
        }
    }
    if (cluster()) {
        if (static_cast<int32_t>(now - _cmap_next_ms) >= 0) {
            _cmap_wanted = true;
        }
        cluster_refresh();
    }
    if (presence_on() && !_refreshing && !_draining &&
        (_presence_due || static_cast<int32_t>(now - _presence_next_ms) >= 0)) {
        presence_refresh_start();
    }
}

// --- cluster ----------------------------------------------------------------

void worker::cluster_refresh() {
    if (!_cmap_wanted || _cmap_inflight) {
        return;
    }
    // Any master answers CLUSTER SLOTS; the seed until the map names others.
    for (auto& n : _rnodes) {
        backplane::redis_session& s = *n->c[redis_cmd].s;
        if (s.connected() && s.command({"CLUSTER", "SLOTS"}, make_token(rtok::slots, 0))) {
            _cmap_inflight = true;
            _cmap_wanted = false;
            _cmap_next_ms = now_ms() + cluster_recheck_ms;
            return;
        }
    }
}

void worker::cluster_follow(const backplane::redis_redirect& r) {
    _cmap->moved(r.slot, r.host, r.port);
    cluster_apply();
}

void worker::cluster_apply() {
    // New masters get their connections; then every channel of local interest is
    // subscribed on the master owning its slot now, and dropped where it was.
    while (_rnodes.size() < _cmap->nodes().size()) {
        const backplane::cluster_node_addr& a = _cmap->nodes()[_rnodes.size()];
        redis_add_node(a.host, a.port);
        uint32_t node = static_cast<uint32_t>(_rnodes.size() - 1);
        redis_connect(node, redis_sub);
        redis_connect(node, redis_cmd);
    }
    if (_cmap->version() == _cmap_applied) {
        return;
    }
    _cmap_applied = _cmap->version();
    auto place = [&](const std::string& channel) {
        uint32_t owner = node_for(channel);
        for (uint32_t node = 0; node < _rnodes.size(); ++node) {
            backplane::redis_session& s = *rconn(node, redis_sub).s;
            if (node == owner) {
                s.subscribe(channel, backplane::key_hash_slot(channel));  // (re)sent unless already live
            } else if (s.wanted(channel)) {
                s.unsubscribe(channel);
            }
        }
    };
    place(_names->broadcast_channel());
    _rooms.for_each_room([&](std::string_view room) { place(_names->room_channel(room)); });
    _users.for_each_user([&](std::string_view user) { place(_names->user_channel(user)); });
    _presence_due = true;  // presence keys of moved slots are re-written on their new owner
}

// --- pub/sub ----------------------------------------------------------------

void worker::redis_interest(bool add, bool room, std::string_view id) {
    std::string channel = room ? _names->room_channel(id) : _names->user_channel(id);
    if (add) {
        uint32_t node = node_for(channel);
        if (node != no_node) {  // no map yet: cluster_apply() subscribes it
            rconn(node, redis_sub).s->subscribe(channel, backplane::key_hash_slot(channel));
        }
        return;
    }
    for (uint32_t node = 0; node < _rnodes.size(); ++node) {
        backplane::redis_session& s = *rconn(node, redis_sub).s;
        if (s.wanted(channel)) {
            s.unsubscribe(channel);
        }
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
    uint64_t retain = 0;
    if (cluster()) {
        retain = ++_retain_seq & ((uint64_t{1} << 56) - 1);
        uint32_t node = node_for(channel);
        node = node == no_node ? 0 : node;
        auto f = _flights.find(channel);
        if (f != _flights.end() && (!f->second.held.empty() || (f->second.inflight > 0 && f->second.node != node))) {
            // Earlier publications of this channel are still out on another node:
            // this one waits behind them (sent by flight_done, in order).
            f->second.held.push_back(retain);
            _retained.emplace(retain, retained_publish{channel, std::string(payload), 0});
            bump(_stats.redis_publishes);
            return true;
        }
    }
    if (!redis_send_publish(channel, payload, retain)) {
        bump(_stats.redis_publish_failures);
        return false;
    }
    if (retain) {
        _retained.emplace(retain, retained_publish{channel, std::string(payload), 0});
        uint32_t node = node_for(channel);
        flight_sent(channel, node == no_node ? 0 : node);
    }
    bump(_stats.redis_publishes);
    return true;
}

void worker::flight_sent(const std::string& channel, uint32_t node) {
    channel_flight& f = _flights[channel];
    f.node = node;
    ++f.inflight;
}

void worker::flight_done(const std::string& channel) {
    auto it = _flights.find(channel);
    if (it == _flights.end()) {
        return;
    }
    channel_flight& f = it->second;
    if (f.inflight > 0) {
        --f.inflight;
    }
    if (f.inflight == 0) {
        // Everything before the held ones is answered: send them, in order, where
        // the map now says (they share one node, so its connection keeps the order).
        while (!f.held.empty()) {
            uint64_t id = f.held.front();
            f.held.pop_front();
            auto r = _retained.find(id);
            if (r == _retained.end()) {
                continue;
            }
            uint32_t node = node_for(channel);
            node = node == no_node ? 0 : node;
            if (redis_send_publish(channel, r->second.payload, id)) {
                f.node = node;
                ++f.inflight;
            } else {
                _retained.erase(r);
                bump(_stats.redis_publish_failures);
            }
        }
    }
    if (f.inflight == 0 && f.held.empty()) {
        _flights.erase(it);
    }
}

bool worker::redis_send_publish(std::string_view channel, std::string_view payload, uint64_t retain_id) {
    uint32_t node = node_for(channel);
    if (node == no_node) {
        node = 0;  // cluster map not known yet: the seed queues it, -MOVED sends it on
    }
    backplane::redis_session& s = *rconn(node, redis_cmd).s;
    return s.command({cluster() ? "SPUBLISH" : "PUBLISH", channel, payload}, make_token(rtok::publish, retain_id));
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
    // Verbatim, one text frame (and one compressed), built once for every local recipient.
    push_frames pf;
    pf.verbatim = payload;
    if (ref.kind == backplane::channel_kind::broadcast) {
        _users.for_each_user([&](std::string_view user) { deliver_to(_users.connections(user), pf); });
    } else {
        deliver_to(targets, pf);
    }
    release_push_frames(pf);
}

// --- replies ----------------------------------------------------------------

void worker::redis_reply(const backplane::redis_event& ev) {
    auto kind = static_cast<rtok>(ev.token >> 56);
    uint64_t id = ev.token & ((uint64_t{1} << 56) - 1);
    bool error = ev.type == backplane::redis_type::error;
    if (error && ev.redirect.valid && cluster() && kind != rtok::publish) {
        // -MOVED patches the map; -ASK is one-shot (a slot being migrated) and only
        // asks for a new map. Either way a presence write is redone by the pass
        // the map change starts, and a query answers without this part.
        if (!ev.redirect.ask) {
            cluster_follow(ev.redirect);
        }
        _cmap_wanted = true;
    }
    switch (kind) {
    case rtok::none:
        return;
    case rtok::ping:
        if (id < _rnodes.size()) {
            redis_node& n = *_rnodes[id];
            n.ping_inflight = false;
            n.ping_next_ms = now_ms() + 1000;
            if (!error && !ev.connection_lost) {
                uint64_t us = (precise_ns() - n.ping_sent_ns) / 1000;
                size_t b = 0;
                while (b < std::size(redis_rtt_bounds_us) && us > redis_rtt_bounds_us[b]) {
                    ++b;
                }
                bump(_stats.redis_rtt_buckets[b]);
                add(_stats.redis_rtt_sum_us, us);
            }
        }
        return;
    case rtok::publish: {
        auto it = id ? _retained.find(id) : _retained.end();
        if (!error) {
            if (it != _retained.end()) {
                std::string channel = std::move(it->second.channel);
                _retained.erase(it);
                flight_done(channel);
            }
            return;
        }
        if (it != _retained.end() && ev.redirect.valid && it->second.attempts < max_redirects) {
            // -MOVED: the channel's slot lives elsewhere (map updated, publication
            // re-sent there). -ASK: one-shot, ASKING first on the target. Still in
            // flight for its channel: later ones stay held behind it.
            retained_publish& rp = it->second;
            ++rp.attempts;
            uint32_t node = ev.redirect.ask ? _cmap->find_or_add(ev.redirect.host, ev.redirect.port)
                                            : _cmap->moved(ev.redirect.slot, ev.redirect.host, ev.redirect.port);
            cluster_apply();
            _cmap_wanted = true;
            if (node < _rnodes.size()) {
                backplane::redis_session& s = *rconn(node, redis_cmd).s;
                bool ok = !ev.redirect.ask || s.command({"ASKING"}, make_token(rtok::none, 0));
                if (ok && s.command({"SPUBLISH", rp.channel, rp.payload}, make_token(rtok::publish, id))) {
                    bump(_stats.redis_redirects);
                    if (auto f = _flights.find(rp.channel); f != _flights.end()) {
                        f->second.node = node;
                    }
                    return;
                }
            }
        }
        if (it != _retained.end()) {
            std::string channel = std::move(it->second.channel);
            _retained.erase(it);
            flight_done(channel);
        }
        bump(_stats.redis_publish_failures);  // refused, or lost with the connection
        return;
    }
    case rtok::slots: {
        _cmap_inflight = false;
        std::string err;
        if (error || !_cmap->load_slots(ev.value, err)) {
            if (!ev.connection_lost) {
                bump(_stats.redis_errors);
                log_line(log_level::error, "redis_cluster_slots_failed").kv("worker", _index)
                    .kv("error", error ? std::string_view(ev.text) : std::string_view(err));
            }
            _cmap_wanted = true;
            return;
        }
        cluster_apply();
        return;
    }
    case rtok::write:
        if (error && !ev.connection_lost) {
            bump(_stats.redis_errors);
            if (_stats.redis_errors.load(std::memory_order_relaxed) <= 3) {
                log_line(log_level::error, "redis_presence_write_failed").kv("worker", _index).kv("error", ev.text)
                    .kv("note", "first 3 logged; see wsgate_redis_errors_total");
            }
        }
        return;
    case rtok::presence:
    case rtok::online: {
        uint64_t qid = kind == rtok::online ? id >> 16 : id;
        auto it = _queries.find(qid);
        if (it == _queries.end()) {
            return;  // answered already (cannot happen) or never stored
        }
        pending_query& q = *it->second;
        if (kind == rtok::presence && ev.value.type() == backplane::redis_type::array) {
            for (size_t i = 0; i < ev.value.size(); ++i) {
                q.found.emplace(backplane::presence_member_user(ev.value[i].str()));
            }
        } else if (kind == rtok::online && ev.type == backplane::redis_type::integer && ev.integer > 0) {
            size_t i = id & 0xffff;
            if (i < q.asked.size()) {
                q.found.insert(q.asked[i]);
            }
        }
        if (error && !ev.connection_lost) {
            bump(_stats.redis_errors);
        }
        if (--q.redis_wait == 0 && q.remaining == 0) {
            finish_query(qid, q);
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
        if (!sibling && !_users.online(user)) {
            presence_write({"SREM", _names->server_connections_key(_cfg.server_id), user});
        }
        return;
    }
    }
}

// --- queries ----------------------------------------------------------------

void worker::redis_query(pending_query& q, uint64_t qid) {
    // Fleet-wide: Redis answers for every gateway (this one included, but a
    // registration of another local worker may still be in flight: the local
    // scatter-gather covers it). A node that is down: this gateway's answer only.
    if (q.kind == protocol::op::presence) {
        std::string key = _names->room_members_key(q.room);
        if (backplane::redis_session* s = cmd_for(key)) {
            std::string cutoff(1, '(');  // exclusive: scores > now - TTL
            cutoff += std::to_string(wall_ms() - int64_t{_cfg.presence_ttl_s} * 1000);
            if (s->command({"ZRANGEBYSCORE", key, cutoff, "+inf"}, make_token(rtok::presence, qid))) {
                q.redis_wait = 1;
            }
        }
    } else {
        for (size_t i = 0; i < q.asked.size(); ++i) {
            std::string key = _names->connection_key(q.asked[i]);
            backplane::redis_session* s = cmd_for(key);
            if (s && s->command({"EXISTS", key}, make_token(rtok::online, (qid << 16) | i))) {
                ++q.redis_wait;
            }
        }
    }
    bump(q.redis_wait ? _stats.redis_queries : _stats.redis_queries_local);
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
    // Routed by key (argv[1]; EVAL's first key is argv[3]); a node that is down
    // is skipped: its (re)connection starts a refresh pass.
    std::string_view key = argv[0] == "EVAL" ? argv[3] : argv[1];
    backplane::redis_session* s = cmd_for(key);
    if (s && s->command(argv, make_token(rtok::write, 0))) {
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
    backplane::redis_session* s = cmd_for(ck);
    if (s && s->command(std::span<const std::string_view>(argv), make_token(rtok::unregister, id))) {
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
    constexpr size_t budget = 256 * 1024;     // bytes of commands per slice (per node)
    constexpr size_t members_per_command = 512;
    auto busy = [&] {
        for (auto& n : _rnodes) {
            if (n->c[redis_cmd].s->output_size() >= budget) {
                return true;
            }
        }
        return false;
    };
    int64_t wall = wall_ms();
    std::string score = std::to_string(wall);
    std::string cutoff = std::to_string(wall - int64_t{_cfg.presence_ttl_s} * 1000);
    std::vector<std::string> members;
    std::vector<std::string_view> argv;
    std::unordered_set<std::string_view> seen;
    while (_refresh_room_i < _refresh_rooms.size() && !busy()) {
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
    while (_refresh_user_i < _refresh_users.size() && !busy()) {
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
