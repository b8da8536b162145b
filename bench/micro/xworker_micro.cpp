// Cross-worker hand-off micro-benchmark: how should a worker pass an xmsg to
// another worker?
//
//   (A) spsc: push the pointer into the (sender, receiver) spsc_ring of
//       core/hub.h, and wake the receiver with ONE IORING_OP_MSG_RING per loop
//       turn (what core/worker.cpp does); the receiver drains the ring when it
//       sees that CQE.
//   (B) msg:  one IORING_OP_MSG_RING per message, the xmsg pointer riding in the
//       CQE's user_data; the receiver gets one CQE per message.
//
// Two threads pinned to two CPUs, each owning one ring set up like a worker's
// (SINGLE_ISSUER | DEFER_TASKRUN | CQSIZE | SUBMIT_ALL, sq 4096, cq 65536,
// registered ring fd), each blocking in io_uring_submit_and_wait(ring, 1).
//
// 1. throughput: the sender makes N heap xmsg (freed by the receiver) in
//    batches of B per loop turn; messages/s, CPU ns per message on each side
//    (CLOCK_THREAD_CPUTIME_ID, so kernel time spent on each thread's behalf
//    counts), MSG_RING SQEs, receiver CQEs and loop turns.
//    Backpressure: (A) a full spsc_ring ends the turn, the rest is retried next
//    turn; (B) the receiver's CQ is the queue, so the sender keeps at most
//    --window messages in flight (the receiver publishes how many it consumed,
//    one store per turn). A blocked sender waits 20 us on its own ring before
//    its next turn (so a blocked turn does not burn CPU). With --window 0, (B)
//    has no flow control and the receiver's CQ can overflow (give the receiver
//    work with --rcv-work-ns so that it, not the sender, is the bottleneck): the table counts
//    failed MSG_RINGs (sender CQEs with res < 0, e.g. -EOVERFLOW), receiver turns
//    that saw IORING_SQ_CQ_OVERFLOW, and CQEs the kernel dropped (cq.koverflow).
//    Note: a DEFER_TASKRUN target is posted to through task_work in its own
//    context (kernel >= 6.10), so the sender never sees -EOVERFLOW there; an
//    overflowing CQ spills into the kernel's overflow list instead.
// 2. latency: ping-pong of one message, both threads blocking in
//    io_uring_submit_and_wait; round trip p50/p99/p99.9.
//
// Every scenario is bounded (--cap-s, --lat-cap-s; a watchdog wakes a stuck
// thread), and each cell of the tables is the median over --repeat runs.
// Linked with jemalloc, like the server: with glibc malloc, freeing on the
// receiver what the sender allocated costs arena locks, trims and refaults
// that swamp the difference being measured.
#include "core/hub.h"

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using wsgate::core::spsc_ring;
using wsgate::core::xkind;
using wsgate::core::xmsg;
using wsgate::core::xmsg_release;

constexpr unsigned sq_entries = 4096;
constexpr unsigned cq_entries = 65536;

// user_data tags; never valid pointers.
constexpr uint64_t tag_wake = 1;    // (A) "your spsc_ring has something"
constexpr uint64_t tag_fin = 2;     // sender is done
constexpr uint64_t tag_kick = 3;    // watchdog
constexpr uint64_t tag_ignore = 4;  // sender-side user_data of a control MSG_RING

std::atomic<uint64_t> g_sink{0};

enum class design { spsc, msg };
const char* name(design d) { return d == design::spsc ? "A spsc+wake" : "B msg/ptr"; }

struct options {
    uint64_t messages = 500'000;
    std::vector<unsigned> batches{1, 8, 64, 512};
    unsigned round_trips = 100'000;
    unsigned repeat = 3;
    double cap_s = 1.5;      // per throughput run
    double lat_cap_s = 4.0;  // per ping-pong run
    uint64_t window = cq_entries - sq_entries;
    int cpu[2] = {0, 1};
    unsigned rcv_work_ns = 0;  // receiver's simulated work per message (fan-out)
    bool throughput = true;
    bool latency = true;
    bool verbose = false;
};

