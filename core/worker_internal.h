// Helpers shared by the worker's translation units (worker.cpp: the loop and
// connections; worker_client.cpp: the client protocol and fan-out;
// worker_redis.cpp: the Redis backplane). Not for use outside core/worker*.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "backplane/room_table.h"
#include "protocol/message.h"
#include "protocol/push.h"
#include "protocol/ws_conn.h"
#include "core/worker.h"

namespace wsgate::core::detail {

inline void bump(std::atomic<uint64_t>& counter) {
    // Single writer: a plain load/store pair, no locked instruction on the hot path.
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

inline void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

inline backplane::conn_id make_id(uint32_t slot, uint32_t gen) {
    return (static_cast<uint64_t>(gen) << 32) | slot;
}

}  // namespace wsgate::core::detail

namespace wsgate::core {

// presence/online asked on a worker, answered by every worker.
struct worker::pending_query {
    uint32_t slot;
    uint32_t gen;
    protocol::wire_format fmt;
    protocol::op kind;
    std::string id;                    // raw id of the request ("" = none)
    std::string room;                  // presence
    std::vector<std::string> asked;    // online: in request order, duplicates removed
    std::unordered_set<std::string> found;
    unsigned remaining;                // workers still to answer
    unsigned redis_wait = 0;           // Redis replies still to come (fleet-wide answer)
    size_t redis_next = 0;             // online: index in `asked` of the next EXISTS reply
};

}  // namespace wsgate::core
