// Logs: one line per event on stderr (journald under systemd), logfmt-style:
//
//   ts=2026-11-29T22:50:01.123Z level=info event=listening addr=0.0.0.0:8080 workers=2
//
// Under systemd (JOURNAL_STREAM names our stderr) the timestamp is left to the
// journal and each line starts with its syslog priority ("<6>"), so
// `journalctl -p warning` filters by level. Connection-level events are at
// debug; nothing is logged per message at any level. A line is formatted into a
// stack buffer and written with one write(2), so lines from several workers
// never interleave; a disabled level costs one relaxed load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wsgate::core {

enum class log_level : uint8_t { error, warn, info, debug };

// Names in level order: "error", "warn", "info", "debug".
std::string_view log_level_name(log_level l);

void set_log_level(log_level l);
bool log_enabled(log_level l);

// log_line(log_level::info, "listening").kv("addr", a).kv("workers", n);
// The line is written when the temporary is destroyed (end of the statement).
class log_line {
public:
    log_line(log_level level, std::string_view event);
    ~log_line();
    log_line(const log_line&) = delete;
    log_line& operator=(const log_line&) = delete;

    log_line& kv(std::string_view key, std::string_view value);
    log_line& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
    log_line& kv(std::string_view key, uint64_t value);
    log_line& kv(std::string_view key, int64_t value);
    log_line& kv(std::string_view key, unsigned value) { return kv(key, uint64_t{value}); }
    log_line& kv(std::string_view key, int value) { return kv(key, int64_t{value}); }

private:
    template <class Int>
    log_line& number(std::string_view key, Int value);
    void put(std::string_view s);
    void put_value(std::string_view v);

    bool _on;
    size_t _n = 0;
    char _buf[1024];
};

}  // namespace wsgate::core