const char* usage =
    "usage: wsgate-xworker-micro [--messages N=500000] [--batches 1,8,64,512] [--round-trips N=100000]\n"
    "                            [--repeat R=3] [--cap-s S=1.5] [--lat-cap-s S=4] [--window W=61440 (0: none)]\n"
    "                            [--rcv-work-ns NS=0] [--cpus 0,1] [--only throughput|latency] [--verbose]\n";

[[noreturn]] void die(const char* what, int err) {
    std::fprintf(stderr, "xworker-micro: %s: %s\n", what, std::strerror(err < 0 ? -err : err));
    std::exit(1);
}

uint64_t clock_ns(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}
uint64_t now_ns() { return clock_ns(CLOCK_MONOTONIC); }
uint64_t cpu_ns() { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); rc != 0) {
        die("pthread_setaffinity_np", rc);
    }
}

// A worker's ring (core/worker.cpp: worker::setup).
void ring_init(io_uring* r) {
    io_uring_params p;
    std::memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
              IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = cq_entries;
    if (int ret = io_uring_queue_init_params(sq_entries, r, &p); ret < 0) {
        die("io_uring_queue_init_params", ret);
    }
    io_uring_register_ring_fd(r);  // optional, as in the worker
}

io_uring_sqe* get_sqe(io_uring* r) {
    io_uring_sqe* sqe = io_uring_get_sqe(r);
    if (sqe == nullptr) {
        io_uring_submit(r);
        sqe = io_uring_get_sqe(r);
        if (sqe == nullptr) {
            die("io_uring_get_sqe", EBUSY);
        }
    }
    return sqe;
}

// A MSG_RING posting a CQE {user_data = target_ud, res = 0} into target_fd's
// ring; our own CQE only if it fails (then with own_ud).
void prep_msg(io_uring* r, int target_fd, uint64_t target_ud, uint64_t own_ud) {
    io_uring_sqe* sqe = get_sqe(r);
    io_uring_prep_msg_ring(sqe, target_fd, 0, target_ud, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, own_ud);
}

xmsg* make_msg(uint64_t seq, uint16_t origin) {
    auto* m = new xmsg;
    m->kind = xkind::publish;
    m->origin = origin;
    m->query = seq;
    m->key = "room-1";  // short strings: one allocation per message, like a small publication
    m->from = "user-42";
    m->data = "{\"n\":1}";
    return m;
}

void wait_us(io_uring* r, long us) {
    __kernel_timespec ts{0, us * 1000};
    io_uring_cqe* cqe = nullptr;
    io_uring_wait_cqe_timeout(r, &cqe, &ts);  // -ETIME expected; a CQE is reaped by the caller
}

// ---------------------------------------------------------------------------
// Per-scenario shared state.

struct shared {
    design d;
    unsigned batch = 1;
    uint64_t messages = 0;
    uint64_t window = 0;
    unsigned rcv_work_ns = 0;
    int cpu[2] = {0, 1};
    std::unique_ptr<spsc_ring> fwd = std::make_unique<spsc_ring>();   // thread 0 -> 1
    std::unique_ptr<spsc_ring> back = std::make_unique<spsc_ring>();  // thread 1 -> 0
    std::atomic<int> fd[2] = {-1, -1};
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> sent_final{0};
    alignas(64) std::atomic<uint64_t> consumed{0};  // (B) flow control: receiver -> sender
    alignas(64) std::barrier<> up{3};               // both rings up (threads + watchdog)
    std::barrier<> down{2};                         // keep both rings alive until both are done
    std::mutex mu;
    std::condition_variable cv;
    int finished = 0;

    void done() {
        std::lock_guard lock(mu);
        ++finished;
        cv.notify_all();
    }
};

struct tput_result {
    double secs = 0;
    uint64_t received = 0;
    uint64_t snd_cpu = 0, rcv_cpu = 0;  // ns
    uint64_t sqes = 0;                  // data/wake MSG_RINGs (not counting the final FIN)
    uint64_t snd_turns = 0, stalls = 0, fails = 0;
    uint64_t cqes = 0, rcv_turns = 0, ovf_seen = 0, ovf_dropped = 0, order_err = 0;
    bool capped = false, kicked = false;
};

