// Per-worker counters and how they are reported: the exit line (core/main.cpp)
// and /metrics (Prometheus text, core/metrics.cpp) are generated from one table.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>

namespace wsgate::core {

// Refused upgrades by HTTP status (wsgate_handshake_failures_by_status_total):
// the statuses the upgrade path answers, then "other".
inline constexpr uint16_t handshake_statuses[] = {400, 401, 403, 404, 405, 426, 429, 431, 500, 503};
inline constexpr size_t handshake_status_slots = std::size(handshake_statuses) + 1;

// Closed WebSocket connections by the close code of their closing handshake
// (the code we sent, which echoes the peer's when it closed first), then
// "other" (application codes 3000-4999, kept out of the label set) and "none"
// (cut without a close handshake: reset, heartbeat timeout, drain cut).
inline constexpr uint16_t tracked_close_codes[] = {1000, 1001, 1002, 1003, 1005, 1007, 1008,
                                                   1009, 1010, 1011, 1012, 1013, 1014};
inline constexpr size_t close_code_slots = std::size(tracked_close_codes) + 2;

inline size_t handshake_status_index(uint16_t status) {
    for (size_t i = 0; i < std::size(handshake_statuses); ++i) {
        if (handshake_statuses[i] == status) {
            return i;
        }
    }
    return std::size(handshake_statuses);
}

inline size_t close_code_index(uint16_t code) {  // 0: no close handshake
    if (code == 0) {
        return close_code_slots - 1;
    }
    for (size_t i = 0; i < std::size(tracked_close_codes); ++i) {
        if (tracked_close_codes[i] == code) {
            return i;
        }
    }
    return std::size(tracked_close_codes);
}

// Redis round-trip time (a PING per node per second on the command connection,
// answered after the commands queued before it): histogram upper bounds in µs.
inline constexpr uint64_t redis_rtt_bounds_us[] = {100, 250, 500, 1000, 2500, 5000, 10000,
                                                   25000, 50000, 100000, 250000, 500000, 1000000, 2500000};
inline constexpr size_t redis_rtt_slots = std::size(redis_rtt_bounds_us) + 1;  // + (+Inf)

struct worker_stats;
// WebSocket connections open on one worker: upgrades minus closes (by any code).
uint64_t websockets_open(const worker_stats& st);

// Counters of one worker, read by others only for reporting (relaxed atomics,
// written by the owning thread alone).
struct worker_stats {
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> closed{0};
    std::atomic<uint64_t> handshake_failures{0};
    std::atomic<uint64_t> handshake_timeouts{0};
    std::atomic<uint64_t> messages_in{0};
    std::atomic<uint64_t> messages_out{0};
    std::atomic<uint64_t> sends{0};
    std::atomic<uint64_t> enobufs{0};
    std::atomic<uint64_t> outbound_overflow_closes{0};
    std::atomic<uint64_t> accept_errors{0};
    // Client protocol and limits (issue 3).
    std::atomic<uint64_t> requests_rejected{0};    // error replies sent (any code)
    std::atomic<uint64_t> publishes{0};            // publish/send/broadcast accepted here
    std::atomic<uint64_t> pushes{0};               // pushes queued to connections here
    std::atomic<uint64_t> push_drops{0};           // pushes dropped by --slow-consumer drop
    std::atomic<uint64_t> slow_consumer_closes{0}; // closed 1013
    std::atomic<uint64_t> rate_limited{0};         // messages refused by the rate limit
    std::atomic<uint64_t> rate_limit_closes{0};    // closed 1008
    std::atomic<uint64_t> room_limit_errors{0};    // join refused: --max-rooms-per-conn
    std::atomic<uint64_t> rejected_full{0};        // 503: --max-connections
    std::atomic<uint64_t> auth_failures{0};        // 401 (and 400 for a bad anonymous user)
    std::atomic<uint64_t> origin_rejects{0};       // 403
    std::atomic<uint64_t> xmsgs_sent{0};           // cross-worker messages sent
    std::atomic<uint64_t> xmsgs_received{0};
    std::atomic<uint64_t> wakes_sent{0};           // MSG_RING wake-ups sent
    // Redis backplane (docs/backplane.md).
    std::atomic<uint64_t> redis_connects{0};       // connections established (both sessions)
    std::atomic<uint64_t> redis_disconnects{0};    // lost or failed connections
    std::atomic<uint64_t> redis_publishes{0};      // PUBLISH queued
    std::atomic<uint64_t> redis_publish_failures{0};  // refused (queue full), errored or lost
    std::atomic<uint64_t> redis_messages{0};       // channel messages received
    std::atomic<uint64_t> redis_echoes{0};         // our own publications coming back: dropped
    std::atomic<uint64_t> redis_invalid{0};        // not UTF-8: dropped
    std::atomic<uint64_t> redis_commands{0};       // commands written (handshake, subscriptions included)
    std::atomic<uint64_t> redis_presence_writes{0};  // presence commands queued (registrations, refreshes)
    std::atomic<uint64_t> redis_presence_refreshes{0};  // refresh passes completed
    std::atomic<uint64_t> redis_errors{0};         // error replies to anything but PUBLISH
    std::atomic<uint64_t> redis_queries{0};        // presence/online answered with Redis (fleet-wide)
    std::atomic<uint64_t> drain_notices{0};        // server_shutdown notices sent (graceful drain)
    std::atomic<uint64_t> drain_cut{0};            // connections cut at the close timeout
    std::atomic<uint64_t> pings_sent{0};           // heartbeat pings to silent connections
    std::atomic<uint64_t> heartbeat_timeouts{0};   // cut: silent for a whole interval after a ping
    std::atomic<uint64_t> redis_redirects{0};      // cluster: publications re-sent after -MOVED/-ASK
    std::atomic<uint64_t> redis_queries_local{0};  // presence/online answered for this gateway only (Redis down)
    std::atomic<uint64_t> idle_closes{0};          // closed 1000: no message for --idle-timeout-s
    std::atomic<uint64_t> drain_late_accepts{0};   // queued connections taken as the listener closed
    std::atomic<uint64_t> upgrades{0};             // WebSocket upgrades completed (/ws and /echo)
    std::atomic<uint64_t> deflate_negotiated{0};   // upgrades with permessage-deflate
    std::atomic<uint64_t> compressed_frames{0};    // push frames compressed (once per publication, not per recipient)
    std::atomic<uint64_t> bytes_in{0};             // bytes received from clients (TCP payload)
    std::atomic<uint64_t> bytes_out{0};            // bytes sent to clients (TCP payload)

