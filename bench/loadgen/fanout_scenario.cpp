// fanout_scenario.cpp — room fan-out: R rooms, S subscribers and P
// publishers per room, publications flat out (K in flight per room) or at a
// fixed total rate; see fanout_worker.h for the per-thread side.
//
// The coordinator (this thread) waits until every worker has connected and
// joined, releases the traffic phase, samples CPU time (ours and the
// server's) at the window's edges, and merges the workers' counts into one
// report. Deliveries are counted at subscribers only, by receive time.
#include "clock.h"
#include "fanout_payload.h"
#include "fanout_worker.h"
#include "proc_stats.h"
#include "report.h"
#include "scenarios.h"

#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

namespace wsbench {

namespace {

void sleep_until_ns(uint64_t t) {
    const uint64_t now = now_ns();
    if (t > now) {
        std::this_thread::sleep_for(std::chrono::nanoseconds(t - now));
    }
}

// Summed utime + stime of every server process, or -1 if none or one cannot be read.
double servers_cpu_seconds(const std::vector<pid_t>& pids) {
    double sum = pids.empty() ? -1 : 0;
    for (pid_t p : pids) {
        const double s = read_cpu_seconds(p);
        sum = s < 0 || sum < 0 ? -1 : sum + s;
    }
    return sum;
}

} // namespace

int run_fanout(const fanout_options& opt) {
    if (opt.size < fanout_header_size) {
        std::fprintf(stderr, "error: --size must be at least %zu (the publication header)\n",
                     fanout_header_size);
        return 2;
    }
    if (opt.rooms == 0 || opt.subscribers == 0 || opt.publishers == 0 || opt.threads == 0) {
        std::fprintf(stderr, "error: --rooms, --subscribers, --publishers and --threads must be > 0\n");
        return 2;
    }
    if (opt.inflight < opt.publishers) {
        std::fprintf(stderr, "error: --inflight (per room) must be at least --publishers (per room)\n");
        return 2;
    }
    const uint64_t per_room = static_cast<uint64_t>(opt.subscribers) + opt.publishers;
    const uint64_t connections = per_room * opt.rooms;
    const uint64_t publishers = static_cast<uint64_t>(opt.publishers) * opt.rooms;
    if (publishers > fanout_max_publishers || connections > (uint64_t{1} << 31)) {
        std::fprintf(stderr, "error: too many publishers (max %llu) or connections\n",
                     static_cast<unsigned long long>(fanout_max_publishers));
        return 2;
    }
    const uint64_t limit = raise_nofile_limit(connections + 256);
    if (limit < connections + 32) {
        std::fprintf(stderr,
                     "error: open files limit %llu is too low for %llu connections "
                     "(ulimit -n; one process holds ~limit - 100)\n",
                     static_cast<unsigned long long>(limit), static_cast<unsigned long long>(connections));
        return 2;
    }
    const target dest = resolve_target(opt.url);
    const target pub_dest = resolve_target(opt.publish_url.empty() ? opt.url : opt.publish_url);
    const payload_template tmpl(opt.size, opt.text_payload);
    const std::vector<int> cpus = parse_cpu_list(opt.cpus);
    if (!cpus.empty()) {
        pin_current_thread(cpus[0]); // the coordinator mostly sleeps; keep it off the server's CPU
    }

    fanout_control ctl;
    ctl.room_names.reserve(opt.rooms);
    for (unsigned r = 0; r < opt.rooms; ++r) {
        std::string name = "r"; // (not "r" + to_string: GCC 12 -Wrestrict false positive)
        name += std::to_string(r);
        ctl.room_names.push_back(std::move(name));
    }
    ctl.final_seq = std::make_unique<std::atomic<uint64_t>[]>(publishers);
    for (uint64_t i = 0; i < publishers; ++i) {
        ctl.final_seq[i].store(unknown_count);
    }

    const unsigned threads =
        opt.threads > connections ? static_cast<unsigned>(connections) : opt.threads;
    std::vector<std::unique_ptr<fanout_worker>> workers;
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) {
        workers.push_back(std::make_unique<fanout_worker>(opt, dest, pub_dest, tmpl, ctl, i, threads));
    }
    for (auto& w : workers) {
        pool.emplace_back([&w] { w->run(); });
    }
    const uint64_t t_connect = now_ns();
    while (ctl.ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double setup_s = static_cast<double>(now_ns() - t_connect) / 1e9;
    unsigned opened = 0;
    unsigned joined = 0;
    bool setup_failed = false;
    for (auto& w : workers) {
        opened += w->totals().opened;
        joined += w->totals().joined;
        setup_failed = setup_failed || !w->totals().fatal.empty();
    }
    setup_failed = setup_failed || joined < connections;

    double cpu0 = 0;
    double server_cpu0 = -1;
    uint64_t window_start = 0;
    uint64_t window_end = 0;
    if (setup_failed) {
        ctl.abort.store(true);
    } else {
        if (opt.settle_s > 0) {
            sleep_until_ns(now_ns() + seconds_to_ns(opt.settle_s));
        }
        const uint64_t start = now_ns();
        ctl.warmup_end = start + seconds_to_ns(opt.warmup_s);
        ctl.measure_end = ctl.warmup_end + seconds_to_ns(opt.duration_s);
        ctl.last_progress.store(ctl.measure_end);
        ctl.drain_end = ctl.measure_end + seconds_to_ns(30 + 10 * opt.drain_s);
        ctl.start_ns.store(start, std::memory_order_release);
        sleep_until_ns(ctl.warmup_end);
        window_start = now_ns();
        cpu0 = self_cpu_seconds();
        server_cpu0 = servers_cpu_seconds(opt.pids);
        sleep_until_ns(ctl.measure_end);
        window_end = now_ns();
    }
    const double cpu1 = self_cpu_seconds();
    const double server_cpu1 = servers_cpu_seconds(opt.pids);
    int64_t server_rss = opt.pids.empty() ? -1 : 0;
    for (pid_t p : opt.pids) {
        const int64_t rss = read_rss_bytes(p);
        server_rss = rss < 0 || server_rss < 0 ? -1 : server_rss + rss;
    }
    for (auto& t : pool) {
        t.join();
    }
    const double drain_s = window_end > 0 ? static_cast<double>(now_ns() - window_end) / 1e9 : 0;

    fanout_totals all;
    for (auto& w : workers) {
        all.merge(w->totals());
    }
    // Workers count by their own clocks against [warmup_end, measure_end), so
    // rates use that window exactly. CPU time is sampled by this thread, which
    // may wake late (it shares the client CPUs), so CPU % uses the interval
    // actually sampled.
    const double window_s = window_end > 0 ? static_cast<double>(ctl.measure_end - ctl.warmup_end) / 1e9 : 0;
    const double sampled_s =
        window_end > window_start ? static_cast<double>(window_end - window_start) / 1e9 : 0;
    const double per_s = window_s > 0 ? 1.0 / window_s : 0;
    const double deliveries_per_s = static_cast<double>(all.window_deliveries) * per_s;
    const double server_cpu_pct = server_cpu0 >= 0 && server_cpu1 >= 0 && sampled_s > 0
                                      ? 100.0 * (server_cpu1 - server_cpu0) / sampled_s
                                      : -1.0;

    report r("fanout");
    r.add("url", opt.url)
        .add("rooms", opt.rooms)
        .add("subscribers_per_room", opt.subscribers)
        .add("publishers_per_room", opt.publishers)
        .add("connections", connections)
        .add("connected", opened)
        .add("joined", joined)
        .add("setup_s", setup_s, 2)
        .add("threads", threads)
        .add("size_bytes", static_cast<uint64_t>(opt.size))
        .add("inflight_per_room", opt.rate > 0 && !opt.inflight_given ? fanout_rate_default_cap : opt.inflight)
        .add("rate_target", opt.rate, 0)
        .add("window_s", window_s, 3)
        .add("cpu_sampled_s", sampled_s, 3)
        .add("drain_s", drain_s, 2)
        .add("publications", all.window_acks)
        .add("publications_per_s", static_cast<double>(all.window_acks) * per_s, 0)
        .add("deliveries", all.window_deliveries)
        .add("deliveries_per_s", deliveries_per_s, 0)
        .add("mb_per_s", deliveries_per_s * static_cast<double>(opt.size) / 1e6, 2)
        .add_latency("latency", all.latency)
        .add("client_cpu_pct", sampled_s > 0 ? 100.0 * (cpu1 - cpu0) / sampled_s : 0.0, 1);
    if (!opt.pids.empty()) {
        r.add("server_cpu_pct", server_cpu_pct, 1);
        r.add("deliveries_per_server_cpu_s",
              server_cpu_pct > 0 ? deliveries_per_s / (server_cpu_pct / 100.0) : -1.0, 0);
        r.add("server_rss_bytes", static_cast<int64_t>(server_rss));
    }
    r.add("publications_total", all.published)
        .add("deliveries_total", all.deliveries)
        .add("self_deliveries", all.self_deliveries)
        .add("lost", all.lost)
        .add("duplicates", all.duplicates)
        .add("out_of_order", all.out_of_order)
        .add("unexpected", all.unexpected)
        .add("misrouted", all.misrouted)
        .add("bad_payloads", all.bad_payloads)
        .add("malformed", all.malformed)
        .add("bad_acks", all.bad_acks)
        .add("server_errors", all.server_errors)
        .add("unacked", all.unacked)
        .add("other_pushes", all.other_pushes)
        .add("rate_stalls", all.rate_stalls)
        .add("frames", all.frames)
        .add("array_frames", all.array_frames)
        .add("deflate", opt.deflate)
        .add("text_payload", opt.text_payload)
        .add("rx_bytes_per_frame", all.frames ? static_cast<double>(all.counters.bytes_received) /
                                                    static_cast<double>(all.frames)
                                              : 0.0);
    if (!all.first_problem.empty()) {
        r.add("first_problem", all.first_problem);
    }
    r.add_errors(all.counters, all.verdict_errors());
    if (!all.fatal.empty()) {
        r.add("fatal", all.fatal);
    }
    r.print(opt.json);

    // A run that lost connections or deliveries measured something other
    // than what it claims.
    if (setup_failed || !all.fatal.empty() || all.window_deliveries == 0 || all.counters.errors() > 0 ||
        all.verdict_errors() > 0) {
        return 1;
    }
    return 0;
}

} // namespace wsbench