void tput_sender(shared& s, tput_result& res) {
    pin(s.cpu[0]);
    io_uring r;
    ring_init(&r);
    s.fd[0].store(r.ring_fd);
    s.up.arrive_and_wait();
    const int target = s.fd[1].load();
    const uint64_t c0 = cpu_ns();

    uint64_t seq = 0, consumed_cache = 0;
    xmsg* pending = nullptr;    // (A) made but did not fit the ring
    std::deque<xmsg*> retry;    // (B) MSG_RINGs that failed
    while ((seq < s.messages || pending != nullptr || !retry.empty()) &&
           !s.stop.load(std::memory_order_relaxed)) {
        ++res.snd_turns;
        bool blocked = false;
        if (s.d == design::spsc) {
            unsigned pushed = 0;
            for (unsigned k = 0; k < s.batch && (pending != nullptr || seq < s.messages); ++k) {
                if (pending == nullptr) {
                    pending = make_msg(seq++, 0);
                }
                if (!s.fwd->push(pending)) {
                    blocked = true;
                    break;
                }
                pending = nullptr;
                ++pushed;
            }
            if (pushed != 0) {
                prep_msg(&r, target, tag_wake, tag_ignore);
                ++res.sqes;
            }
        } else {
            unsigned k = 0;
            for (; k < s.batch && !retry.empty(); ++k) {
                xmsg* m = retry.front();
                retry.pop_front();
                prep_msg(&r, target, reinterpret_cast<uint64_t>(m), reinterpret_cast<uint64_t>(m));
            }
            for (; k < s.batch && seq < s.messages; ++k) {
                if (s.window != 0 && seq - consumed_cache >= s.window) {
                    consumed_cache = s.consumed.load(std::memory_order_acquire);
                    if (seq - consumed_cache >= s.window) {
                        blocked = true;
                        break;
                    }
                }
                xmsg* m = make_msg(seq++, 0);
                prep_msg(&r, target, reinterpret_cast<uint64_t>(m), reinterpret_cast<uint64_t>(m));
            }
            res.sqes += k;
        }
        io_uring_submit(&r);
        // Only failed MSG_RINGs post a CQE here (success is skipped).
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&r, head, cqe) {
            ++seen;
            if (cqe->res < 0) {
                ++res.fails;
                if (res.fails <= 3) {
                    std::fprintf(stderr, "xworker-micro: MSG_RING failed: %s\n", std::strerror(-cqe->res));
                }
                if (cqe->user_data > tag_ignore) {
                    retry.push_back(reinterpret_cast<xmsg*>(cqe->user_data));
                }
            }
        }
        io_uring_cq_advance(&r, seen);
        if (blocked) {
            ++res.stalls;
            wait_us(&r, 20);
        }
    }
    // Stopped early: what was never handed over is ours to free.
    uint64_t sent = seq;
    if (pending != nullptr) {
        xmsg_release(pending);
        --sent;
    }
    sent -= retry.size();
    for (xmsg* m : retry) {
        xmsg_release(m);
    }
    s.sent_final.store(sent, std::memory_order_release);
    prep_msg(&r, target, tag_fin, tag_ignore);
    io_uring_submit(&r);
    res.snd_cpu = cpu_ns() - c0;
    s.done();
    s.down.arrive_and_wait();
    io_uring_queue_exit(&r);
}

