// echo_scenario.cpp — closed-loop echo load: every connection keeps K
// messages in flight; each echo is timed from the stamp it carries and
// immediately replaced by a new message.
//
// Threads: one client_loop per thread, connections split evenly. The main
// thread coordinates phases through run_control: workers connect, report
// ready, and start sending when start_ns is published; messages received in
// [warmup_end, measure_end) are counted and timed, everything else is not.
// Main samples CPU time (ours and the server's) at the window's edges.
#include "clock.h"
#include "histogram.h"
#include "payload.h"
#include "proc_stats.h"
#include "report.h"
#include "scenarios.h"
#include "ws_frame.h"

#include <atomic>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace wsbench {

namespace {

// Phase boundaries, written by main before start_ns is released.
struct run_control {
    std::atomic<unsigned> ready{0};     // workers done connecting
    std::atomic<uint64_t> start_ns{0};  // 0 until traffic may start
    std::atomic<bool> abort{false};     // stop now (nothing connected)
    uint64_t warmup_end = 0;            // first receive time that counts
    uint64_t measure_end = 0;           // end of the window; workers stop here
};

class echo_worker final : public loop_handler {
public:
    echo_worker(const echo_options& opt, const target& dest, const payload_template& tmpl,
                unsigned connections, unsigned index, run_control& ctl)
        : _opt(opt), _dest(dest), _tmpl(tmpl), _connections(connections), _index(index), _ctl(ctl) {}

    void run() noexcept {
        try {
            run_loop();
        } catch (const std::exception& e) {
            _error = e.what();
            _ctl.ready.fetch_add(_ready_signalled ? 0 : 1);
            _ready_signalled = true;
        }
    }

    void on_open(connection& c) override {
        ++_open;
        if (_sending) {
            fill(c);
        } else {
            _opened.push_back(&c);
        }
    }

    void on_message(connection& c, const message_info& m) override {
        if (c.inflight > 0) {
            --c.inflight;
        }
        const uint64_t t = _loop->now();
        const uint8_t want = _opt.raw ? op_binary : (_opt.binary ? op_binary : op_text);
        if (!m.stamp_ok || !m.payload_ok || m.length != _opt.size || m.opcode != want) {
            ++_bad_payloads;
        } else if (t >= _warmup_end && t < _measure_end) {
            _latency.record(stamp_elapsed(t, m.stamp));
            ++_window_messages;
        }
        if (t < _measure_end) {
            fill(c);
        }
    }

    void on_closed(connection& c) override {
        if (c.reason != close_reason::connect_failed && c.reason != close_reason::handshake_failed) {
            --_open;
        }
    }

    const histogram& latency() const { return _latency; }
    const loop_counters& counters() const { return _counters; }
    uint64_t window_messages() const { return _window_messages; }
    uint64_t bad_payloads() const { return _bad_payloads; }
    const std::string& error() const { return _error; }
    unsigned opened() const { return _max_open; }

private:
    void run_loop() {
        const std::vector<int> cpus = parse_cpu_list(_opt.cpus);
        if (!cpus.empty() && !pin_current_thread(cpus[_index % cpus.size()])) {
            std::fprintf(stderr, "warning: cannot pin thread %u to CPU %d\n", _index,
                         cpus[_index % cpus.size()]);
        }
        loop_config cfg = make_loop_config(_opt, _dest, _connections, _opt.size);
        cfg.raw = _opt.raw;
        cfg.raw_message_size = _opt.size;
        cfg.tmpl = &_tmpl;
        cfg.source_offset = _index;
        client_loop loop(cfg, *this);
        _loop = &loop;
        for (unsigned i = 0; i < _connections; ++i) {
            (void)loop.open();
        }
        // Connect phase: bounded by the per-connection connect timeout.
        while (loop.queued() > 0 || loop.opening() > 0) {
            loop.run_once(50 * ns_per_ms);
        }
        _max_open = _open;
        _ready_signalled = true;
        _ctl.ready.fetch_add(1);
        while (_ctl.start_ns.load(std::memory_order_acquire) == 0 && !_ctl.abort.load()) {
            loop.run_once(10 * ns_per_ms);
        }
        if (!_ctl.abort.load()) {
            _warmup_end = _ctl.warmup_end;
            _measure_end = _ctl.measure_end;
            _sending = true;
            for (connection* c : _opened) {
                if (c->state == conn_state::open) {
                    fill(*c);
                }
            }
            _opened.clear();
            // Ends early only when every connection is gone (server died).
            while (loop.now() < _measure_end && loop.live() > 0) {
                const uint64_t left = _measure_end - loop.now();
                loop.run_once(left < 50 * ns_per_ms ? left + 1 : 50 * ns_per_ms);
            }
        }
        loop.shutdown_all(ns_per_s);
        _counters = loop.counters();
        _loop = nullptr;
    }

    // Tops the connection up to K messages in flight.
    void fill(connection& c) {
        while (c.inflight < _opt.inflight && c.state == conn_state::open) {
            byte_buffer& out = _loop->outbox(c);
            const uint64_t stamp = now_ns();
            if (_opt.raw) {
                append_stamped_raw(out, _tmpl, stamp);
            } else {
                append_stamped_frame(out, _opt.binary ? op_binary : op_text, _tmpl, stamp,
                                     _loop->random().next32());
            }
            ++c.inflight;
        }
    }

