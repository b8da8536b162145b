#include "core/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace wsgate::core {

namespace {

std::atomic<uint8_t> g_level{static_cast<uint8_t>(log_level::info)};

// systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected to
// stdout/stderr; when that is our stderr, the journal timestamps lines and
// reads a "<N>" syslog priority prefix.
bool stderr_is_journal() {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (!js) {
        return false;
    }
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    struct stat st{};
    return fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

const bool g_journal = stderr_is_journal();

constexpr std::string_view level_names[] = {"error", "warn", "info", "debug"};
constexpr char syslog_priority[] = {'3', '4', '6', '7'};  // err, warning, info, debug

bool needs_quotes(std::string_view v) {
    if (v.empty()) {
        return true;
    }
    for (unsigned char ch : v) {
        if (ch <= ' ' || ch == '"' || ch == '=' || ch == '\\' || ch >= 0x7f) {
            return true;
        }
    }
    return false;
}

}  // namespace

std::string_view log_level_name(log_level l) { return level_names[static_cast<uint8_t>(l)]; }

void set_log_level(log_level l) { g_level.store(static_cast<uint8_t>(l), std::memory_order_relaxed); }

bool log_enabled(log_level l) {
    return static_cast<uint8_t>(l) <= g_level.load(std::memory_order_relaxed);
}

log_line::log_line(log_level level, std::string_view event) : _on(log_enabled(level)) {
    if (!_on) {
        return;
    }
    if (g_journal) {
        _buf[_n++] = '<';
        _buf[_n++] = syslog_priority[static_cast<uint8_t>(level)];
        _buf[_n++] = '>';
    } else {
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        tm t{};
        gmtime_r(&ts.tv_sec, &t);
        _n += static_cast<size_t>(std::snprintf(_buf + _n, sizeof(_buf) - _n,
                                                "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ", t.tm_year + 1900,
                                                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                                                ts.tv_nsec / 1000000));
    }
    put("level=");
    put(log_level_name(level));
    put(" event=");
    put(event);
}

log_line::~log_line() {
    if (!_on) {
        return;
    }
    if (_n >= sizeof(_buf)) {
        _n = sizeof(_buf) - 1;  // truncated: keep the newline
    }
    _buf[_n++] = '\n';
    ssize_t w = ::write(STDERR_FILENO, _buf, _n);
    (void)w;  // nowhere to report a failed log write
}

void log_line::put(std::string_view s) {
    size_t room = sizeof(_buf) - 1 - _n;  // one byte kept for the newline
    size_t k = s.size() < room ? s.size() : room;
    for (size_t i = 0; i < k; ++i) {
        _buf[_n + i] = s[i];
    }
    _n += k;
}

void log_line::put_value(std::string_view v) {
    if (!needs_quotes(v)) {
        put(v);
        return;
    }
    put("\"");
    for (unsigned char ch : v) {
        char esc[5];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = static_cast<char>(ch);
            put(std::string_view(esc, 2));
        } else if (ch < ' ' || ch == 0x7f) {
            std::snprintf(esc, sizeof(esc), "\\x%02x", ch);
            put(std::string_view(esc, 4));
        } else {
            char c = static_cast<char>(ch);
            put(std::string_view(&c, 1));
        }
    }
    put("\"");
}

log_line& log_line::kv(std::string_view key, std::string_view value) {
    if (_on) {
        put(" ");
        put(key);
        put("=");
        put_value(value);
    }
    return *this;
}

log_line& log_line::kv(std::string_view key, uint64_t value) { return number(key, value); }

log_line& log_line::kv(std::string_view key, int64_t value) { return number(key, value); }

template <class Int>
log_line& log_line::number(std::string_view key, Int value) {
    if (_on) {
        char num[24];
        auto r = std::to_chars(num, num + sizeof(num), value);
        put(" ");
        put(key);
        put("=");
        put(std::string_view(num, static_cast<size_t>(r.ptr - num)));
    }
    return *this;
}

}  // namespace wsgate::core