void tput_receiver(shared& s, tput_result& res, uint64_t t_start_hint) {
    pin(s.cpu[1]);
    io_uring r;
    ring_init(&r);
    s.fd[1].store(r.ring_fd);
    s.up.arrive_and_wait();
    const uint64_t t0 = now_ns();
    const uint64_t c0 = cpu_ns();
    (void)t_start_hint;

    uint64_t expect = 0, sink = 0;
    bool fin = false;
    auto process = [&](xmsg* m) {
        if (m->query != expect) {
            ++res.order_err;
        }
        expect = m->query + 1;
        sink += m->data.size() + m->key.size();
        if (s.rcv_work_ns != 0) {
            for (uint64_t until = now_ns() + s.rcv_work_ns; now_ns() < until;) {
            }
        }
        xmsg_release(m);
        ++res.received;
    };
    auto drain = [&] {
        while (xmsg* m = s.fwd->pop()) {
            process(m);
        }
    };
    for (;;) {
        int ret = io_uring_submit_and_wait(&r, 1);
        if (ret < 0 && ret != -EINTR && ret != -ETIME) {
            die("io_uring_submit_and_wait", ret);
        }
        ++res.rcv_turns;
        if (IO_URING_READ_ONCE(*r.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
            ++res.ovf_seen;
        }
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        bool kicked = false;
        io_uring_for_each_cqe(&r, head, cqe) {
            ++seen;
            const uint64_t ud = cqe->user_data;
            if (ud == tag_wake) {
                drain();
            } else if (ud == tag_fin) {
                fin = true;
                drain();
            } else if (ud == tag_kick) {
                kicked = true;
            } else if (ud > tag_ignore) {
                process(reinterpret_cast<xmsg*>(ud));
            }
        }
        io_uring_cq_advance(&r, seen);
        res.cqes += seen;
        if (s.d == design::msg) {
            s.consumed.store(res.received, std::memory_order_release);
        }
        if (fin && res.received >= s.sent_final.load(std::memory_order_acquire)) {
            break;
        }
        if (kicked && s.stop.load()) {
            drain();
            res.kicked = true;
            break;
        }
    }
    res.secs = double(now_ns() - t0) / 1e9;
    res.rcv_cpu = cpu_ns() - c0;
    res.ovf_dropped = IO_URING_READ_ONCE(*r.cq.koverflow);
    res.cqes -= 1;  // the FIN
    g_sink.fetch_add(sink, std::memory_order_relaxed);  // keep the reads alive
    s.done();
    s.down.arrive_and_wait();
    // (B) after a kick: messages still in flight would be lost with the ring; a
    // kicked run is reported as invalid anyway.
    io_uring_queue_exit(&r);
}

// ---------------------------------------------------------------------------
// Latency: ping-pong of one message.

struct lat_result {
    std::vector<uint32_t> rtt_ns;
    uint64_t ping_cpu = 0, pong_cpu = 0;
    uint64_t fails = 0;
    bool kicked = false;
};

void pinger(shared& s, lat_result& res, unsigned round_trips, unsigned warmup) {
    pin(s.cpu[0]);
    io_uring r;
    ring_init(&r);
    s.fd[0].store(r.ring_fd);
    s.up.arrive_and_wait();
    const int target = s.fd[1].load();
    res.rtt_ns.reserve(round_trips);
    uint64_t c0 = 0;
    for (unsigned i = 0; i < warmup + round_trips && !s.stop.load(std::memory_order_relaxed); ++i) {
        if (i == warmup) {
            c0 = cpu_ns();
        }
        const uint64_t t0 = now_ns();
        xmsg* m = make_msg(i, 0);
        if (s.d == design::spsc) {
            if (!s.fwd->push(m)) {
                die("spsc push", ENOSPC);
            }
            prep_msg(&r, target, tag_wake, tag_ignore);
        } else {
            prep_msg(&r, target, reinterpret_cast<uint64_t>(m), reinterpret_cast<uint64_t>(m));
        }
        bool got = false;
        while (!got) {
            int ret = io_uring_submit_and_wait(&r, 1);
            if (ret < 0 && ret != -EINTR && ret != -ETIME) {
                die("io_uring_submit_and_wait", ret);
            }
            unsigned head, seen = 0;
            io_uring_cqe* cqe;
            io_uring_for_each_cqe(&r, head, cqe) {
                ++seen;
                const uint64_t ud = cqe->user_data;
                xmsg* reply = nullptr;
                if (cqe->res < 0) {
                    ++res.fails;
                    got = true;  // count it and move on
                } else if (ud == tag_wake) {
                    reply = s.back->pop();
                } else if (ud == tag_kick) {
                    res.kicked = true;
                    got = true;
                } else if (ud > tag_ignore) {
                    reply = reinterpret_cast<xmsg*>(ud);
                }
                if (reply != nullptr) {
                    if (reply->query != i) {
                        die("ping-pong: wrong reply", EPROTO);
                    }
                    xmsg_release(reply);
                    got = true;
                }
            }
            io_uring_cq_advance(&r, seen);
        }
        if (i >= warmup && !res.kicked) {
            res.rtt_ns.push_back(uint32_t(std::min<uint64_t>(now_ns() - t0, UINT32_MAX)));
        }
    }
    res.ping_cpu = cpu_ns() - c0;
    prep_msg(&r, target, tag_fin, tag_ignore);
    io_uring_submit(&r);
    s.done();
    s.down.arrive_and_wait();
    io_uring_queue_exit(&r);
}

void ponger(shared& s, lat_result& res, unsigned warmup) {
    pin(s.cpu[1]);
    io_uring r;
    ring_init(&r);
    s.fd[1].store(r.ring_fd);
    s.up.arrive_and_wait();
    const int target = s.fd[0].load();
    uint64_t c0 = cpu_ns(), handled = 0;
    bool done = false;
    while (!done) {
        // Submits last turn's reply, then sleeps until the next CQE.
        int ret = io_uring_submit_and_wait(&r, 1);
        if (ret < 0 && ret != -EINTR && ret != -ETIME) {
            die("io_uring_submit_and_wait", ret);
        }
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        bool wake = false;
        io_uring_for_each_cqe(&r, head, cqe) {
            ++seen;
            const uint64_t ud = cqe->user_data;
            auto reply_to = [&](xmsg* m) {
                if (++handled == warmup) {
                    c0 = cpu_ns();
                }
                xmsg* reply = make_msg(m->query, 1);
                xmsg_release(m);
                return reply;
            };
            if (cqe->res < 0) {
                ++res.fails;
            } else if (ud == tag_fin || ud == tag_kick) {
                done = true;
            } else if (ud == tag_wake) {
                while (xmsg* m = s.fwd->pop()) {
                    if (!s.back->push(reply_to(m))) {
                        die("spsc push", ENOSPC);
                    }
                    wake = true;
                }
            } else if (ud > tag_ignore) {
                xmsg* reply = reply_to(reinterpret_cast<xmsg*>(ud));
                prep_msg(&r, target, reinterpret_cast<uint64_t>(reply), reinterpret_cast<uint64_t>(reply));
            }
        }
        io_uring_cq_advance(&r, seen);
        if (wake) {
            prep_msg(&r, target, tag_wake, tag_ignore);
        }
    }
    res.pong_cpu = cpu_ns() - c0;
    s.done();
    s.down.arrive_and_wait();
    io_uring_queue_exit(&r);
}

// ---------------------------------------------------------------------------
// Watchdog: bounds every scenario. After cap_s it asks the threads to stop; if
// one is still asleep in its ring 2 s later, it is woken with a MSG_RING.

struct watchdog {
    io_uring ring;
    watchdog() {
        if (int ret = io_uring_queue_init(8, &ring, 0); ret < 0) {
            die("io_uring_queue_init", ret);
        }
    }
    ~watchdog() { io_uring_queue_exit(&ring); }

    // Returns true when the cap stopped the scenario.
    bool guard(shared& s, double cap_s) {
        s.up.arrive_and_wait();
        std::unique_lock lock(s.mu);
        auto ready = [&] { return s.finished == 2; };
        if (s.cv.wait_for(lock, std::chrono::duration<double>(cap_s), ready)) {
            return false;
        }
        s.stop.store(true);
        if (!s.cv.wait_for(lock, std::chrono::seconds(2), ready)) {
            for (int fd : {s.fd[0].load(), s.fd[1].load()}) {
                io_uring_prep_msg_ring(io_uring_get_sqe(&ring), fd, 0, tag_kick, 0);
            }
            io_uring_submit_and_wait(&ring, 2);
            io_uring_cq_advance(&ring, 2);
            if (!s.cv.wait_for(lock, std::chrono::seconds(2), ready)) {
                std::fprintf(stderr, "xworker-micro: a thread is stuck, giving up\n");
                std::_Exit(2);
            }
        }
        return true;
    }
};

tput_result run_tput(watchdog& wd, const options& o, design d, unsigned batch, uint64_t messages) {
    shared s;
    s.d = d;
    s.batch = batch;
    s.messages = messages;
    s.window = o.window;
    s.rcv_work_ns = o.rcv_work_ns;
    s.cpu[0] = o.cpu[0];
    s.cpu[1] = o.cpu[1];
    tput_result snd, rcv;
    std::thread a(tput_sender, std::ref(s), std::ref(snd));
    std::thread b(tput_receiver, std::ref(s), std::ref(rcv), 0);
    bool capped = wd.guard(s, o.cap_s);
    a.join();
    b.join();
    tput_result r = rcv;
    r.snd_cpu = snd.snd_cpu;
    r.sqes = snd.sqes;
    r.snd_turns = snd.snd_turns;
    r.stalls = snd.stalls;
    r.fails = snd.fails;
    r.capped = capped;
    return r;
}

lat_result run_lat(watchdog& wd, const options& o, design d) {
    shared s;
    s.d = d;
    s.cpu[0] = o.cpu[0];
    s.cpu[1] = o.cpu[1];
    lat_result ping, pong;
    const unsigned warmup = 1000;
    std::thread a(pinger, std::ref(s), std::ref(ping), o.round_trips, warmup);
    std::thread b(ponger, std::ref(s), std::ref(pong), warmup);
    wd.guard(s, o.lat_cap_s);
    a.join();
    b.join();
    ping.pong_cpu = pong.pong_cpu;
    ping.fails += pong.fails;
    ping.kicked = ping.kicked || s.stop.load();
    return ping;
}

// ---------------------------------------------------------------------------

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

template <class T, class F>
double med(const std::vector<T>& runs, F f) {
    std::vector<double> v;
    for (const T& r : runs) {
        v.push_back(f(r));
    }
    return median(v);
}

double pct(const std::vector<uint32_t>& sorted, double p) {
    if (sorted.empty()) {
        return 0;
    }
    size_t i = std::min(sorted.size() - 1, size_t(p / 100.0 * double(sorted.size())));
    return sorted[i] / 1000.0;
}

std::string loadavg() {
    char buf[128] = {};
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fgets(buf, sizeof(buf), f) == nullptr) {
            buf[0] = 0;
        }
        std::fclose(f);
    }
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') {
        s.pop_back();
    }
    return s;
}