    const echo_options& _opt;           // run options
    const target& _dest;                // resolved URL
    const payload_template& _tmpl;      // message body
    unsigned _connections;              // this worker's share
    unsigned _index;                    // worker number
    run_control& _ctl;                  // shared phases
    client_loop* _loop = nullptr;       // valid inside run_loop()
    std::vector<connection*> _opened;   // opened before traffic started
    bool _sending = false;              // traffic phase reached
    uint64_t _warmup_end = 0;           // copy of run_control's, read after start_ns
    uint64_t _measure_end = 0;          // 0 before start: nothing counted, nothing sent
    bool _ready_signalled = false;      // ready counted (also on failure)
    unsigned _open = 0;                 // currently open
    unsigned _max_open = 0;             // open at the end of the connect phase
    histogram _latency;                 // window samples, ns
    uint64_t _window_messages = 0;      // echoes received in the window
    uint64_t _bad_payloads = 0;         // wrong size/stamp/filler/opcode
    loop_counters _counters;            // copied from the loop at the end
    std::string _error;                 // exception text, if the loop failed
};

void sleep_until_ns(uint64_t t) {
    const uint64_t now = now_ns();
    if (t > now) {
        std::this_thread::sleep_for(std::chrono::nanoseconds(t - now));
    }
}

} // namespace

int run_echo(const echo_options& opt) {
    if (opt.size < stamp_size) {
        std::fprintf(stderr, "error: --size must be at least %zu (the send stamp)\n", stamp_size);
        return 2;
    }
    if (opt.connections == 0 || opt.threads == 0 || opt.inflight == 0) {
        std::fprintf(stderr, "error: --connections, --threads and --inflight must be > 0\n");
        return 2;
    }
    const target dest = resolve_target(opt.url);
    raise_nofile_limit(opt.connections + 256);
    const payload_template tmpl(opt.size);
    const std::vector<int> cpus = parse_cpu_list(opt.cpus);
    if (!cpus.empty()) {
        pin_current_thread(cpus[0]); // the coordinator mostly sleeps; keep it off the server's CPU
    }

    run_control ctl;
    const unsigned threads = opt.threads > opt.connections ? opt.connections : opt.threads;
    std::vector<std::unique_ptr<echo_worker>> workers;
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) {
        const unsigned share = opt.connections / threads + (i < opt.connections % threads ? 1 : 0);
        workers.push_back(std::make_unique<echo_worker>(opt, dest, tmpl, share, i, ctl));
    }
    for (auto& w : workers) {
        pool.emplace_back([&w] { w->run(); });
    }
    while (ctl.ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    unsigned opened = 0;
    for (auto& w : workers) {
        opened += w->opened();
    }
    double cpu0 = 0;
    double server_cpu0 = -1;
    uint64_t window_start = 0;
    uint64_t window_end = 0;
    if (opened == 0) {
        ctl.abort.store(true);
    } else {
        const uint64_t start = now_ns();
        ctl.warmup_end = start + seconds_to_ns(opt.warmup_s);
        ctl.measure_end = ctl.warmup_end + seconds_to_ns(opt.duration_s);
        ctl.start_ns.store(start, std::memory_order_release);
        sleep_until_ns(ctl.warmup_end);
        window_start = now_ns();
        cpu0 = self_cpu_seconds();
        server_cpu0 = opt.pid > 0 ? read_cpu_seconds(opt.pid) : -1;
        sleep_until_ns(ctl.measure_end);
        window_end = now_ns();
    }
    const double cpu1 = self_cpu_seconds();
    const double server_cpu1 = opt.pid > 0 ? read_cpu_seconds(opt.pid) : -1;
    const int64_t server_rss = opt.pid > 0 ? read_rss_bytes(opt.pid) : -1;
    for (auto& t : pool) {
        t.join();
    }

    histogram latency;
    loop_counters counters;
    uint64_t messages = 0;
    uint64_t bad = 0;
    std::string error;
    for (auto& w : workers) {
        latency.merge(w->latency());
        counters.merge(w->counters());
        messages += w->window_messages();
        bad += w->bad_payloads();
        if (error.empty()) {
            error = w->error();
        }
    }
    const double window_s = window_end > window_start ? static_cast<double>(window_end - window_start) / 1e9 : 0;
    const double rate = window_s > 0 ? static_cast<double>(messages) / window_s : 0;

    report r(opt.raw ? "echo-raw" : "echo");
    r.add("url", opt.url)
        .add("connections", opt.connections)
        .add("connected", opened)
        .add("threads", threads)
        .add("size_bytes", static_cast<uint64_t>(opt.size))
        .add("inflight", opt.inflight)
        .add("frames", opt.raw ? "none" : (opt.binary ? "binary" : "text"))
        .add("window_s", window_s, 3)
        .add("messages", messages)
        .add("msgs_per_s", rate, 0)
        .add("mb_per_s", rate * static_cast<double>(opt.size) / 1e6, 2)
        .add_latency("latency", latency)
        .add("client_cpu_pct", window_s > 0 ? 100.0 * (cpu1 - cpu0) / window_s : 0.0, 1);
    if (opt.pid > 0) {
        r.add("server_cpu_pct",
              server_cpu0 >= 0 && server_cpu1 >= 0 && window_s > 0 ? 100.0 * (server_cpu1 - server_cpu0) / window_s
                                                                   : -1.0,
              1);
        r.add("server_rss_bytes", static_cast<int64_t>(server_rss));
    }
    r.add("bad_payloads", bad).add_errors(counters, bad);
    if (!error.empty()) {
        r.add("fatal", error);
    }
    r.print(opt.json);

    // Any failure fails the run: a benchmark that lost connections or got
    // corrupt echoes measured something other than what it claims.
    if (!error.empty() || messages == 0 || counters.errors() > 0 || bad > 0) {
        return 1;
    }
    return 0;
}

} // namespace wsbench
