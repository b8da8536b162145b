// wsgate entry point: parse flags, open one SO_REUSEPORT listener per worker,
// start the workers pinned one per CPU, wait for SIGTERM/SIGINT, drain, exit 0.
//
// Graceful drain (docs/operations.md): at the first SIGTERM/SIGINT /readyz turns
// 503 and every listener closes; after --drain-delay-ms the clients get a
// server_shutdown notice (jittered reconnect_in_ms) and a close 1001, in batches
// over --drain-spread-ms; connections still open --close-timeout-ms later are
// cut; each worker's Redis presence goes with its connections. A second signal
// during the drain exits at once (status 1).
//
// Signals are blocked in every thread and taken synchronously here with
// sigwait(), so no handler ever runs on a worker.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/cli.h"
#include "core/config.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/options.h"
#include "core/sd_notify.h"
#include "core/worker.h"

namespace {

using wsgate::core::config;
using wsgate::core::log_level;
namespace systemd = wsgate::core::systemd;
using wsgate::core::worker;

// CPUs this process may run on (respects taskset/cgroups), in order.
std::vector<int> usable_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int i = 0; i < CPU_SETSIZE; ++i) {
            if (CPU_ISSET(i, &set)) {
                cpus.push_back(i);
            }
        }
    }
    if (cpus.empty()) {
        cpus.push_back(-1);  // unknown: do not pin
    }
    return cpus;
}

std::string redacted_redis(const config& cfg) {
    const wsgate::core::option_spec* o = wsgate::core::find_option_by_key("redis.url");
    std::string v = wsgate::core::option_value_toml(*o, cfg);
    return v.size() >= 2 ? v.substr(1, v.size() - 2) : v;  // without the TOML quotes
}

// What the main thread tells systemd while the workers run: STATUS with the
// connection counts (when they change), WATCHDOG=1 while every worker loop
// turns, EXTEND_TIMEOUT_USEC during the drain.
struct notify_state {
    explicit notify_state(const std::vector<std::unique_ptr<worker>>& w)
        : workers(w), watchdog_ms(systemd::watchdog_usec() / 1000) {}

    static uint64_t now_ms() {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
    }

    uint64_t open_connections() const {
        uint64_t n = 0;
        for (const auto& w : workers) {
            uint64_t a = w->stats().accepted.load(std::memory_order_relaxed);
            uint64_t c = w->stats().closed.load(std::memory_order_relaxed);
            n += a >= c ? a - c : 0;
        }
        return n;
    }

    std::string status_text(bool draining) const {
        std::string s = draining ? "draining: " : "";
        uint64_t ws = 0;
        for (const auto& w : workers) {
            ws += wsgate::core::websockets_open(w->stats());
        }
        s += std::to_string(ws) + " WebSocket connections (" +
             std::to_string(open_connections()) + " TCP) on " + std::to_string(workers.size()) + " worker" +
             (workers.size() == 1 ? "" : "s");
        return s;
    }

    void tick(bool draining) {
        uint64_t now = now_ms();
        if (now - last_status_ms >= 2000) {
            last_status_ms = now;
            std::string st = status_text(draining);
            if (st != last_status) {
                systemd::notify("STATUS=" + st);
                last_status = st;
            }
        }
        if (draining && now - last_extend_ms >= 1000) {
            extend();
        }
        if (watchdog_ms && now - last_watchdog_ms >= watchdog_ms / 4) {
            std::vector<uint64_t> ticks;
            for (const auto& w : workers) {
                ticks.push_back(w->last_tick_ms());
            }
            // A worker finished with the drain no longer ticks: only running ones count.
            int stale = draining ? -1 : systemd::first_stale_worker(ticks, now, watchdog_ms / 2);
            if (stale < 0) {
                systemd::notify("WATCHDOG=1");
                last_watchdog_ms = now;
                stalled_logged = false;
            } else if (!stalled_logged) {
                wsgate::core::log_line(log_level::error, "worker_stalled")
                    .kv("worker", stale)
                    .kv("since_ms", now - ticks[static_cast<size_t>(stale)])
                    .kv("action", "withholding the systemd watchdog keep-alive");
                stalled_logged = true;
            }
        }
    }

    void extend() {
        uint64_t now = now_ms();
        last_extend_ms = now;
        if (now < drain_bound_ms) {
            systemd::notify("EXTEND_TIMEOUT_USEC=" + std::to_string((drain_bound_ms - now + 3000) * 1000));
        }
    }

    const std::vector<std::unique_ptr<worker>>& workers;
    uint64_t watchdog_ms;
    uint64_t last_status_ms = now_ms();
    uint64_t last_watchdog_ms = 0;
    uint64_t last_extend_ms = 0;
    uint64_t drain_bound_ms = 0;
    std::string last_status;
    bool stalled_logged = false;
};

}  // namespace

