// proc_stats.h — process facts the reports need: RSS and CPU time of the
// server under test (from /proc/PID), our own CPU time, CPU pinning, and the
// open-files limit.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wsbench {

// VmRSS of `pid` in bytes, or -1 if /proc/PID/status cannot be read.
[[nodiscard]] int64_t read_rss_bytes(pid_t pid);

// utime + stime of `pid` in seconds (all threads), or -1 on failure.
[[nodiscard]] double read_cpu_seconds(pid_t pid);

// User + system CPU seconds of this process (all threads).
[[nodiscard]] double self_cpu_seconds();

// Parses "1", "1,3" or "0-3" into CPU numbers; throws on junk.
[[nodiscard]] std::vector<int> parse_cpu_list(const std::string& list);

// Pins the calling thread to `cpu`; false on failure.
bool pin_current_thread(int cpu);

// Raises RLIMIT_NOFILE's soft limit towards `wanted` (up to the hard limit)
// and returns the resulting soft limit.
uint64_t raise_nofile_limit(uint64_t wanted);

} // namespace wsbench
