// redis_session: see redis_session.h for the contract.
//
// Reply bookkeeping. Both roles keep one FIFO (_inflight) of what was written, in
// write order, because Redis answers in order: the handshake (AUTH, SELECT), then
// user commands (command role) or subscription batches and PINGs (subscriber).
// A command-role reply pops one entry. On the subscriber a batch of k channels is
// answered by k confirmation pushes, or by one error reply for the whole batch;
// message pushes are interleaved anywhere and touch no FIFO entry. An unsubscribe
// confirmation for a channel with no unsubscribe pending is unsolicited (Redis
// Cluster: the slot moved away).
#include "backplane/redis_session.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace wsgate::backplane {

namespace {

constexpr std::string_view lost_text = "connection lost";

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        if (x >= 'A' && x <= 'Z') {
            x = static_cast<char>(x - 'A' + 'a');
        }
        if (x != b[i]) {  // b is lower case
            return false;
        }
    }
    return true;
}

std::string_view str_of(const redisReply* r) {
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
        return {r->str, r->len};
    }
    return {};
}

redis_type type_of(const redisReply* r) {
    switch (r->type) {
    case REDIS_REPLY_STRING: return redis_type::string;
    case REDIS_REPLY_ARRAY: return redis_type::array;
    case REDIS_REPLY_INTEGER: return redis_type::integer;
    case REDIS_REPLY_STATUS: return redis_type::status;
    case REDIS_REPLY_ERROR: return redis_type::error;
    default: return redis_type::nil;
    }
}

// Parses a decimal in [0, max]; false on anything else (empty, sign, overflow).
bool parse_uint(std::string_view s, uint32_t max, uint32_t& out) {
    if (s.empty() || s.size() > 5) {
        return false;
    }
    uint32_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v > max) {
        return false;
    }
    out = v;
    return true;
}

}  // namespace

// ---- redis_value ----

redis_type redis_value::type() const { return _r ? type_of(_r) : redis_type::nil; }
std::string_view redis_value::str() const { return _r ? str_of(_r) : std::string_view{}; }
int64_t redis_value::integer() const { return _r && _r->type == REDIS_REPLY_INTEGER ? _r->integer : 0; }
size_t redis_value::size() const { return _r && _r->type == REDIS_REPLY_ARRAY ? _r->elements : 0; }
redis_value redis_value::operator[](size_t i) const {
    if (i >= size()) {
        std::abort();  // programmer error
    }
    return redis_value(_r->element[i]);
}

bool parse_redirect(std::string_view e, redis_redirect& out) {
    out = {};
    bool ask;
    if (e.starts_with("MOVED ")) {
        ask = false;
        e.remove_prefix(6);
    } else if (e.starts_with("ASK ")) {
        ask = true;
        e.remove_prefix(4);
    } else {
        return false;
    }
    size_t sp = e.find(' ');
    size_t colon = e.rfind(':');  // last: the host may be an IPv6 address
    if (sp == std::string_view::npos || colon == std::string_view::npos || colon < sp) {
        return false;
    }
    uint32_t slot, port;
    if (!parse_uint(e.substr(0, sp), 16383, slot) || !parse_uint(e.substr(colon + 1), 65535, port) ||
        port == 0) {
        return false;
    }
    out.valid = true;
    out.ask = ask;
    out.slot = static_cast<uint16_t>(slot);
    out.port = static_cast<uint16_t>(port);
    out.host = e.substr(sp + 1, colon - sp - 1);
    return true;
}

// ---- lifecycle ----

redis_session::redis_session(redis_session_options opts) : _opts(std::move(opts)), _rng(_opts.seed) {
    if (_opts.max_channels_per_command == 0) {
        _opts.max_channels_per_command = 1;
    }
}

redis_session::~redis_session() {
    release_reply();
    if (_reader) {
        redisReaderFree(_reader);
    }
}

