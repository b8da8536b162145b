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
#include "core/worker.h"

namespace {

using wsgate::core::config;
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

}  // namespace

int main(int argc, char** argv) {
    config cfg;
    if (int rc = wsgate::core::parse_command_line(argc, argv, cfg); rc >= 0) {
        return rc;
    }
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
            std::fprintf(stderr, "wsgate: %s\n", error.c_str());
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
            std::fprintf(stderr, "wsgate: worker setup failed: %s\n", std::strerror(-w->started()));
            failed.store(1);
        }
    }
    int status = 0;
    if (!failed.load()) {
        std::fprintf(stderr, "wsgate: listening on %s:%u with %u worker%s%s\n", cfg.listen_host.c_str(), port,
                     threads, threads == 1 ? "" : "s", cfg.echo ? " (echo on /echo)" : "");
        int sig = 0;
        sigwait(&wait_set, &sig);
        if (sig == SIGUSR1) {
            status = 1;
        }
    } else {
        status = 1;
    }
    shared.draining.store(true, std::memory_order_relaxed);
    for (auto& w : workers) {
        w->stop();
    }
    if (status == 0) {
        std::fprintf(stderr, "wsgate: draining (a second signal stops at once)\n");
        timespec poll{0, 100'000'000};
        while (finished.load() < workers.size()) {
            int sig = sigtimedwait(&wait_set, nullptr, &poll);
            if (sig == SIGTERM || sig == SIGINT) {
                std::fprintf(stderr, "wsgate: second signal during the drain: exiting now\n");
                std::fflush(stderr);
                _exit(1);
            }
        }
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
        std::string line = "wsgate: worker " + std::to_string(i) + ":";
        for (const wsgate::core::stat_field& f : wsgate::core::stat_fields) {
            line += ' ';
            line += f.name;
            line += '=';
            line += std::to_string((st.*f.member).load(std::memory_order_relaxed));
        }
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    return status;
}
