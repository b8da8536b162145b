// report.cpp — see report.h.
#include "report.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace wsbench {

namespace {

std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

} // namespace

report::report(std::string scenario) : _scenario(std::move(scenario)) {}

report& report::add(const std::string& key, const std::string& value) {
    _fields.push_back({key, json_quote(value), value});
    return *this;
}

report& report::add(const std::string& key, uint64_t value) {
    const std::string v = std::to_string(value);
    _fields.push_back({key, v, v});
    return *this;
}

report& report::add(const std::string& key, int64_t value) {
    const std::string v = std::to_string(value);
    _fields.push_back({key, v, v});
    return *this;
}

report& report::add(const std::string& key, double value, int decimals) {
    if (!std::isfinite(value)) {
        _fields.push_back({key, "null", "n/a"});
        return *this;
    }
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
    _fields.push_back({key, buf, buf});
    return *this;
}

report& report::add(const std::string& key, bool value) {
    _fields.push_back({key, value ? "true" : "false", value ? "yes" : "no"});
    return *this;
}

report& report::add_latency(const std::string& prefix, const histogram& h) {
    const auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    add(prefix + "_samples", h.count());
    add(prefix + "_us_p50", us(h.quantile(0.50)));
    add(prefix + "_us_p90", us(h.quantile(0.90)));
    add(prefix + "_us_p99", us(h.quantile(0.99)));
    add(prefix + "_us_p999", us(h.quantile(0.999)));
    add(prefix + "_us_max", us(h.max()));
    add(prefix + "_us_mean", h.mean() / 1000.0);
    return *this;
}

report& report::add_errors(const loop_counters& c, uint64_t extra_errors) {
    add("errors", c.errors() + extra_errors);
    const std::pair<const char*, uint64_t> items[] = {
        {"connect_failed", c.connect_failed},   {"handshake_failed", c.handshake_failed},
        {"server_closed", c.peer_closed},       {"server_eof", c.eof},
        {"io_errors", c.io_errors},             {"protocol_errors", c.protocol_errors},
        {"close_timeouts", c.close_timeouts},
    };
    for (const auto& [name, value] : items) {
        add(name, value);
    }
    add("recv_enobufs", c.enobufs);
    if (!c.first_error.empty()) {
        add("first_error", c.first_error);
    }
    return *this;
}

void report::print(bool json) const {
    if (json) {
        std::string out = "{\"scenario\":" + json_quote(_scenario);
        for (const auto& f : _fields) {
            out += ",";
            out += json_quote(f.key);
            out += ":";
            out += f.json;
        }
        out += "}\n";
        std::fputs(out.c_str(), stdout);
    } else {
        size_t width = 8;
        for (const auto& f : _fields) {
            width = f.key.size() > width ? f.key.size() : width;
        }
        std::printf("%-*s  %s\n", static_cast<int>(width), "scenario", _scenario.c_str());
        for (const auto& f : _fields) {
            std::printf("%-*s  %s\n", static_cast<int>(width), f.key.c_str(), f.text.c_str());
        }
    }
    std::fflush(stdout);
}

} // namespace wsbench
