// Prometheus text exposition of the worker counters: see metrics.h.
#include "core/metrics.h"

#include <cstdio>

namespace wsgate::core {

std::string render_metrics(std::span<const worker_stats* const> stats, const metrics_gauges& g) {
    std::string out;
    out.reserve(256 + std::size(stat_fields) * (160 + 48 * stats.size()));
    for (const stat_field& f : stat_fields) {
        std::string name = "wsgate_";
        name += f.name;
        name += "_total";
        out += "# HELP " + name + ' ' + f.help + '\n';
        out += "# TYPE " + name + " counter\n";
        for (size_t w = 0; w < stats.size(); ++w) {
            out += name;
            out += "{worker=\"" + std::to_string(w) + "\"} ";
            out += std::to_string((stats[w]->*f.member).load(std::memory_order_relaxed));
            out += '\n';
        }
    }
    out += "# HELP wsgate_connections_open TCP connections open now: accepted minus closed "
           "(WebSocket, upgrading or closing; this scrape included)\n";
    out += "# TYPE wsgate_connections_open gauge\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        uint64_t closed = stats[w]->closed.load(std::memory_order_relaxed);
        uint64_t accepted = stats[w]->accepted.load(std::memory_order_relaxed);
        out += "wsgate_connections_open{worker=\"" + std::to_string(w) + "\"} ";
        out += std::to_string(accepted >= closed ? accepted - closed : 0);
        out += '\n';
    }
    auto worker_label = [](size_t w) { return "worker=\"" + std::to_string(w) + "\""; };
    auto load = [](const std::atomic<uint64_t>& a) { return std::to_string(a.load(std::memory_order_relaxed)); };

    out += "# HELP wsgate_handshake_failures_by_status_total upgrade requests refused, by HTTP status "
           "(timeouts: wsgate_handshake_timeouts_total)\n";
    out += "# TYPE wsgate_handshake_failures_by_status_total counter\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        for (size_t i = 0; i < handshake_status_slots; ++i) {
            std::string status = i < std::size(handshake_statuses) ? std::to_string(handshake_statuses[i]) : "other";
            out += "wsgate_handshake_failures_by_status_total{" + worker_label(w) + ",status=\"" + status + "\"} " +
                   load(stats[w]->handshake_by_status[i]) + '\n';
        }
    }
    out += "# HELP wsgate_connections_closed_by_code_total WebSocket connections closed, by the close code of "
           "the closing handshake (other: application codes; none: cut without one)\n";
    out += "# TYPE wsgate_connections_closed_by_code_total counter\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        for (size_t i = 0; i < close_code_slots; ++i) {
            std::string code = i < std::size(tracked_close_codes) ? std::to_string(tracked_close_codes[i])
                               : i == std::size(tracked_close_codes) ? "other"
                                                                      : "none";
            out += "wsgate_connections_closed_by_code_total{" + worker_label(w) + ",code=\"" + code + "\"} " +
                   load(stats[w]->closes_by_code[i]) + '\n';
        }
    }
    out += "# HELP wsgate_websockets_open WebSocket connections open now (upgrades minus closes)\n";
    out += "# TYPE wsgate_websockets_open gauge\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        out += "wsgate_websockets_open{" + worker_label(w) + "} " + std::to_string(websockets_open(*stats[w])) + '\n';
    }
    out += "# HELP wsgate_rooms rooms with at least one member connected to this worker\n";
    out += "# TYPE wsgate_rooms gauge\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        out += "wsgate_rooms{" + worker_label(w) + "} " + load(stats[w]->rooms) + '\n';
    }
    out += "# HELP wsgate_users distinct users with a connection on this worker\n";
    out += "# TYPE wsgate_users gauge\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        out += "wsgate_users{" + worker_label(w) + "} " + load(stats[w]->users) + '\n';
    }
    out += "# HELP wsgate_redis_rtt_seconds Redis round-trip time: a PING per node per second on the command "
           "connection, queued behind the commands before it\n";
    out += "# TYPE wsgate_redis_rtt_seconds histogram\n";
    for (size_t w = 0; w < stats.size(); ++w) {
        uint64_t cumulative = 0;
        for (size_t b = 0; b < redis_rtt_slots; ++b) {
            cumulative += stats[w]->redis_rtt_buckets[b].load(std::memory_order_relaxed);
            char le[32];
            if (b < std::size(redis_rtt_bounds_us)) {
                std::snprintf(le, sizeof(le), "%g", static_cast<double>(redis_rtt_bounds_us[b]) / 1e6);
            } else {
                std::snprintf(le, sizeof(le), "+Inf");
            }
            out += "wsgate_redis_rtt_seconds_bucket{" + worker_label(w) + ",le=\"" + le + "\"} " +
                   std::to_string(cumulative) + '\n';
        }
        char sum[48];
        std::snprintf(sum, sizeof(sum), "%.6f",
                      static_cast<double>(stats[w]->redis_rtt_sum_us.load(std::memory_order_relaxed)) / 1e6);
        out += "wsgate_redis_rtt_seconds_sum{" + worker_label(w) + "} " + sum + '\n';
        // _count equals the +Inf bucket (both from the buckets, so a scrape between
        // the bucket and the count increments cannot disagree).
        out += "wsgate_redis_rtt_seconds_count{" + worker_label(w) + "} " + std::to_string(cumulative) + '\n';
    }
    // server_id is [A-Za-z0-9._-] (validated at start) and the version digits and dots:
    // neither needs label escaping.
    out += "# HELP wsgate_info this gateway: its --server-id and version (always 1)\n";
    out += "# TYPE wsgate_info gauge\n";
    out += "wsgate_info{server_id=\"";
    out += g.server_id;
    out += "\",version=\"";
    out += g.version;
    out += "\"} 1\n";
    out += "# HELP wsgate_draining 1 from the first SIGTERM/SIGINT on (graceful drain)\n";
    out += "# TYPE wsgate_draining gauge\n";
    out += g.draining ? "wsgate_draining 1\n" : "wsgate_draining 0\n";
    return out;
}

std::string metrics_response(const std::string& body) {
    std::string r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: ";
    r += std::to_string(body.size());
    r += "\r\nConnection: close\r\n\r\n";
    r += body;
    return r;
}

}  // namespace wsgate::core
