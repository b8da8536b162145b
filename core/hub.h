// The hub: what the workers of one process share, and the only shared state.
//
// Workers are shared-nothing: each owns the room and user tables of its own
// connections. A publication, a direct message or a broadcast made on one
// worker reaches the others as an xmsg pointer through a single-producer,
// single-consumer ring per (sender, receiver) pair; no lock is taken. The
// sender wakes a receiver with one IORING_OP_MSG_RING per loop turn in which it
// queued something for it (a CQE posted straight into the receiver's ring, so a
// worker asleep in io_uring_submit_and_wait wakes without an eventfd or futex).
// Each receiver re-encodes the push once for its own connections: frames never
// cross cores, and reference counts on the hot path stay non-atomic.
//
// Order: a connection lives on one worker and a ring is FIFO, so publications
// of one publisher reach every worker, and every connection, in publish order.
// When a ring is full the sender keeps the overflow in order and retries on
// its next turn (nothing is dropped).
#pragma once

#include "core/stats.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wsgate::core {

// Kinds of cross-worker messages.
enum class xkind : uint8_t {
    publish,         // key = room: deliver to the room's local members
    direct,          // key = user: deliver to the user's local connections
    broadcast,       // deliver to every client connection
    presence_query,  // key = room: reply with the room's local users
    online_query,    // list = user names: reply with those online locally
    query_reply,     // list = user names, for query `query`
};

// One cross-worker message. Immutable once sent; freed by the last receiver
// (refs counts the receivers still to process it).
struct xmsg {
    std::atomic<uint32_t> refs{1};
    xkind kind = xkind::publish;
    bool data_is_json = true;   // data came from a JSON envelope (else binary bytes)
    uint16_t origin = 0;        // sending worker
    uint64_t query = 0;         // query id (queries and replies)
    std::string key;            // room or user
    std::string from;           // sender's user id (pushes)
    std::string data;           // raw data bytes (pushes)
    std::string mid;            // message id (Redis backplane), empty without it
    std::vector<std::string> list;  // online_query: users asked; query_reply: the answer
};

// Release one receiver's reference; the last one frees the message.
inline void xmsg_release(xmsg* m) {
    if (m->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        delete m;
    }
}

// Bounded single-producer single-consumer ring of pointers (Lamport queue with
// cached indices: the producer reads the consumer's index only when the ring
// looks full, and vice versa).
class spsc_ring {
public:
    static constexpr uint32_t capacity = 4096;  // power of two

    bool push(xmsg* m) {
        uint32_t t = _tail.load(std::memory_order_relaxed);
        if (t - _head_cache == capacity) {
            _head_cache = _head.load(std::memory_order_acquire);
            if (t - _head_cache == capacity) {
                return false;
            }
        }
        _slots[t & (capacity - 1)] = m;
        _tail.store(t + 1, std::memory_order_release);
        return true;
    }
    xmsg* pop() {
        uint32_t h = _head.load(std::memory_order_relaxed);
        if (h == _tail_cache) {
            _tail_cache = _tail.load(std::memory_order_acquire);
            if (h == _tail_cache) {
                return nullptr;
            }
        }
        xmsg* m = _slots[h & (capacity - 1)];
        _head.store(h + 1, std::memory_order_release);
        return m;
    }

private:
    alignas(64) std::atomic<uint32_t> _tail{0};  // producer
    uint32_t _head_cache = 0;                    // producer's view of _head
    alignas(64) std::atomic<uint32_t> _head{0};  // consumer
    uint32_t _tail_cache = 0;                    // consumer's view of _tail
    alignas(64) xmsg* _slots[capacity];
};

class hub {
public:
    explicit hub(unsigned workers)
        : _n(workers), _rings(std::make_unique<spsc_ring[]>(size_t{workers} * workers)),
          _ring_fds(std::make_unique<std::atomic<int>[]>(workers)),
          _wake_pending(std::make_unique<wake_flag[]>(workers)) {
        for (unsigned i = 0; i < workers; ++i) {
            _ring_fds[i].store(-1, std::memory_order_relaxed);
        }
    }
    ~hub() {
        // Messages still queued when the workers stopped.
        for (size_t i = 0; i < size_t{_n} * _n; ++i) {
            while (xmsg* m = _rings[i].pop()) {
                xmsg_release(m);
            }
        }
    }
    hub(const hub&) = delete;
    hub& operator=(const hub&) = delete;

    unsigned workers() const { return _n; }
    spsc_ring& ring(unsigned from, unsigned to) { return _rings[size_t{from} * _n + to]; }
    // A worker's io_uring fd (for MSG_RING), published once its ring is up; -1 before.
    void set_ring_fd(unsigned w, int fd) { _ring_fds[w].store(fd, std::memory_order_release); }
    int ring_fd(unsigned w) const { return _ring_fds[w].load(std::memory_order_acquire); }

    // "A wake-up is on its way to worker w": a sender that finds it set skips its
    // MSG_RING (the receiver drains every ring when the pending one arrives).
    // Sender: push to the ring, then exchange(true); receiver: store(false), then
    // drain, with full fences, so either the sender sees false and wakes, or
    // the receiver's drain sees the push. A failed MSG_RING leaves the flag set:
    // the receiver's 100 ms tick drains (and clears) anyway.
    bool claim_wake(unsigned w) {
        std::atomic_thread_fence(std::memory_order_seq_cst);  // the ring push is visible first
        return !_wake_pending[w].flag.exchange(true, std::memory_order_seq_cst);
    }
    void clear_wake(unsigned w) {
        _wake_pending[w].flag.store(false, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);  // before the drain reads the rings
    }

    // Process-wide count of upgraded connections (max connections limit).
    // Touched once per upgrade and once per close, never per message.
    std::atomic<uint64_t> connections{0};

    // Set once by main at the first SIGTERM/SIGINT: /readyz answers 503 from then on.
    std::atomic<bool> draining{false};

    // Every worker's counters, for /metrics (set by main before the workers start;
    // read with relaxed loads by whichever worker serves the request).
    std::vector<const worker_stats*> stats;

private:
    unsigned _n;
    std::unique_ptr<spsc_ring[]> _rings;
    std::unique_ptr<std::atomic<int>[]> _ring_fds;
    struct alignas(64) wake_flag {
        std::atomic<bool> flag{false};
    };
    std::unique_ptr<wake_flag[]> _wake_pending = nullptr;
};

}  // namespace wsgate::core