    // Labelled counters and gauges (rendered by core/metrics.cpp, not in the exit line).
    std::atomic<uint64_t> handshake_by_status[handshake_status_slots]{};
    std::atomic<uint64_t> closes_by_code[close_code_slots]{};
    std::atomic<uint64_t> rooms{0};                // gauge: rooms with a member on this worker
    std::atomic<uint64_t> users{0};                // gauge: distinct users connected to this worker
    std::atomic<uint64_t> redis_rtt_buckets[redis_rtt_slots]{};  // not cumulative; + (+Inf) last
    std::atomic<uint64_t> redis_rtt_sum_us{0};
};

// One counter: its name (exit line; wsgate_<name>_total in /metrics) and help text.
struct stat_field {
    const char* name;
    const char* help;
    std::atomic<uint64_t> worker_stats::*member;
};

inline constexpr stat_field stat_fields[] = {
    {"accepted", "TCP connections accepted", &worker_stats::accepted},
    {"closed", "connections closed", &worker_stats::closed},
    {"handshake_failures", "upgrade requests answered with an HTTP error", &worker_stats::handshake_failures},
    {"handshake_timeouts",
     "connections closed for not completing the upgrade in time",
     &worker_stats::handshake_timeouts},
    {"messages_in", "WebSocket messages received", &worker_stats::messages_in},
    {"messages_out", "WebSocket messages sent back on /echo", &worker_stats::messages_out},
    {"sends", "send operations submitted", &worker_stats::sends},
    {"enobufs", "receive re-arms after the provided buffers ran out", &worker_stats::enobufs},
    {"outbound_overflow_closes",
     "connections closed for exceeding the outbound bound on /echo",
     &worker_stats::outbound_overflow_closes},
    {"accept_errors", "accept failures (EMFILE and the like)", &worker_stats::accept_errors},
    {"requests_rejected", "error replies sent (any code)", &worker_stats::requests_rejected},
    {"publishes", "publish/send/broadcast accepted here", &worker_stats::publishes},
    {"pushes", "pushes queued to connections here", &worker_stats::pushes},
    {"push_drops", "pushes dropped by --slow-consumer drop", &worker_stats::push_drops},
    {"slow_consumer_closes", "closed 1013", &worker_stats::slow_consumer_closes},
    {"rate_limited", "messages refused by the rate limit", &worker_stats::rate_limited},
    {"rate_limit_closes", "closed 1008", &worker_stats::rate_limit_closes},
    {"room_limit_errors", "join refused: --max-rooms-per-conn", &worker_stats::room_limit_errors},
    {"rejected_full", "503: --max-connections", &worker_stats::rejected_full},
    {"auth_failures", "401 (and 400 for a bad anonymous user)", &worker_stats::auth_failures},
    {"origin_rejects", "403", &worker_stats::origin_rejects},
    {"xmsgs_sent", "cross-worker messages sent", &worker_stats::xmsgs_sent},
    {"xmsgs_received", "xmsgs received", &worker_stats::xmsgs_received},
    {"wakes_sent", "MSG_RING wake-ups sent", &worker_stats::wakes_sent},
    {"redis_connects", "connections established (both sessions)", &worker_stats::redis_connects},
    {"redis_disconnects", "lost or failed connections", &worker_stats::redis_disconnects},
    {"redis_publishes", "PUBLISH queued", &worker_stats::redis_publishes},
    {"redis_publish_failures", "refused (queue full), errored or lost", &worker_stats::redis_publish_failures},
    {"redis_messages", "channel messages received", &worker_stats::redis_messages},
    {"redis_echoes", "our own publications coming back: dropped", &worker_stats::redis_echoes},
    {"redis_invalid", "not UTF-8: dropped", &worker_stats::redis_invalid},
    {"redis_commands", "commands written (handshake, subscriptions included)", &worker_stats::redis_commands},
    {"redis_presence_writes",
     "presence commands queued (registrations, refreshes)",
     &worker_stats::redis_presence_writes},
    {"redis_presence_refreshes", "refresh passes completed", &worker_stats::redis_presence_refreshes},
    {"redis_errors", "error replies to anything but PUBLISH", &worker_stats::redis_errors},
    {"redis_queries", "presence/online answered with Redis (fleet-wide)", &worker_stats::redis_queries},
    {"drain_notices", "server_shutdown notices sent (graceful drain)", &worker_stats::drain_notices},
    {"drain_cut", "connections cut at the close timeout", &worker_stats::drain_cut},
    {"pings_sent", "heartbeat pings to silent connections", &worker_stats::pings_sent},
    {"heartbeat_timeouts", "cut: silent for a whole interval after a ping", &worker_stats::heartbeat_timeouts},
    {"redis_redirects", "cluster: publications re-sent after -MOVED/-ASK", &worker_stats::redis_redirects},
    {"redis_queries_local",
     "presence/online answered for this gateway only (Redis down)",
     &worker_stats::redis_queries_local},
    {"idle_closes", "closed 1000: no message for --idle-timeout-s", &worker_stats::idle_closes},
    {"drain_late_accepts", "connections still queued when the listener closed: taken, not reset",
     &worker_stats::drain_late_accepts},
    {"upgrades", "WebSocket upgrades completed (/ws and /echo)", &worker_stats::upgrades},
    {"deflate_negotiated", "upgrades with permessage-deflate", &worker_stats::deflate_negotiated},
    {"compressed_frames", "push frames compressed (once per publication and worker, not per recipient)",
     &worker_stats::compressed_frames},
    {"bytes_in", "bytes received from clients", &worker_stats::bytes_in},
    {"bytes_out", "bytes sent to clients", &worker_stats::bytes_out},
};

inline uint64_t websockets_open(const worker_stats& st) {
    uint64_t closed = 0;
    for (const auto& c : st.closes_by_code) {
        closed += c.load(std::memory_order_relaxed);
    }
    uint64_t up = st.upgrades.load(std::memory_order_relaxed);
    return up >= closed ? up - closed : 0;
}

}  // namespace wsgate::core
