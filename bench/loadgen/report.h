// report.h — result output: one flat JSON object (--json) or aligned
// "key: value" text lines. Both are built from the same ordered field list so
// the two formats never disagree.
#pragma once

#include "client_loop.h"
#include "histogram.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace wsbench {

class report {
public:
    explicit report(std::string scenario);

    report& add(const std::string& key, const std::string& value);
    report& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
    report& add(const std::string& key, uint64_t value);
    report& add(const std::string& key, int64_t value);
    report& add(const std::string& key, unsigned value) { return add(key, static_cast<uint64_t>(value)); }
    report& add(const std::string& key, int value) { return add(key, static_cast<int64_t>(value)); }
    report& add(const std::string& key, double value, int decimals = 1);
    report& add(const std::string& key, bool value);

    // latency_us_{p50,p90,p99,p999,max,mean} from a nanosecond histogram.
    report& add_latency(const std::string& prefix, const histogram& h);
    // errors (total) and one field per non-zero counter.
    report& add_errors(const loop_counters& c, uint64_t extra_errors);

    // Writes to stdout.
    void print(bool json) const;

private:
    struct field {
        std::string key;   // JSON key and text label
        std::string json;  // value as JSON text
        std::string text;  // value as plain text
    };
    std::string _scenario;     // printed first
    std::vector<field> _fields; // insertion order
};

} // namespace wsbench
