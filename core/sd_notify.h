// systemd integration (Type=notify): READY, STATUS, STOPPING, WATCHDOG and
// EXTEND_TIMEOUT_USEC through libsystemd's sd_notify (Debian libsystemd-dev).
// Without NOTIFY_SOCKET (not started by systemd) every call is a no-op.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace wsgate::core::systemd {

void notify(const std::string& state);  // "READY=1\nSTATUS=..."

// WATCHDOG_USEC when systemd asked for keep-alives for this process, else 0.
uint64_t watchdog_usec();

// The watchdog keep-alive is sent only while every worker loop is turning: each
// worker stamps the time of its last timer tick; a stamp older than `stale_ms`
// means that worker is wedged, and withholding WATCHDOG=1 lets systemd act.
// Returns the index of the first stale worker, or -1 when all are live.
inline int first_stale_worker(std::span<const uint64_t> last_tick_ms, uint64_t now_ms, uint64_t stale_ms) {
    for (size_t i = 0; i < last_tick_ms.size(); ++i) {
        if (now_ms - last_tick_ms[i] > stale_ms && now_ms > last_tick_ms[i]) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

}  // namespace wsgate::core::systemd