std::vector<unsigned> parse_list(const char* arg) {
    std::vector<unsigned> v;
    for (const char* p = arg; *p;) {
        char* end;
        unsigned long x = std::strtoul(p, &end, 10);
        if (end == p) {
            break;
        }
        v.push_back(unsigned(x));
        p = *end == ',' ? end + 1 : end;
    }
    return v;
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fputs(usage, stderr);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--messages") {
            o.messages = std::strtoull(val(), nullptr, 10);
        } else if (a == "--batches") {
            o.batches = parse_list(val());
        } else if (a == "--round-trips") {
            o.round_trips = unsigned(std::strtoul(val(), nullptr, 10));
        } else if (a == "--repeat") {
            o.repeat = std::max(1u, unsigned(std::strtoul(val(), nullptr, 10)));
        } else if (a == "--cap-s") {
            o.cap_s = std::strtod(val(), nullptr);
        } else if (a == "--lat-cap-s") {
            o.lat_cap_s = std::strtod(val(), nullptr);
        } else if (a == "--rcv-work-ns") {
            o.rcv_work_ns = unsigned(std::strtoul(val(), nullptr, 10));
        } else if (a == "--window") {
            o.window = std::strtoull(val(), nullptr, 10);
        } else if (a == "--cpus") {
            auto v = parse_list(val());
            if (v.size() != 2) {
                std::fputs(usage, stderr);
                std::exit(2);
            }
            o.cpu[0] = int(v[0]);
            o.cpu[1] = int(v[1]);
        } else if (a == "--only") {
            std::string w = val();
            o.throughput = w == "throughput";
            o.latency = w == "latency";
        } else if (a == "--verbose") {
            o.verbose = true;
        } else {
            std::fputs(usage, a == "-h" || a == "--help" ? stdout : stderr);
            std::exit(a == "-h" || a == "--help" ? 0 : 2);
        }
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    options o = parse(argc, argv);
    watchdog wd;
    const uint64_t t_begin = now_ns();
    std::printf("xworker-micro: cpus %d,%d; ring sq %u cq %u; messages %llu; round trips %u; "
                "repeat %u (medians); B window %llu%s; receiver work %u ns/msg\n",
                o.cpu[0], o.cpu[1], sq_entries, cq_entries, (unsigned long long)o.messages, o.round_trips,
                o.repeat, (unsigned long long)o.window, o.window == 0 ? " (none)" : "", o.rcv_work_ns);
    std::printf("loadavg before: %s\n", loadavg().c_str());

    const design designs[] = {design::spsc, design::msg};
    if (o.throughput) {
        run_tput(wd, o, design::spsc, 64, o.messages / 10);  // warm-up (allocator, page faults)
        run_tput(wd, o, design::msg, 64, o.messages / 10);
        // runs[batch index][design]
        std::vector<std::vector<std::vector<tput_result>>> runs(
            o.batches.size(), std::vector<std::vector<tput_result>>(2));
        for (unsigned rep = 0; rep < o.repeat; ++rep) {
            for (size_t bi = 0; bi < o.batches.size(); ++bi) {
                for (int di = 0; di < 2; ++di) {
                    // Alternate which design goes first, so drift hits both.
                    design d = designs[(di + rep) % 2];
                    tput_result r = run_tput(wd, o, d, o.batches[bi], o.messages);
                    if (o.verbose) {
                        std::printf("  run %u %-12s B=%-4u %.3f Mmsg/s%s%s\n", rep, name(d), o.batches[bi],
                                    double(r.received) / r.secs / 1e6, r.capped ? " (capped)" : "",
                                    r.kicked ? " (kicked)" : "");
                    }
                    runs[bi][d == design::spsc ? 0 : 1].push_back(r);
                }
            }
        }
        std::printf("\nthroughput (sender cpu %d -> receiver cpu %d), medians of %u runs; per-message "
                    "columns divide by messages received\n",
                    o.cpu[0], o.cpu[1], o.repeat);
        std::printf("%-12s %5s %9s %8s %8s %8s %8s %8s %8s %7s %5s %5s %5s %5s\n", "design", "batch", "Mmsg/s",
                    "snd ns", "rcv ns", "sqe/msg", "cqe/msg", "rturn/m", "stalls", "capped", "fail", "ovfT",
                    "drop", "order");
        for (size_t bi = 0; bi < o.batches.size(); ++bi) {
            for (int di = 0; di < 2; ++di) {
                const auto& v = runs[bi][di];
                auto per = [](const tput_result& r, uint64_t x) { return double(x) / double(std::max<uint64_t>(1, r.received)); };
                int capped = 0;
                for (const auto& r : v) {
                    capped += r.capped || r.kicked;
                }
                std::printf("%-12s %5u %9.3f %8.1f %8.1f %8.4f %8.4f %8.4f %8.0f %4d/%-2u %5.0f %5.0f %5.0f %5.0f\n",
                            name(designs[di]), o.batches[bi],
                            med(v, [](const tput_result& r) { return double(r.received) / r.secs / 1e6; }),
                            med(v, [&](const tput_result& r) { return per(r, r.snd_cpu); }),
                            med(v, [&](const tput_result& r) { return per(r, r.rcv_cpu); }),
                            med(v, [&](const tput_result& r) { return per(r, r.sqes); }),
                            med(v, [&](const tput_result& r) { return per(r, r.cqes); }),
                            med(v, [&](const tput_result& r) { return per(r, r.rcv_turns); }),
                            med(v, [](const tput_result& r) { return double(r.stalls); }), capped, o.repeat,
                            med(v, [](const tput_result& r) { return double(r.fails); }),
                            med(v, [](const tput_result& r) { return double(r.ovf_seen); }),
                            med(v, [](const tput_result& r) { return double(r.ovf_dropped); }),
                            med(v, [](const tput_result& r) { return double(r.order_err); }));
            }
        }
        std::printf("  snd/rcv ns = thread CPU time (user+sys) per message; sqe = MSG_RING SQEs; rturn = "
                    "receiver io_uring_submit_and_wait returns;\n  stalls = sender turns blocked (A: spsc_ring "
                    "full, B: window full); fail = failed MSG_RINGs; ovfT = receiver turns that saw\n"
                    "  IORING_SQ_CQ_OVERFLOW; drop = cq.koverflow; order = messages out of order\n");
    }
    if (o.latency) {
        std::vector<std::vector<lat_result>> runs(2);
        for (unsigned rep = 0; rep < o.repeat; ++rep) {
            for (int di = 0; di < 2; ++di) {
                design d = designs[(di + rep) % 2];
                lat_result r = run_lat(wd, o, d);
                std::sort(r.rtt_ns.begin(), r.rtt_ns.end());
                if (o.verbose) {
                    std::printf("  run %u %-12s p50 %.1f us p99 %.1f us%s\n", rep, name(d), pct(r.rtt_ns, 50),
                                pct(r.rtt_ns, 99), r.kicked ? " (capped)" : "");
                }
                runs[d == design::spsc ? 0 : 1].push_back(std::move(r));
            }
        }
        std::printf("\nping-pong round trip (both threads blocking in io_uring_submit_and_wait), medians of %u "
                    "runs of %u round trips\n",
                    o.repeat, o.round_trips);
        std::printf("%-12s %8s %8s %8s %8s %8s %12s %12s %5s %7s %9s\n", "design", "p50 us", "p90 us", "p99 us",
                    "p99.9", "mean us", "ping cpu/rt", "pong cpu/rt", "fail", "capped", "min rt");
        for (int di = 0; di < 2; ++di) {
            const auto& v = runs[di];
            auto n = [](const lat_result& r) { return double(std::max<size_t>(1, r.rtt_ns.size())); };
            int capped = 0;
            size_t min_rt = SIZE_MAX;
            for (const auto& r : v) {
                capped += r.kicked;
                min_rt = std::min(min_rt, r.rtt_ns.size());
            }
            std::printf("%-12s %8.1f %8.1f %8.1f %8.1f %8.1f %10.2fus %10.2fus %5.0f %4d/%-2u %9zu\n",
                        name(designs[di]),
                        med(v, [](const lat_result& r) { return pct(r.rtt_ns, 50); }),
                        med(v, [](const lat_result& r) { return pct(r.rtt_ns, 90); }),
                        med(v, [](const lat_result& r) { return pct(r.rtt_ns, 99); }),
                        med(v, [](const lat_result& r) { return pct(r.rtt_ns, 99.9); }),
                        med(v,
                            [&](const lat_result& r) {
                                double sum = 0;
                                for (uint32_t x : r.rtt_ns) {
                                    sum += x;
                                }
                                return sum / n(r) / 1000.0;
                            }),
                        med(v, [&](const lat_result& r) { return double(r.ping_cpu) / n(r) / 1000.0; }),
                        med(v, [&](const lat_result& r) { return double(r.pong_cpu) / n(r) / 1000.0; }),
                        med(v, [](const lat_result& r) { return double(r.fails); }), capped, o.repeat, min_rt);
        }
        std::printf("  capped = runs stopped by --lat-cap-s (fewer round trips); min rt = fewest round trips in a run\n");
    }
    std::printf("\nloadavg after: %s; total %.1f s\n", loadavg().c_str(), double(now_ns() - t_begin) / 1e9);
    return 0;
}