void redis_session::on_connected(int64_t now_ms) {
    (void)now_ms;
    if (_connected) {
        std::abort();  // programmer error: on_disconnected() first
    }
    _reader = redisReaderCreate();
    if (!_reader) {
        std::abort();
    }
    _connected = true;
    _fatal = false;
    _counters.reconnects += _counters.connects > 0;
    ++_counters.connects;
    write_handshake();
    if (_opts.role == redis_role::command) {
        _out.append(_queued.span());
        _queued.release();
        _counters.commands_sent += _queued_cmds.size();
        for (pending& p : _queued_cmds) {
            _inflight.push_back(std::move(p));
        }
        _queued_cmds.clear();
    } else {
        // Re-subscribe everything desired (on_disconnected cleared `sent`).
        for (auto& [name, c] : _channels) {
            if (c.wanted) {
                mark_dirty(c);
            }
        }
        flush();
    }
}

void redis_session::on_disconnected(int64_t now_ms) {
    release_reply();
    if (_reader) {
        redisReaderFree(_reader);
        _reader = nullptr;
    }
    _connected = false;
    _fatal = false;
    _out.release();
    for (pending& p : _inflight) {
        if (p.kind == op::user) {
            _counters.publish_failures += p.publish;
            _lost.push_back(std::move(p));
        }
    }
    _inflight.clear();
    // The server forgot our subscriptions; keep what is desired for the reconnect.
    _dirty.clear();
    for (auto it = _channels.begin(); it != _channels.end();) {
        channel_state& c = it->second;
        c.sent = c.confirmed = c.dirty = false;
        c.inflight = c.unsub_pending = 0;
        it = c.wanted ? std::next(it) : _channels.erase(it);
    }
    _confirmed_count = 0;
    // Full jitter: uniform in [0, min(cap, base * 2^failures)].
    uint64_t window = _opts.backoff_base_ms;
    for (uint32_t i = 0; i < _failures && window < _opts.backoff_cap_ms; ++i) {
        window *= 2;
    }
    window = std::min<uint64_t>(window, _opts.backoff_cap_ms);
    _next_connect_ms = now_ms + static_cast<int64_t>(next_random() % (window + 1));
    if (_failures < 64) {
        ++_failures;
    }
}

