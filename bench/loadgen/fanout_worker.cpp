// fanout_worker.cpp — see fanout_worker.h. Requests go out as masked JSON
// text frames built in a scratch buffer; replies and pushes are read with
// json_scan.h straight out of the receive buffers (frame_reader collect mode).
#include "fanout_worker.h"

#include "clock.h"
#include "fanout_payload.h"
#include "proc_stats.h"
#include "ws_frame.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>

namespace wsbench {

namespace {

constexpr uint64_t poll_interval_ns = 10 * ns_per_ms;

void put(std::vector<uint8_t>& out, size_t& n, std::string_view s) {
    std::memcpy(out.data() + n, s.data(), s.size());
    n += s.size();
}

void put_number(std::vector<uint8_t>& out, size_t& n, uint64_t v) {
    char* p = reinterpret_cast<char*>(out.data() + n);
    n += static_cast<size_t>(std::to_chars(p, p + 20, v).ptr - p);
}

} // namespace

void fanout_totals::merge(const fanout_totals& o) {
    members += o.members;
    opened += o.opened;
    joined += o.joined;
    published += o.published;
    window_acks += o.window_acks;
    deliveries += o.deliveries;
    window_deliveries += o.window_deliveries;
    self_deliveries += o.self_deliveries;
    lost += o.lost;
    duplicates += o.duplicates;
    out_of_order += o.out_of_order;
    unexpected += o.unexpected;
    misrouted += o.misrouted;
    bad_payloads += o.bad_payloads;
    malformed += o.malformed;
    bad_acks += o.bad_acks;
    server_errors += o.server_errors;
    other_pushes += o.other_pushes;
    unacked += o.unacked;
    rate_stalls += o.rate_stalls;
    frames += o.frames;
    array_frames += o.array_frames;
    if (first_problem.empty()) {
        first_problem = o.first_problem;
    }
    latency.merge(o.latency);
    counters.merge(o.counters);
    if (fatal.empty()) {
        fatal = o.fatal;
    }
}

fanout_worker::fanout_worker(const fanout_options& opt, const target& dest, const target& pub_dest,
                             const payload_template& tmpl, fanout_control& ctl, unsigned index, unsigned threads)
    : _opt(opt), _dest(dest), _pub_dest(pub_dest), _tmpl(tmpl), _ctl(ctl), _index(index), _threads(threads),
      _per_room(opt.subscribers + opt.publishers) {
    const uint64_t total = static_cast<uint64_t>(opt.rooms) * _per_room;
    const uint32_t P = opt.publishers;
    const uint32_t room_window =
        opt.rate > 0 && !opt.inflight_given ? fanout_rate_default_cap : opt.inflight;
    for (uint64_t n = index; n < total; n += threads) {
        member m;
        m.room = static_cast<uint32_t>(n / _per_room);
        m.number = static_cast<uint32_t>(n);
        const uint32_t slot = static_cast<uint32_t>(n % _per_room);
        m.is_pub = slot >= opt.subscribers;
        if (m.is_pub) {
            const uint32_t p = slot - opt.subscribers;
            m.publisher = m.room * P + p;
            m.window = room_window / P + (p < room_window % P ? 1 : 0);
            _pubs.push_back(static_cast<uint32_t>(_members.size()));
        } else {
            m.track = static_cast<uint32_t>(_tracks.size());
            _tracks.resize(_tracks.size() + P);
        }
        _members.push_back(m);
    }
    _t.members = static_cast<unsigned>(_members.size());
    if (opt.rate > 0) {
        const double per_pub = opt.rate / (static_cast<double>(opt.rooms) * P);
        _interval_ns = static_cast<uint64_t>(1e9 / per_pub);
        if (_interval_ns == 0) {
            _interval_ns = 1;
        }
    }
    _scratch.resize(opt.size + 128);
}

void fanout_worker::run() noexcept {
    try {
        run_loop();
    } catch (const std::exception& e) {
        _t.fatal = e.what();
    }
    // Whatever happened, the coordinator and the other workers must not wait for us.
    if (!_ready_signalled) {
        _ctl.ready.fetch_add(1);
    }
    if (!_drained_signalled) {
        _ctl.drained.fetch_add(1);
    }
    _loop = nullptr;
}

void fanout_worker::run_loop() {
    const std::vector<int> cpus = parse_cpu_list(_opt.cpus);
    if (!cpus.empty() && !pin_current_thread(cpus[_index % cpus.size()])) {
        std::fprintf(stderr, "warning: cannot pin thread %u to CPU %d\n", _index, cpus[_index % cpus.size()]);
    }
    // 16 KiB provided buffers at least: servers coalesce many pushes per send,
    // and a frame split over two buffers is copied (collect mode).
    const size_t buf_hint = _opt.size + 128 > 16384 - 14 ? _opt.size + 128 : 16384 - 14;
    loop_config cfg = make_loop_config(_opt, _dest, static_cast<unsigned>(_members.size()), buf_hint);
    cfg.collect_payloads = true;
    cfg.deflate = _opt.deflate;
    cfg.source_offset = _index;
    client_loop loop(cfg, *this);
    _loop = &loop;
    const bool ok = connect_and_join(loop);
    _ready_signalled = true;
    _ctl.ready.fetch_add(1);
    while (_ctl.start_ns.load(std::memory_order_acquire) == 0 && !_ctl.abort.load()) {
        loop.run_once(10 * ns_per_ms);
    }
    if (ok && !_ctl.abort.load()) {
        traffic(loop);
        drain(loop);
        verdict();
    }
    loop.shutdown_all(ns_per_s);
    _t.counters = loop.counters();
    _loop = nullptr;
}

bool fanout_worker::connect_and_join(client_loop& loop) {
    for (size_t i = 0; i < _members.size(); ++i) {
        (void)loop.open();
    }
    uint64_t join_deadline = 0;
    while (loop.queued() > 0 || loop.opening() > 0 || _t.joined < _t.opened) {
        loop.run_once(50 * ns_per_ms);
        if (loop.queued() == 0 && loop.opening() == 0) {
            if (join_deadline == 0) {
                join_deadline = loop.now() + seconds_to_ns(_opt.connect_timeout_s);
            } else if (loop.now() >= join_deadline) {
                note("timed out waiting for join acks");
                break;
            }
        }
        if (loop.counters().errors() > 0 || _t.server_errors > 0) {
            break; // the run is void; let the coordinator report it now
        }
    }
    return _t.joined == _members.size();
}

void fanout_worker::traffic(client_loop& loop) {
    _warmup_end = _ctl.warmup_end;
    _measure_end = _ctl.measure_end;
    const uint64_t start = _ctl.start_ns.load(std::memory_order_acquire);
    const uint64_t all_pubs = static_cast<uint64_t>(_opt.rooms) * _opt.publishers;
    _sending = true;
    _next_due = ~uint64_t{0};
    for (const uint32_t i : _pubs) {
        member& m = _members[i];
        if (_interval_ns == 0) {
            fill(m);
        } else {
            // Spread the publishers' phases evenly over one interval.
            m.due_ns = start + static_cast<uint64_t>(static_cast<double>(_interval_ns) *
                                                     static_cast<double>(m.publisher) /
                                                     static_cast<double>(all_pubs));
            _next_due = m.due_ns < _next_due ? m.due_ns : _next_due;
        }
    }
    while (loop.now() < _measure_end && loop.live() > 0) {
        uint64_t wait = _measure_end - loop.now();
        if (_interval_ns != 0) {
            const uint64_t due = tick_rate();
            const uint64_t now = loop.now();
            const uint64_t until_due = due > now ? due - now : ns_per_ms; // stalled: an ack wakes us
            wait = until_due < wait ? until_due : wait;
        }
        loop.run_once(wait < 50 * ns_per_ms ? wait + 1 : 50 * ns_per_ms);
    }
    // Publishers are done: tell every thread how many each one sent.
    for (const uint32_t i : _pubs) {
        const member& m = _members[i];
        _ctl.final_seq[m.publisher].store(m.next_seq, std::memory_order_release);
    }
}

void fanout_worker::drain(client_loop& loop) {
    // Ends when every thread has everything, or when no thread has seen an ack
    // or a delivery for --drain seconds (a backlogged server may still be
    // delivering long after the window), or at the hard limit drain_end.
    const uint64_t quiet = seconds_to_ns(_opt.drain_s);
    uint64_t seen = ~uint64_t{0};
    uint64_t next_check = 0;
    while (loop.now() < _ctl.drain_end && loop.live() > 0) {
        const uint64_t now = loop.now();
        const uint64_t progress = _t.deliveries + _t.self_deliveries + _t.window_acks + _acks_after;
        if (progress != seen) {
            seen = progress;
            uint64_t last = _ctl.last_progress.load(std::memory_order_relaxed);
            while (last < now && !_ctl.last_progress.compare_exchange_weak(last, now)) {
            }
        }
        if (!_drained_signalled && now >= next_check) {
            next_check = now + poll_interval_ns;
            const uint64_t last = _ctl.last_progress.load(std::memory_order_relaxed);
            if (has_everything() || (now > last && now - last >= quiet)) {
                _drained_signalled = true;
                _ctl.drained.fetch_add(1);
            }
        }
        // Keep receiving (late duplicates still count) until every thread is done.
        if (_drained_signalled && _ctl.drained.load() >= _threads) {
            break;
        }
        const uint64_t left = _ctl.drain_end - now;
        loop.run_once(left < poll_interval_ns ? left + 1 : poll_interval_ns);
    }
    if (!_drained_signalled) {
        _drained_signalled = true;
        _ctl.drained.fetch_add(1);
    }
}

bool fanout_worker::has_everything() const {
    for (const uint32_t i : _pubs) {
        const member& m = _members[i];
        if (m.conn != nullptr && m.acked < m.next_seq) {
            return false;
        }
    }
    const uint32_t P = _opt.publishers;
    for (const member& m : _members) {
        if (m.is_pub || m.conn == nullptr) {
            continue;
        }
        for (uint32_t p = 0; p < P; ++p) {
            const uint64_t sent = _ctl.final_seq[m.room * P + p].load(std::memory_order_acquire);
            if (sent == unknown_count || _tracks[m.track + p].distinct < sent) {
                return false;
            }
        }
    }
    return true;
}

void fanout_worker::verdict() {
    const uint32_t P = _opt.publishers;
    for (const uint32_t i : _pubs) {
        const member& m = _members[i];
        if (m.acked < m.next_seq) {
            _t.unacked += m.next_seq - m.acked;
            note("publications not acked by the end of the drain");
        }
    }
    for (const member& m : _members) {
        if (m.is_pub) {
            continue;
        }
        for (uint32_t p = 0; p < P; ++p) {
            const uint64_t sent = _ctl.final_seq[m.room * P + p].load(std::memory_order_acquire);
            const uint64_t got = _tracks[m.track + p].distinct;
            if (sent == unknown_count) {
                problem(_t.lost, "a publisher's count is unknown (its thread failed)");
            } else if (got < sent) {
                _t.lost += sent - got;
                note("a subscriber missed publications (lost)");
            } else if (got > sent) {
                _t.unexpected += got - sent;
                note("a subscriber got more distinct publications than were sent");
            }
        }
    }
}

const target* fanout_worker::connect_target(connection& c) {
    // Members are bound to connections when they dial, so a publisher can dial
    // another gateway than the subscribers (--publish-url).
    if (_next_member >= _members.size()) {
        return nullptr; // more slots than members: cannot happen (slab size == members)
    }
    const size_t idx = _next_member++;
    member& m = _members[idx];
    c.user = idx + 1;
    m.conn = &c;
    return m.is_pub ? &_pub_dest : &_dest;
}

std::string fanout_worker::request_target(connection& c) {
    if (c.user == 0 || c.user > _members.size()) {
        return {};
    }
    member& m = _members[c.user - 1];
    if (!_opt.user_param && _opt.token.empty()) {
        return {};
    }
    std::string path = c.dest->path;
    char sep = path.find('?') == std::string::npos ? '?' : '&';
    if (_opt.user_param) {
        path += sep;
        path += "user=u";
        path += std::to_string(m.number);
        sep = '&';
    }
    if (!_opt.token.empty()) {
        path += sep;
        path += "token=";
        path += _opt.token;
    }
    return path;
}

void fanout_worker::on_open(connection& c) {
    if (c.user == 0) {
        return;
    }
    ++_t.opened;
    const member& m = _members[c.user - 1];
    size_t n = 0;
    put(_scratch, n, R"({"op":"join","room":")");
    put(_scratch, n, _ctl.room_names[m.room]);
    put(_scratch, n, R"(","id":)");
    put_number(_scratch, n, m.number);
    put(_scratch, n, "}");
    append_masked_frame(_loop->outbox(c), op_text, _scratch.data(), n, _loop->random().next32());
}

void fanout_worker::on_closed(connection& c) {
    if (c.user != 0) {
        _members[c.user - 1].conn = nullptr;
    }
}

void fanout_worker::on_message(connection& c, const message_info& info) {
    if (c.user == 0) {
        return;
    }
    member& m = _members[c.user - 1];
    if (info.opcode != op_text) {
        problem(_t.malformed, "binary message from the server (JSON expected)");
        return;
    }
    const auto* p = reinterpret_cast<const char*>(info.data);
    const auto len = static_cast<size_t>(info.length);
    ++_t.frames;
    if (len > 0 && p[0] == '[') {
        ++_t.array_frames;
    }
    if (!for_each_envelope(p, len, _opt.size, [&](const envelope& e) { handle(m, e); })) {
        problem(_t.malformed, "text message that is not a JSON object or array of objects");
    }
}

void fanout_worker::handle(member& m, const envelope& e) {
    if (e.type == "message") {
        if (m.is_pub) {
            ++_t.self_deliveries; // publishers are members: their room's pushes come back
        } else {
            deliver(m, e);
        }
    } else if (e.type == "ack") {
        on_ack(m, e);
    } else if (e.type == "error") {
        ++_t.server_errors;
        if (_t.first_problem.empty()) {
            _t.first_problem = "server error reply: ";
            _t.first_problem.append(e.code);
            _t.first_problem += ": ";
            _t.first_problem.append(e.message);
        }
    } else if (e.type != "pong") {
        ++_t.other_pushes;
    }
}

void fanout_worker::deliver(member& m, const envelope& e) {
    ++_t.deliveries;
    if (!e.data_is_string || e.data.size() != _opt.size) {
        problem(_t.bad_payloads, "publication with the wrong length or not a string");
        return;
    }
    const auto* d = reinterpret_cast<const uint8_t*>(e.data.data());
    fanout_stamp s;
    const uint32_t P = _opt.publishers;
    if (!decode_fanout(d, s) || s.publisher >= static_cast<uint64_t>(_opt.rooms) * P) {
        problem(_t.bad_payloads, "publication header does not decode");
        return;
    }
    if (std::memcmp(d + fanout_header_size, _tmpl.bytes.data() + fanout_header_size,
                    _opt.size - fanout_header_size) != 0) {
        problem(_t.bad_payloads, "publication filler corrupted");
        return;
    }
    if (s.publisher / P != m.room || e.room != _ctl.room_names[m.room]) {
        problem(_t.misrouted, "publication delivered to a subscriber of another room");
        return;
    }
    // Exactly once, in order per publisher: a 64-wide anti-replay window.
    track& t = _tracks[m.track + s.publisher % P];
    const uint64_t seq = s.seq;
    if (seq == t.next) {
        t.seen = (t.seen << 1) | 1;
        ++t.next;
        ++t.distinct;
    } else if (seq > t.next) {
        const uint64_t shift = seq - t.next + 1; // the skipped ones arrive late or never
        t.seen = shift >= 64 ? 1 : (t.seen << shift) | 1;
        t.next = seq + 1;
        ++t.distinct;
    } else {
        const uint64_t back = t.next - 1 - seq;
        if (back < 64 && ((t.seen >> back) & 1) != 0) {
            problem(_t.duplicates, "a subscriber got a publication twice");
            return;
        }
        if (back < 64) {
            t.seen |= uint64_t{1} << back;
        }
        ++t.distinct; // older than the window: cannot tell late from duplicate; counted as late
        problem(_t.out_of_order, "a subscriber got a publisher's publications out of order");
    }
    const uint64_t now = _loop->now();
    if (now >= _warmup_end && now < _measure_end) {
        ++_t.window_deliveries;
        _t.latency.record(fanout_elapsed(now, s.ns));
    }
}

void fanout_worker::on_ack(member& m, const envelope& e) {
    if (!e.has_id) {
        problem(_t.bad_acks, "ack without a numeric id");
        return;
    }
    if (!m.joined) {
        if (e.id != m.number) {
            problem(_t.bad_acks, "join ack with the wrong id");
            return;
        }
        m.joined = true;
        ++_t.joined;
        return;
    }
    if (!m.is_pub || m.acked >= m.next_seq || e.id != m.acked) {
        problem(_t.bad_acks, "publish ack with an unexpected id (not the oldest in flight)");
        return;
    }
    ++m.acked;
    const uint64_t now = _loop->now();
    if (now >= _warmup_end && now < _measure_end) {
        ++_t.window_acks;
    } else {
        ++_acks_after;
    }
    if (_interval_ns == 0) {
        fill(m);
    } else {
        send_due(m);
    }
}

void fanout_worker::fill(member& m) {
    while (m.conn != nullptr && m.next_seq - m.acked < m.window && _loop->now() < _measure_end &&
           m.next_seq < fanout_max_seq) {
        publish(m, now_ns());
    }
}

void fanout_worker::send_due(member& m) {
    const uint64_t now = _loop->now();
    if (now >= _measure_end) {
        return; // the final counts are out; a publisher behind schedule sends no more
    }
    while (m.conn != nullptr && m.due_ns <= now && m.next_seq < fanout_max_seq) {
        if (m.next_seq - m.acked >= m.window) {
            // Sent when an ack frees the window; the stamp keeps the schedule.
            if (!m.stalled) {
                m.stalled = true;
                ++_t.rate_stalls;
            }
            return;
        }
        // Stamped with the scheduled time, so a late send shows as latency
        // (no coordinated omission).
        m.stalled = false;
        publish(m, m.due_ns);
        m.due_ns += _interval_ns;
    }
}

uint64_t fanout_worker::tick_rate() {
    if (_loop->now() < _next_due) {
        return _next_due;
    }
    uint64_t next = ~uint64_t{0};
    for (const uint32_t i : _pubs) {
        member& m = _members[i];
        send_due(m);
        next = m.due_ns < next ? m.due_ns : next;
    }
    _next_due = next;
    return next;
}

void fanout_worker::publish(member& m, uint64_t stamp) {
    // {"op":"publish","room":"r<i>","id":<seq>,"data":"<payload>"}
    size_t n = 0;
    put(_scratch, n, R"({"op":"publish","room":")");
    put(_scratch, n, _ctl.room_names[m.room]);
    put(_scratch, n, R"(","id":)");
    put_number(_scratch, n, m.next_seq);
    put(_scratch, n, R"(,"data":")");
    fanout_stamp s;
    s.ns = stamp;
    s.publisher = m.publisher;
    s.seq = static_cast<uint32_t>(m.next_seq);
    encode_fanout(s, _scratch.data() + n);
    std::memcpy(_scratch.data() + n + fanout_header_size, _tmpl.bytes.data() + fanout_header_size,
                _opt.size - fanout_header_size);
    n += _opt.size;
    put(_scratch, n, R"("})");
    append_masked_frame(_loop->outbox(*m.conn), op_text, _scratch.data(), n, _loop->random().next32());
    ++m.next_seq;
    ++_t.published;
}

void fanout_worker::problem(uint64_t& counter, const char* what) {
    ++counter;
    note(what);
}

void fanout_worker::note(const char* what) {
    if (_t.first_problem.empty()) {
        _t.first_problem = what;
    }
}

} // namespace wsbench
