// handshake_scenario.cpp — connection storm: C concurrent cycles of
// TCP connect + upgrade + close handshake (we send 1000, wait for the server's
// close and its TCP FIN, so TIME_WAIT lands on the server as RFC 6455 7.1.1
// intends). Reports upgrades per second and the connect-to-101 latency.
// Single thread.
#include "clock.h"
#include "histogram.h"
#include "proc_stats.h"
#include "report.h"
#include "scenarios.h"

#include <cstdio>

namespace wsbench {

namespace {

class handshake_handler final : public loop_handler {
public:
    void on_open(connection& c) override {
        const uint64_t t = loop->now();
        if (t >= warmup_end && t < measure_end) {
            ++completed;
            latency.record(t - c.started_ns);
        }
        loop->close_gracefully(c);
    }
    void on_message(connection&, const message_info&) override {}
    void on_closed(connection&) override {
        if (loop->now() < measure_end) {
            (void)loop->open();
        }
    }

    client_loop* loop = nullptr; // set before the first turn
    uint64_t warmup_end = 0;     // first open that counts
    uint64_t measure_end = 0;    // stop opening here
    uint64_t completed = 0;      // upgrades in the window
    histogram latency;           // connect issued -> 101 verified, ns
};

} // namespace

int run_handshake(const handshake_options& opt) {
    if (opt.concurrency == 0) {
        std::fprintf(stderr, "error: --concurrency must be > 0\n");
        return 2;
    }
    const target dest = resolve_target(opt.url);
    raise_nofile_limit(static_cast<uint64_t>(opt.concurrency) + 64);
    const std::vector<int> cpus = parse_cpu_list(opt.cpus);
    if (!cpus.empty()) {
        pin_current_thread(cpus[0]);
    }
    handshake_handler h;
    common_options common = opt;
    if (common.connect_concurrency < opt.concurrency) {
        common.connect_concurrency = opt.concurrency;
    }
    client_loop loop(make_loop_config(common, dest, opt.concurrency, 0), h);
    h.loop = &loop;
    const uint64_t start = now_ns();
    h.warmup_end = start + seconds_to_ns(opt.warmup_s);
    h.measure_end = h.warmup_end + seconds_to_ns(opt.duration_s);
    for (unsigned i = 0; i < opt.concurrency; ++i) {
        (void)loop.open();
    }
    double cpu0 = -1;
    while (loop.now() < h.measure_end) {
        const uint64_t left = h.measure_end - loop.now();
        loop.run_once(left < 50 * ns_per_ms ? left + 1 : 50 * ns_per_ms);
        if (cpu0 < 0 && loop.now() >= h.warmup_end) {
            cpu0 = self_cpu_seconds();
        }
    }
    const double cpu1 = self_cpu_seconds();
    loop.shutdown_all(2 * ns_per_s);

    const double window_s = opt.duration_s;
    report r("handshake");
    r.add("url", opt.url)
        .add("concurrency", opt.concurrency)
        .add("window_s", window_s, 3)
        .add("handshakes", h.completed)
        .add("handshakes_per_s", window_s > 0 ? static_cast<double>(h.completed) / window_s : 0.0, 0)
        .add_latency("upgrade_latency", h.latency)
        .add("client_cpu_pct", window_s > 0 && cpu0 >= 0 ? 100.0 * (cpu1 - cpu0) / window_s : 0.0, 1)
        .add_errors(loop.counters(), 0);
    r.print(opt.json);

    const loop_counters& c = loop.counters();
    if (h.completed == 0 || c.connect_failed > 0 || c.handshake_failed > 0) {
        return 1;
    }
    return 0;
}

} // namespace wsbench