uint64_t redis_session::next_random() {
    // splitmix64: tiny, seedable, identical on every platform.
    uint64_t z = (_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void redis_session::write_handshake() {
    if (!_opts.password.empty()) {
        if (_opts.user.empty()) {
            std::string_view argv[] = {"AUTH", _opts.password};
            append_command(_out, argv);
        } else {
            std::string_view argv[] = {"AUTH", _opts.user, _opts.password};
            append_command(_out, argv);
        }
        _inflight.push_back(pending(op::auth));
        ++_counters.commands_sent;
    }
    if (_opts.role == redis_role::command && _opts.db != 0) {
        std::string db = std::to_string(_opts.db);
        std::string_view argv[] = {"SELECT", db};
        append_command(_out, argv);
        _inflight.push_back(pending(op::select));
        ++_counters.commands_sent;
    }
}

int redis_session::format_command(std::span<const std::string_view> argv, char** cmd) {
    _argv.clear();
    _argvlen.clear();
    for (std::string_view a : argv) {
        _argv.push_back(a.data());
        _argvlen.push_back(a.size());
    }
    int len = redisFormatCommandArgv(cmd, static_cast<int>(_argv.size()), _argv.data(), _argvlen.data());
    if (len < 0) {
        std::abort();  // out of memory
    }
    return len;
}

void redis_session::append_command(protocol::byte_buffer& to, std::span<const std::string_view> argv) {
    char* cmd = nullptr;
    int len = format_command(argv, &cmd);
    to.append(cmd, static_cast<size_t>(len));
    redisFreeCommand(cmd);
}

// ---- bytes ----

void redis_session::feed(std::span<const uint8_t> in) {
    release_reply();
    if (!_connected || _fatal || in.empty()) {
        return;
    }
    _counters.bytes_in += in.size();
    // Only fails when the reader is already in error; the next poll reports it.
    (void)redisReaderFeed(_reader, reinterpret_cast<const char*>(in.data()), in.size());
}

void redis_session::release_reply() {
    if (_reply) {
        freeReplyObject(_reply);
        _reply = nullptr;
    }
}

bool redis_session::poll(redis_event& ev) {
    release_reply();
    ev = {};
    if (!_lost.empty()) {
        pending& p = _lost.front();
        ev.kind = redis_event_kind::reply;
        ev.token = p.token;
        ev.type = redis_type::error;
        ev.text = lost_text;
        ev.connection_lost = true;
        _lost.pop_front();
        return true;
    }
    while (_connected && !_fatal) {
        void* r = nullptr;
        if (redisReaderGetReply(_reader, &r) != REDIS_OK) {
            return fail(ev, redis_event_kind::protocol_error, _reader->errstr);
        }
        if (!r) {
            return false;
        }
        _reply = static_cast<redisReply*>(r);
        if (on_reply(_reply, ev)) {
            return true;
        }
        release_reply();
    }
    return false;
}

bool redis_session::fail(redis_event& ev, redis_event_kind kind, std::string_view why) {
    _error.assign(why);
    _fatal = true;
    ev = {};
    ev.kind = kind;
    ev.text = _error;
    return true;
}

bool redis_session::on_reply(const redisReply* r, redis_event& ev) {
    if (r->type != REDIS_REPLY_ERROR) {
        _failures = 0;  // the link works: the next outage starts from the base window
    }
    if (!_inflight.empty() && (_inflight.front().kind == op::auth || _inflight.front().kind == op::select)) {
        op kind = _inflight.front().kind;
        _inflight.pop_front();
        if (r->type == REDIS_REPLY_ERROR) {
            return fail(ev, redis_event_kind::handshake_failed,
                        std::string(kind == op::auth ? "AUTH: " : "SELECT: ") + std::string(str_of(r)));
        }
        if (r->type != REDIS_REPLY_STATUS) {
            return fail(ev, redis_event_kind::protocol_error, "unexpected handshake reply");
        }
        return false;
    }
    return _opts.role == redis_role::command ? on_command_reply(r, ev) : on_subscriber_reply(r, ev);
}

bool redis_session::on_command_reply(const redisReply* r, redis_event& ev) {
    if (_inflight.empty()) {
        return fail(ev, redis_event_kind::protocol_error, "reply without a command");
    }
    pending& p = _inflight.front();
    ev.kind = redis_event_kind::reply;
    ev.token = p.token;
    ev.type = type_of(r);
    ev.integer = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    ev.text = str_of(r);
    ev.value = redis_value(r);
    if (r->type == REDIS_REPLY_ERROR) {
        parse_redirect(ev.text, ev.redirect);
        _counters.publish_failures += p.publish;
    }
    _inflight.pop_front();
    return true;
}

// ---- subscriber ----

bool redis_session::on_subscriber_reply(const redisReply* r, redis_event& ev) {
    if (r->type == REDIS_REPLY_ERROR) {
        if (_inflight.empty()) {
            return fail(ev, redis_event_kind::protocol_error, "error without a command");
        }
        pending p = std::move(_inflight.front());
        _inflight.pop_front();
        for (channel_state* c : p.channels) {
            --c->inflight;
            if (p.kind == op::subscribe) {
                c->sent = false;  // desired, not sent: the owner decides (see header)
            } else {
                --c->unsub_pending;
                c->sent = true;  // still subscribed there; retried at the next flush
                if (!c->wanted) {
                    mark_dirty(*c);
                }
            }
            maybe_forget(*c);
        }
        if (p.kind != op::subscribe) {
            return false;
        }
        ev.kind = redis_event_kind::subscribe_error;
        ev.type = redis_type::error;
        ev.text = str_of(r);
        ev.slot = p.slot;
        ev.channels = static_cast<uint32_t>(p.channels.size());
        parse_redirect(ev.text, ev.redirect);
        return true;
    }
    if (r->type == REDIS_REPLY_STATUS && !_inflight.empty() && _inflight.front().kind == op::ping) {
        _inflight.pop_front();  // +PONG: PING before any subscription
        ev.kind = redis_event_kind::pong;
        return true;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING) {
        return fail(ev, redis_event_kind::protocol_error, "unexpected reply on the subscriber connection");
    }
    std::string_view kind = str_of(r->element[0]);
    const redisReply* ch = r->element[1];
    if ((kind == "message" || kind == "smessage") && r->elements == 3 && ch->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        ev.kind = redis_event_kind::message;
        ev.channel = str_of(ch);
        ev.text = str_of(r->element[2]);
        ev.sharded = kind[0] == 's';
        return true;
    }
    if (kind == "pong") {
        if (!_inflight.empty() && _inflight.front().kind == op::ping) {
            _inflight.pop_front();
        }
        ev.kind = redis_event_kind::pong;
        return true;
    }
    bool sub = kind == "subscribe" || kind == "ssubscribe";
    bool unsub = kind == "unsubscribe" || kind == "sunsubscribe";
    if (!sub && !unsub) {
        return false;  // pmessage etc.: not ours
    }
    if (ch->type != REDIS_REPLY_STRING) {
        return false;  // (S)UNSUBSCRIBE with no channel subscribed: nothing to track
    }
    auto it = _channels.find(str_of(ch));
    channel_state* c = it == _channels.end() ? nullptr : &it->second;
    if (sub || (c && c->unsub_pending > 0)) {
        // A confirmation: count it against the batch at the head of the FIFO.
        if (!_inflight.empty() && _inflight.front().kind == (sub ? op::subscribe : op::unsubscribe) &&
            --_inflight.front().remaining == 0) {
            _inflight.pop_front();
        }
        if (!c) {
            return false;
        }
        --c->inflight;
        if (sub) {
            _confirmed_count += !c->confirmed;
            c->confirmed = true;
        } else {
            --c->unsub_pending;
            _confirmed_count -= c->confirmed;
            c->confirmed = false;
            maybe_forget(*c);
        }
        return false;
    }
    // Unsolicited: the server dropped the subscription (Cluster slot migration).
    if (!c) {
        return false;
    }
    _confirmed_count -= c->confirmed;
    c->confirmed = false;
    c->sent = false;
    if (!c->wanted) {
        maybe_forget(*c);
        return false;
    }
    ev.kind = redis_event_kind::slot_moved;
    ev.channel = str_of(ch);
    ev.slot = c->slot;
    return true;
}

void redis_session::subscribe(std::string_view channel, uint16_t slot) {
    if (_opts.role != redis_role::subscriber) {
        std::abort();  // programmer error
    }
    auto it = _channels.find(channel);
    if (it == _channels.end()) {
        it = _channels.emplace(std::string(channel), channel_state{}).first;
        it->second.name = it->first;
    }
    channel_state& c = it->second;
    c.slot = slot;
    _wanted_count += !c.wanted;
    c.wanted = true;
    if (!c.sent) {
        mark_dirty(c);
    }
}

void redis_session::unsubscribe(std::string_view channel) {
    if (_opts.role != redis_role::subscriber) {
        std::abort();  // programmer error
    }
    auto it = _channels.find(channel);
    if (it == _channels.end() || !it->second.wanted) {
        return;
    }
    channel_state& c = it->second;
    c.wanted = false;
    --_wanted_count;
    if (c.sent) {
        mark_dirty(c);
    } else {
        maybe_forget(c);
    }
}

void redis_session::ping() {
    if (_opts.role != redis_role::subscriber) {
        std::abort();  // programmer error: use command() on the command connection
    }
    if (!_connected) {
        return;
    }
    std::string_view argv[] = {"PING"};
    append_command(_out, argv);
    _inflight.push_back(pending(op::ping));
    ++_counters.commands_sent;
}

bool redis_session::wanted(std::string_view channel) const {
    auto it = _channels.find(channel);
    return it != _channels.end() && it->second.wanted;
}

bool redis_session::confirmed(std::string_view channel) const {
    auto it = _channels.find(channel);
    return it != _channels.end() && it->second.confirmed;
}

void redis_session::mark_dirty(channel_state& c) {
    if (!c.dirty) {
        c.dirty = true;
        _dirty.push_back(&c);
    }
}

void redis_session::maybe_forget(channel_state& c) {
    if (!c.wanted && !c.sent && !c.confirmed && !c.dirty && c.inflight == 0) {
        _channels.erase(_channels.find(c.name));
    }
}

void redis_session::flush() {
    if (!_connected || _dirty.empty()) {
        return;
    }
    _subs.clear();
    _unsubs.clear();
    for (channel_state* c : _dirty) {
        c->dirty = false;
        if (c->wanted && !c->sent) {
            _subs.push_back(c);
        } else if (!c->wanted && c->sent) {
            _unsubs.push_back(c);
        } else {
            maybe_forget(*c);  // undone before the flush; each entry is in _dirty once
        }
    }
    _dirty.clear();
    write_batches(_unsubs, op::unsubscribe);
    write_batches(_subs, op::subscribe);
}

void redis_session::write_batches(std::vector<channel_state*>& list, op kind) {
    if (list.empty()) {
        return;
    }
    if (_opts.sharded) {
        // A sharded (un)subscribe must not cross slots.
        std::stable_sort(list.begin(), list.end(),
                         [](const channel_state* a, const channel_state* b) { return a->slot < b->slot; });
    }
    std::string_view name = kind == op::subscribe ? (_opts.sharded ? "SSUBSCRIBE" : "SUBSCRIBE")
                                                  : (_opts.sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE");
    std::vector<std::string_view> argv;
    size_t i = 0;
    while (i < list.size()) {
        size_t j = i + 1;
        while (j < list.size() && j - i < _opts.max_channels_per_command &&
               (!_opts.sharded || list[j]->slot == list[i]->slot)) {
            ++j;
        }
        argv.assign(1, name);
        pending p(kind);
        p.remaining = static_cast<uint32_t>(j - i);
        p.slot = list[i]->slot;
        p.channels.assign(list.begin() + static_cast<ptrdiff_t>(i), list.begin() + static_cast<ptrdiff_t>(j));
        for (channel_state* c : p.channels) {
            argv.push_back(c->name);
            ++c->inflight;
            c->sent = kind == op::subscribe;
            c->unsub_pending += kind == op::unsubscribe;
        }
        append_command(_out, argv);
        _inflight.push_back(std::move(p));
        ++_counters.commands_sent;
        i = j;
    }
}

void redis_session::take_output(protocol::byte_buffer& out) {
    flush();
    _counters.bytes_out += _out.size();
    if (out.empty()) {
        out.swap(_out);
        _out.clear();
    } else {
        out.append(_out.span());
        _out.clear();
    }
}

// ---- command role ----

bool redis_session::command(std::span<const std::string_view> argv, uint64_t token) {
    if (_opts.role != redis_role::command || argv.empty()) {
        std::abort();  // programmer error
    }
    bool publish = iequals(argv[0], "publish") || iequals(argv[0], "spublish");
    protocol::byte_buffer& to = _connected ? _out : _queued;
    char* cmd = nullptr;
    size_t len = static_cast<size_t>(format_command(argv, &cmd));
    if (to.size() + len > _opts.max_queued_bytes) {
        redisFreeCommand(cmd);
        _counters.publish_failures += publish;
        return false;
    }
    to.append(cmd, len);
    redisFreeCommand(cmd);
    pending p(op::user);
    p.publish = publish;
    p.token = token;
    if (_connected) {
        _inflight.push_back(std::move(p));
        ++_counters.commands_sent;
    } else {
        _queued_cmds.push_back(std::move(p));
    }
    return true;
}

}  // namespace wsgate::backplane
