// wsgate entry point: parse flags, open one SO_REUSEPORT listener per worker,
// start the workers pinned one per CPU, wait for SIGTERM/SIGINT, stop them, exit 0.
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

    std::vector<std::unique_ptr<worker>> workers;
    std::vector<std::thread> pool;
    std::atomic<int> failed{0};
    for (unsigned i = 0; i < threads; ++i) {
        workers.push_back(std::make_unique<worker>(i, cpus[i % cpus.size()], fds[i], cfg));
    }
    for (unsigned i = 0; i < threads; ++i) {
        pool.emplace_back([&, i] {
            if (workers[i]->run() < 0) {
                failed.store(1);
                kill(getpid(), SIGUSR1);
            }
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
    for (auto& w : workers) {
        w->stop();
    }
    for (auto& t : pool) {
        t.join();
    }
    if (failed.load()) {
        status = 1;
    }
    // One line per worker at exit: what it did (the metrics endpoint comes with issue 5).
    for (size_t i = 0; i < workers.size(); ++i) {
        const auto& st = workers[i]->stats();
        auto get = [](const std::atomic<uint64_t>& v) { return static_cast<unsigned long long>(v.load()); };
        std::fprintf(stderr,
                     "wsgate: worker %zu: accepted=%llu closed=%llu handshake_failures=%llu "
                     "handshake_timeouts=%llu messages_in=%llu messages_out=%llu sends=%llu enobufs=%llu "
                     "outbound_overflow_closes=%llu accept_errors=%llu\n",
                     i, get(st.accepted), get(st.closed), get(st.handshake_failures), get(st.handshake_timeouts),
                     get(st.messages_in), get(st.messages_out), get(st.sends), get(st.enobufs),
                     get(st.outbound_overflow_closes), get(st.accept_errors));
    }
    return status;
}
