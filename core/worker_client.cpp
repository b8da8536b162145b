// The client protocol on /ws: requests, replies, limits, fan-out to local
// connections and to the other workers, presence/online queries. The loop,
// sockets and output queues are in worker.cpp.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/session.h"
#include "core/worker.h"
#include "core/worker_internal.h"

namespace wsgate::core {

namespace {

using backplane::conn_id;
using detail::bump;
using detail::make_id;
using protocol::error_code;
using protocol::wire_format;
using protocol::ws_opcode;

}  // namespace


// ---------------------------------------------------------------------------
// Client protocol (/ws)

void worker::schedule_teardown(uint32_t slot, connection& c) {
    // Leaving rooms mutates the member arrays a fan-out may be iterating right
    // now, so a closing connection leaves its rooms at the next flush; until
    // then pushes skip it (it is no longer in the websocket phase, or closing).
    if (c.sess && !c.teardown_queued) {
        c.teardown_queued = true;
        _teardowns.emplace_back(slot, c.gen);
    }
}

void worker::run_teardowns() {
    for (size_t i = 0; i < _teardowns.size(); ++i) {  // teardown() does not add entries
        auto [slot, gen] = _teardowns[i];
        connection& c = _conns[slot];
        if (c.in_use && c.gen == gen) {
            teardown(slot, c);
        }
    }
    _teardowns.clear();
}

void worker::teardown(uint32_t slot, connection& c) {
    c.teardown_queued = false;
    if (!c.sess) {
        return;
    }
    conn_id id = make_id(slot, c.gen);
    if (redis_on()) {
        std::string_view user = _users.user_of(id);
        for (std::string_view room : _rooms.rooms_of(id)) {
            presence_leave(room, user);
        }
        _rooms.leave_all(id, [this](std::string_view room) { redis_interest(false, true, room); });
        _users.remove(id, [this](std::string_view user) {
            redis_interest(false, false, user);
            presence_unregister(user);
        });
    } else {
        _rooms.leave_all(id);
        _users.remove(id);
    }
    delete c.sess;
    c.sess = nullptr;
}

void worker::write_reply(connection& c, wire_format fmt) {
    take_buffer(c.out);
    protocol::ws_conn::write_frame(_frames, c.out, fmt == wire_format::binary ? ws_opcode::binary : ws_opcode::text,
                                   _scratch.span());
}

void worker::reply_ack(connection& c, wire_format fmt, std::string_view id) {
    if (id.empty()) {
        return;  // without an id, success is silent
    }
    _scratch.clear();
    if (fmt == wire_format::binary) {
        protocol::binary::encode_ack(_scratch, id);
    } else {
        protocol::encode_ack(_scratch, id);
    }
    write_reply(c, fmt);
}

void worker::reply_error(connection& c, wire_format fmt, std::string_view id, error_code code,
                         std::string_view message) {
    bump(_stats.requests_rejected);
    _scratch.clear();
    if (fmt == wire_format::binary) {
        protocol::binary::encode_error(_scratch, id, code, message);
    } else {
        protocol::encode_error(_scratch, id, code, message);
    }
    write_reply(c, fmt);
}

bool worker::rate_allows(uint32_t slot, connection& c, wire_format fmt, std::string_view id) {
    // Token bucket: rate_limit messages/s, rate_burst at once. A refused message
    // gets a `limit` error and adds one to a penalty that drains at 1/8 of the
    // rate; when the penalty passes the burst the client is closed 1008. So an
    // occasional overshoot only costs errors, while a client that keeps sending
    // at more than ~1.125× its rate (ignoring the errors) is closed: at 2× after
    // about burst / (0.875 × rate) seconds, flat out almost at once.
    client_session& s = *c.sess;
    uint64_t per_ms = _cfg.rate_limit;  // 1/1000 messages per ms == messages per s
    uint64_t cap = uint64_t{_cfg.rate_burst} * 1000;
    uint32_t elapsed = std::min<uint32_t>(_turn_ms - s.refill_ms, 3'600'000);
    s.refill_ms = _turn_ms;
    uint64_t gained = elapsed * per_ms;
    s.tokens = std::min(cap, s.tokens + gained);
    uint64_t forgiven = gained / 8;
    s.penalty = s.penalty > forgiven ? s.penalty - forgiven : 0;
    if (s.tokens >= 1000) {
        s.tokens -= 1000;
        return true;
    }
    bump(_stats.rate_limited);
    s.penalty += 1000;
    if (s.penalty > cap) {
        bump(_stats.rate_limit_closes);
        close_ws(slot, c, protocol::close_code::policy_violation, "rate limit exceeded");
        return false;
    }
    reply_error(c, fmt, id, error_code::limit, "rate limit exceeded");
    return false;
}

void worker::on_client_message(uint32_t slot, connection& c, ws_opcode opcode, std::span<const uint8_t> payload) {
    bump(_stats.messages_in);
    c.spoke = true;
    if (!c.sess || c.close_after_flush) {
        return;
    }
    wire_format fmt = opcode == ws_opcode::binary ? wire_format::binary : wire_format::json;
    protocol::decode_result r = fmt == wire_format::binary ? _binary.decode(payload) : _json.decode(payload);
    std::string_view id = r.req.has_id ? r.req.id : std::string_view();
    if (_cfg.rate_limit != 0 && !rate_allows(slot, c, fmt, id)) {
        return;
    }
    if (!r.ok) {
        reply_error(c, fmt, id, r.error, r.message);
        return;
    }
    handle_request(slot, c, fmt, r.req);
}

void worker::handle_request(uint32_t slot, connection& c, wire_format fmt, const protocol::request& req) {
    using protocol::op;
    client_session& s = *c.sess;
    conn_id self = make_id(slot, c.gen);
    std::string_view id = req.has_id ? req.id : std::string_view();
    switch (req.kind) {
    case op::join:
        if (!s.who.may_join(req.room)) {
            reply_error(c, fmt, id, error_code::forbidden, "room not allowed");
            return;
        }
        if (!_rooms.is_member(self, req.room) && _rooms.room_count(self) >= _cfg.max_rooms_per_conn) {
            bump(_stats.room_limit_errors);
            reply_error(c, fmt, id, error_code::limit, "too many rooms");
            return;
        }
        switch (_rooms.join(self, req.room)) {
        case backplane::room_outcome::joined_first:
            if (redis_on()) {
                redis_interest(true, true, req.room);
            }
            [[fallthrough]];
        case backplane::room_outcome::joined:
            if (redis_on()) {
                presence_join(req.room, s.who.user);
            }
            break;
        default:
            break;
        }
        reply_ack(c, fmt, id);
        return;
    case op::leave:
        if (!_rooms.is_member(self, req.room)) {
            reply_error(c, fmt, id, error_code::not_member, "not a member of the room");
            return;
        }
        if (redis_on()) {
            presence_leave(req.room, s.who.user);
        }
        if (_rooms.leave(self, req.room) == backplane::room_outcome::left_last && redis_on()) {
            redis_interest(false, true, req.room);
        }
        reply_ack(c, fmt, id);
        return;
    case op::publish:
        if (!s.who.pub) {
            reply_error(c, fmt, id, error_code::forbidden, "publish not allowed");
            return;
        }
        if (!_rooms.is_member(self, req.room)) {
            reply_error(c, fmt, id, error_code::not_member, "not a member of the room");
            return;
        }
        if (!deliver(protocol::push_kind::message, req.room, s.who.user, req.data, fmt == wire_format::json)) {
            reply_error(c, fmt, id, error_code::unavailable, "backplane unavailable: delivered on this gateway only");
            return;
        }
        reply_ack(c, fmt, id);
        return;
    case op::send:
        if (!deliver(protocol::push_kind::direct, req.user, s.who.user, req.data, fmt == wire_format::json)) {
            reply_error(c, fmt, id, error_code::unavailable, "backplane unavailable: delivered on this gateway only");
            return;
        }
        reply_ack(c, fmt, id);
        return;
    case op::broadcast:
        if (!s.who.admin) {
            reply_error(c, fmt, id, error_code::forbidden, "broadcast needs admin");
            return;
        }
        if (!deliver(protocol::push_kind::broadcast, {}, s.who.user, req.data, fmt == wire_format::json)) {
            reply_error(c, fmt, id, error_code::unavailable, "backplane unavailable: delivered on this gateway only");
            return;
        }
        reply_ack(c, fmt, id);
        return;
    case op::presence:
        if (!s.who.may_join(req.room)) {
            reply_error(c, fmt, id, error_code::forbidden, "room not allowed");
            return;
        }
        start_query(slot, c, fmt, req);
        return;
    case op::online:
        start_query(slot, c, fmt, req);
        return;
    case op::ping:
        _scratch.clear();
        if (fmt == wire_format::binary) {
            protocol::binary::encode_pong(_scratch, id);
        } else {
            protocol::encode_pong(_scratch, id);
        }
        write_reply(c, fmt);
        return;
    }
    reply_error(c, fmt, id, error_code::internal, "unhandled op");
}

// --- fan-out ---------------------------------------------------------------

void worker::encode_push_payload(const push_frames& pf, wire_format fmt) {
    _scratch.clear();
    if (pf.fields) {
        protocol::encode_push(_scratch, fmt, *pf.fields);
    } else {
        _scratch.append(pf.verbatim);  // a backend's message from Redis: verbatim, JSON only
    }
}

out_frame* worker::push_frame(push_frames& pf, wire_format fmt, bool compressed) {
    size_t b = fmt == wire_format::binary ? 1 : 0;
    compressed = compressed && !pf.plain_only[b];
    out_frame*& f = pf.f[b][compressed ? 1 : 0];
    if (f) {
        return f;
    }
    encode_push_payload(pf, fmt);
    if (compressed) {
        // Compressed once per publication and worker, whatever the number of
        // recipients; below the minimum size, or when it would not shrink, the
        // recipients that negotiated compression share the plain frame.
        _zscratch.clear();
        if (_scratch.size() >= _cfg.compression_min_size && _deflater && _deflater->message(_scratch.span(), _zscratch)) {
            bump(_stats.compressed_frames);
            f = make_frame(fmt, true);
            return f;
        }
        pf.plain_only[b] = true;
        return push_frame(pf, fmt, false);
    }
    f = make_frame(fmt);
    return f;
}

void worker::release_push_frames(push_frames& pf) {
    for (auto& by_format : pf.f) {
        for (out_frame*& f : by_format) {
            if (f) {
                release_frame(f);
                f = nullptr;
            }
        }
    }
}

out_frame* worker::make_frame(wire_format fmt, bool compressed) {
    protocol::byte_buffer b;
    take_buffer(b);
    ws_opcode opcode = fmt == wire_format::binary ? ws_opcode::binary : ws_opcode::text;
    const protocol::byte_buffer& payload = compressed ? _zscratch : _scratch;
    protocol::ws_conn::write_frame(_frames, b, opcode, payload.span(), compressed);
    out_frame* f = _fpool.get();
    f->len = static_cast<uint32_t>(b.size());
    f->payload = static_cast<uint32_t>(b.size() - payload.size());
    f->opcode = static_cast<uint8_t>(opcode);
    if (compressed) {
        // Never batched: a batch frame is built per recipient at flush time, and
        // compressing it there would cost a compression per recipient.
        f->batch_off = f->batch_end = f->len;
    } else if (fmt == wire_format::binary) {
        // The batch record behind the wire frame (see frame_batches): JSON reuses
        // the payload and adds a ','; binary needs the length first, so the payload
        // is copied once more (once per worker and publication, not per recipient).
        auto plen = static_cast<uint32_t>(_scratch.size());
        uint8_t* p = b.prepare(4 + plen);
        for (int k = 0; k < 4; ++k) {
            p[k] = static_cast<uint8_t>(plen >> (8 * k));
        }
        std::memcpy(p + 4, _scratch.data(), plen);
        b.commit(4 + plen);
        f->batch_off = f->len;
    } else {
        b.append(",", 1);
        f->batch_off = f->payload;
    }
    if (!compressed) {
        f->batch_end = static_cast<uint32_t>(b.size());
    }
    f->refs = 1;  // the caller's; released after the fan-out
    protocol::byte_buffer::block blk = b.detach();
    f->data = blk.data;
    f->cap = blk.capacity;
    return f;
}

void worker::deliver_to(std::span<const conn_id> targets, push_frames& pf) {
    for (conn_id id : targets) {
        auto slot = static_cast<uint32_t>(id);
        connection& c = _conns[slot];
        if (!c.in_use || c.gen != static_cast<uint32_t>(id >> 32) || !c.sess || c.close_after_flush ||
            c.phase != conn_phase::websocket) {
            continue;
        }
        wire_format fmt = pf.fields ? c.sess->format : wire_format::json;
        size_t b = fmt == wire_format::binary ? 1 : 0;
        out_frame* f = pf.f[b][c.deflate_out && !pf.plain_only[b] ? 1 : 0];
        if (!f) {
            f = push_frame(pf, fmt, c.deflate_out);  // the first recipient of this variant builds it
        }
        enqueue_push(slot, c, f, c.sess->batch && f->batch_end != f->len);
    }
}

bool worker::deliver(protocol::push_kind kind, std::string_view key, std::string_view from, std::string_view data,
                     bool data_is_json) {
    bump(_stats.publishes);
    std::string mid;
    if (redis_on()) {
        // The same id on every copy: this gateway's local pushes, the other
        // workers' and what Redis carries to other gateways (docs/backplane.md).
        mid = _cfg.server_id;
        mid += ':';
        mid += std::to_string(_index);
        mid += ':';
        mid += std::to_string(++_mid_seq);
    }
    if (_hub.workers() > 1) {
        auto* m = new xmsg;
        m->kind = kind == protocol::push_kind::message ? xkind::publish
                  : kind == protocol::push_kind::direct ? xkind::direct
                                                        : xkind::broadcast;
        m->data_is_json = data_is_json;
        m->key = key;
        m->from = from;
        m->data = data;
        m->mid = mid;
        forward(m);
    }
    protocol::push_fields p;
    p.mid = mid;
    p.kind = kind;
    p.room = kind == protocol::push_kind::message ? key : std::string_view();
    p.from = from;
    p.data = data;
    p.data_is_json = data_is_json;
    push_frames pf;
    pf.fields = &p;
    switch (kind) {
    case protocol::push_kind::message:
        deliver_to(_rooms.members(key), pf);
        break;
    case protocol::push_kind::direct:
        deliver_to(_users.connections(key), pf);
        break;
    case protocol::push_kind::broadcast:
        _users.for_each_user([&](std::string_view user) { deliver_to(_users.connections(user), pf); });
        break;
    }
    release_push_frames(pf);
    return redis_on() ? redis_publish(kind, key, p) : true;
}

void worker::enqueue_push(uint32_t slot, connection& c, out_frame* f, bool batchable) {
    uint32_t off = batchable ? f->batch_off : 0;
    uint32_t end = batchable ? f->batch_end : f->len;
    uint32_t len = end - off;
    if (c.out_bytes + c.out.size() + len > _cfg.max_outbound_bytes) {
        if (_cfg.slow_consumer == slow_consumer_policy::close) {
            slow_consumer_close(slot, c);
            return;
        }
        // Drop the oldest queued pushes (never replies, never bytes in flight)
        // until this one fits; if it still does not, drop it instead.
        for (uint32_t i = c.pinned_segs; i < c.q.size() && c.out_bytes + c.out.size() + len > _cfg.max_outbound_bytes;) {
            out_segment& s = c.q[i];
            if (s.kind == seg_private) {
                ++i;
                continue;
            }
            c.out_bytes -= s.end - s.off;
            release_frame(s.f);
            c.q.erase(i);
            bump(_stats.push_drops);
        }
        if (c.out_bytes + c.out.size() + len > _cfg.max_outbound_bytes) {
            bump(_stats.push_drops);
            return;
        }
    }
    seal(c);  // the connection's own bytes staged so far go before the push
    if (c.q.capacity() == 0 && !_ring_cache.empty()) {
        c.q.adopt_small(_ring_cache.back());
        _ring_cache.pop_back();
    }
    ++f->refs;
    c.q.push_back(out_segment{f, off, end, batchable ? seg_batchable : seg_push});
    c.out_bytes += len;
    bump(_stats.pushes);
    mark_dirty(slot, c);
}

void worker::slow_consumer_close(uint32_t slot, connection& c) {
    // The client does not read fast enough: drop what is queued (except bytes
    // already in flight), say why (1013: try again later) and close. Its queue
    // memory is freed now; the close frame waits behind the bytes in flight
    // and the linger deadline bounds how long the socket stays.
    bump(_stats.slow_consumer_closes);
    release_segments(c, c.pinned_segs);
    c.out.clear();
    close_ws(slot, c, protocol::close_code::try_again_later, "slow consumer");
}

// --- cross-worker ------------------------------------------------------------

void worker::forward(xmsg* m) {
    unsigned n = _hub.workers();
    m->origin = static_cast<uint16_t>(_index);
    m->refs.store(n - 1, std::memory_order_relaxed);
    for (unsigned t = 0; t < n; ++t) {
        if (t != _index) {
            send_to(t, m);
        }
    }
}

void worker::send_to(unsigned target, xmsg* m) {
    bump(_stats.xmsgs_sent);
    auto& overflow = _overflow[target];
    if (!overflow.empty() || !_hub.ring(_index, target).push(m)) {
        overflow.push_back(m);  // keeps the order; retried at the next flush
        return;
    }
    _wake[target] = 1;
}

void worker::drain_inbox() {
    _hub.clear_wake(_index);  // before draining: a push after this wakes us again
    unsigned n = _hub.workers();
    for (unsigned from = 0; from < n; ++from) {
        if (from == _index) {
            continue;
        }
        spsc_ring& r = _hub.ring(from, _index);
        while (xmsg* m = r.pop()) {
            bump(_stats.xmsgs_received);
            process_xmsg(m);
            xmsg_release(m);
        }
    }
}

void worker::process_xmsg(xmsg* m) {
    protocol::push_fields p;
    p.from = m->from;
    p.data = m->data;
    p.data_is_json = m->data_is_json;
    p.mid = m->mid;
    push_frames pf;
    pf.fields = &p;
    switch (m->kind) {
    case xkind::publish:
        p.kind = protocol::push_kind::message;
        p.room = m->key;
        deliver_to(_rooms.members(m->key), pf);
        break;
    case xkind::direct:
        p.kind = protocol::push_kind::direct;
        deliver_to(_users.connections(m->key), pf);
        break;
    case xkind::broadcast:
        p.kind = protocol::push_kind::broadcast;
        _users.for_each_user([&](std::string_view user) { deliver_to(_users.connections(user), pf); });
        break;
    case xkind::presence_query:
    case xkind::online_query: {
        auto* r = new xmsg;
        r->kind = xkind::query_reply;
        r->query = m->query;
        if (m->kind == xkind::presence_query) {
            for (conn_id id : _rooms.members(m->key)) {
                r->list.emplace_back(_users.user_of(id));
            }
        } else {
            for (const std::string& u : m->list) {
                if (_users.online(u)) {
                    r->list.push_back(u);
                }
            }
        }
        r->origin = static_cast<uint16_t>(_index);
        r->refs.store(1, std::memory_order_relaxed);
        send_to(m->origin, r);
        break;
    }
    case xkind::query_reply: {
        auto it = _queries.find(m->query);
        if (it == _queries.end()) {
            break;
        }
        pending_query& q = *it->second;
        for (std::string& u : m->list) {
            q.found.insert(std::move(u));
        }
        if (--q.remaining == 0 && q.redis_wait == 0) {
            finish_query(m->query, q);
        }
        break;
    }
    }
    release_push_frames(pf);
}

void worker::start_query(uint32_t slot, connection& c, wire_format fmt, const protocol::request& req) {
    auto q = std::make_unique<pending_query>();
    q->slot = slot;
    q->gen = c.gen;
    q->fmt = fmt;
    q->kind = req.kind;
    q->id = req.has_id ? std::string(req.id) : std::string();
    q->remaining = _hub.workers() - 1;
    auto* m = q->remaining ? new xmsg : nullptr;
    if (req.kind == protocol::op::presence) {
        q->room = req.room;
        for (conn_id id : _rooms.members(req.room)) {
            q->found.emplace(_users.user_of(id));
        }
        if (m) {
            m->kind = xkind::presence_query;
            m->key = req.room;
        }
    } else {
        std::unordered_set<std::string_view> seen;
        for (std::string_view u : *req.users) {
            if (seen.insert(u).second) {
                q->asked.emplace_back(u);
                if (_users.online(u)) {
                    q->found.emplace(u);
                }
            }
        }
        if (m) {
            m->kind = xkind::online_query;
            m->list = q->asked;
        }
    }
    uint64_t qid = _next_query++;
    if (redis_on()) {
        redis_query(*q, qid);
    }
    if (!m && q->redis_wait == 0) {
        finish_query(qid, *q);
        return;
    }
    if (m) {
        m->query = qid;
    }
    _queries.emplace(qid, std::move(q));
    if (m) {
        forward(m);
    }
}

void worker::finish_query(uint64_t qid, pending_query& q) {
    connection& c = _conns[q.slot];
    if (c.in_use && c.gen == q.gen && c.sess && !c.close_after_flush && c.phase == conn_phase::websocket) {
        std::vector<std::string_view> users;
        if (q.kind == protocol::op::presence) {
            users.assign(q.found.begin(), q.found.end());
            std::sort(users.begin(), users.end());
        } else {
            for (const std::string& u : q.asked) {
                if (q.found.count(u)) {
                    users.emplace_back(u);
                }
            }
        }
        _scratch.clear();
        if (q.fmt == wire_format::binary) {
            if (q.kind == protocol::op::presence) {
                protocol::binary::encode_presence_reply(_scratch, q.id, q.room, users);
            } else {
                protocol::binary::encode_online_reply(_scratch, q.id, users);
            }
        } else if (q.kind == protocol::op::presence) {
            protocol::encode_presence_reply(_scratch, q.id, q.room, users);
        } else {
            protocol::encode_online_reply(_scratch, q.id, users);
        }
        write_reply(c, q.fmt);
        mark_dirty(q.slot, c);
    }
    _queries.erase(qid);  // q is destroyed here (or was never stored)
}

}  // namespace wsgate::core