int main(int argc, char** argv) {
    config cfg;
    if (int rc = wsgate::core::parse_command_line(argc, argv, cfg); rc >= 0) {
        return rc;
    }
    wsgate::core::set_log_level(cfg.log);
    std::vector<int> cpus = usable_cpus();
    unsigned threads = cfg.threads ? cfg.threads : static_cast<unsigned>(cpus.size());

    // Block the signals we wait for before any thread starts, so every thread inherits the mask.
    sigset_t wait_set;
    sigemptyset(&wait_set);
    sigaddset(&wait_set, SIGTERM);
    sigaddset(&wait_set, SIGINT);
    sigaddset(&wait_set, SIGUSR1);  // a worker failed
    pthread_sigmask(SIG_BLOCK, &wait_set, nullptr);
    signal(SIGPIPE, SIG_IGN);

    std::vector<int> fds;
    uint16_t port = cfg.listen_port;
    for (unsigned i = 0; i < threads; ++i) {
        std::string error;
        int fd = wsgate::core::open_listener(cfg.listen_host, port, cfg.listen_backlog, error);
        if (fd < 0) {
            wsgate::core::log_line(log_level::error, "listen_failed").kv("error", error);
            return 1;
        }
        if (port == 0) {
            port = wsgate::core::bound_port(fd);  // the others join the same port
        }
        fds.push_back(fd);
    }

    // Declared before the workers: it outlives them (their rings stay open
    // until every worker is destroyed, so a late MSG_RING never hits a reused fd).
    wsgate::core::hub shared(threads);
    std::vector<std::unique_ptr<worker>> workers;
    std::vector<std::thread> pool;
    std::atomic<int> failed{0};
    std::atomic<size_t> finished{0};  // workers whose run() returned
    for (unsigned i = 0; i < threads; ++i) {
        workers.push_back(std::make_unique<worker>(i, cpus[i % cpus.size()], fds[i], cfg, shared));
        shared.stats.push_back(&workers.back()->stats());
    }
    for (unsigned i = 0; i < threads; ++i) {
        pool.emplace_back([&, i] {
            if (workers[i]->run() < 0) {
                failed.store(1);
                kill(getpid(), SIGUSR1);
            }
            finished.fetch_add(1);
        });
    }
    // Wait until every worker has its ring up and its accept armed.
    for (auto& w : workers) {
        while (w->started() == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (w->started() < 0) {
            wsgate::core::log_line(log_level::error, "worker_setup_failed").kv("error", std::strerror(-w->started()));
            failed.store(1);
        }
    }
    notify_state ns(workers);
    int status = 0;
    if (failed.load()) {
        status = 1;
    } else {
        std::string addr = cfg.listen_host + ":" + std::to_string(port);
        wsgate::core::log_line(log_level::info, "listening")
            .kv("addr", addr)
            .kv("workers", threads)
            .kv("echo", cfg.echo ? "on" : "off")
            .kv("redis", cfg.redis_url.empty() ? std::string("off") : redacted_redis(cfg))
            .kv("server_id", cfg.server_id)
            .kv("config", cfg.config_file.empty() ? std::string("none") : cfg.config_file);
        systemd::notify("READY=1\nSTATUS=" + ns.status_text(false));
        for (;;) {
            timespec step{0, 250'000'000};
            int sig = sigtimedwait(&wait_set, nullptr, &step);
            if (sig == SIGUSR1) {
                status = 1;
                break;
            }
            if (sig == SIGTERM || sig == SIGINT) {
                wsgate::core::log_line(log_level::info, "drain_started")
                    .kv("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")
                    .kv("connections", ns.open_connections())
                    .kv("drain_delay_ms", cfg.drain_delay_ms)
                    .kv("drain_spread_ms", cfg.drain_spread_ms)
                    .kv("close_timeout_ms", cfg.shutdown_timeout_ms);
                break;
            }
            ns.tick(false);
        }
        // The drain's expected length: systemd's stop timeout is extended while
        // it lasts (EXTEND_TIMEOUT_USEC), and no further: a wedged drain is still killed.
        ns.drain_bound_ms = ns.now_ms() + cfg.drain_delay_ms + cfg.drain_spread_ms + cfg.shutdown_timeout_ms + 2000;
        systemd::notify("STOPPING=1\nSTATUS=" + ns.status_text(true));
        ns.extend();
    }
    shared.draining.store(true, std::memory_order_relaxed);
    for (auto& w : workers) {
        w->stop();
    }
    if (status == 0) {
        timespec poll{0, 100'000'000};
        uint64_t t0 = ns.now_ms();
        while (finished.load() < workers.size()) {
            int sig = sigtimedwait(&wait_set, nullptr, &poll);
            if (sig == SIGTERM || sig == SIGINT) {
                wsgate::core::log_line(log_level::warn, "second_signal").kv("action", "exiting now").kv("status", 1);
                _exit(1);
            }
            ns.tick(true);
        }
        wsgate::core::log_line(log_level::info, "drained").kv("took_ms", ns.now_ms() - t0);
    }
    for (auto& t : pool) {
        t.join();
    }
    if (failed.load()) {
        status = 1;
    }
    // One line per worker at exit: what it did (the same counters as /metrics).
    for (size_t i = 0; i < workers.size(); ++i) {
        const auto& st = workers[i]->stats();
        wsgate::core::log_line line(log_level::info, "worker_stats");
        line.kv("worker", static_cast<uint64_t>(i));
        for (const wsgate::core::stat_field& f : wsgate::core::stat_fields) {
            line.kv(f.name, (st.*f.member).load(std::memory_order_relaxed));
        }
    }
    wsgate::core::log_line(status == 0 ? log_level::info : log_level::error, "exit").kv("status", status);
    return status;
}
