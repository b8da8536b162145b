// Prometheus text exposition of the worker counters: see metrics.h.
#include "core/metrics.h"

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
