// /metrics: every worker's counters in the Prometheus text exposition format
// (version 0.0.4): one family per counter, a sample per worker.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/stats.h"

namespace wsgate::core {

struct metrics_gauges {
    bool draining = false;
    std::string_view server_id;  // wsgate_info labels: which gateway answered
    std::string_view version;
};

// The body; `stats[i]` is worker i's counters (relaxed loads).
std::string render_metrics(std::span<const worker_stats* const> stats, const metrics_gauges& g);

// A complete HTTP/1.1 200 response carrying `body` (Connection: close).
std::string metrics_response(const std::string& body);

}  // namespace wsgate::core
