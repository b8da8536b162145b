// idle_scenario.cpp — memory per idle connection on the server.
//
// Reads the server's VmRSS, opens N WebSocket connections (at most
// --connect-concurrency upgrades in flight: the batches), keeps them open for
// --hold seconds answering pings, reads VmRSS again and reports the growth per
// open connection. Single thread: opening is bounded by the server, not by us.
#include "clock.h"
#include "proc_stats.h"
#include "report.h"
#include "scenarios.h"

#include <cstdio>

namespace wsbench {

namespace {

class idle_handler final : public loop_handler {
public:
    void on_open(connection&) override { ++open; }
    void on_message(connection&, const message_info&) override { ++messages; }
    void on_closed(connection& c) override {
        if (c.reason == close_reason::connect_failed || c.reason == close_reason::handshake_failed) {
            return; // never counted as open
        }
        --open;
        if (c.reason != close_reason::local) {
            ++dropped; // the server (or the network) ended it, not our shutdown
        }
    }

    unsigned open = 0;     // currently open
    uint64_t dropped = 0;  // closed by the server after opening
    uint64_t messages = 0; // unexpected data messages from the server
};

} // namespace

int run_idle(const idle_options& opt) {
    if (opt.pid <= 0) {
        std::fprintf(stderr, "error: idle needs --pid of the server\n");
        return 2;
    }
    const target dest = resolve_target(opt.url);
    const uint64_t limit = raise_nofile_limit(static_cast<uint64_t>(opt.connections) + 64);
    if (limit < static_cast<uint64_t>(opt.connections) + 32) {
        std::fprintf(stderr, "error: open files limit %llu is too low for %u connections (ulimit -n)\n",
                     static_cast<unsigned long long>(limit), opt.connections);
        return 2;
    }
    const std::vector<int> cpus = parse_cpu_list(opt.cpus);
    if (!cpus.empty()) {
        pin_current_thread(cpus[0]);
    }
    const int64_t rss_before = read_rss_bytes(opt.pid);
    if (rss_before < 0) {
        std::fprintf(stderr, "error: cannot read /proc/%d/status\n", static_cast<int>(opt.pid));
        return 2;
    }

    idle_handler h;
    client_loop loop(make_loop_config(opt, dest, opt.connections, 0), h);
    for (unsigned i = 0; i < opt.connections; ++i) {
        (void)loop.open();
    }
    const uint64_t t0 = now_ns();
    uint64_t next_progress = t0 + ns_per_s;
    while (loop.queued() > 0 || loop.opening() > 0) {
        loop.run_once(50 * ns_per_ms);
        if (loop.now() >= next_progress) {
            next_progress += ns_per_s;
            std::fprintf(stderr, "idle: %u/%u open, %llu failed\n", h.open, opt.connections,
                         static_cast<unsigned long long>(loop.counters().connect_failed +
                                                         loop.counters().handshake_failed));
        }
    }
    const uint64_t t_opened = now_ns();
    std::fprintf(stderr, "idle: %u/%u open after %.2f s; holding %.1f s\n", h.open, opt.connections,
                 static_cast<double>(t_opened - t0) / 1e9, opt.hold_s);
    const uint64_t hold_end = t_opened + seconds_to_ns(opt.hold_s);
    while (loop.now() < hold_end) {
        const uint64_t left = hold_end - loop.now();
        loop.run_once(left < 50 * ns_per_ms ? left + 1 : 50 * ns_per_ms);
    }
    const int64_t rss_after = read_rss_bytes(opt.pid);
    const unsigned still_open = h.open;
    loop.shutdown_all(5 * ns_per_s);

    const double per_conn = still_open > 0 && rss_after >= 0
                                ? static_cast<double>(rss_after - rss_before) / still_open
                                : 0.0;
    const double open_s = static_cast<double>(t_opened - t0) / 1e9;
    report r("idle");
    r.add("url", opt.url)
        .add("connections", opt.connections)
        .add("open", still_open)
        .add("open_seconds", open_s, 3)
        .add("opens_per_s", open_s > 0 ? (still_open + h.dropped) / open_s : 0.0, 0)
        .add("server_rss_before_bytes", rss_before)
        .add("server_rss_after_bytes", rss_after)
        .add("rss_bytes_per_connection", per_conn, 0)
        .add("dropped", h.dropped)
        .add_errors(loop.counters(), 0);
    r.print(opt.json);

    const loop_counters& c = loop.counters();
    if (still_open == 0 || c.errors() > 0 || rss_after < 0) {
        return 1;
    }
    return 0;
}

} // namespace wsbench
