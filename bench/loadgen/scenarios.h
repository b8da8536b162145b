// scenarios.h — the load generator's scenarios and their options.
//
// echo:      N connections each keep K messages in flight against an echo
//            endpoint; throughput and per-message latency (stamp in payload).
// idle:      N connections opened in batches and left idle; server RSS growth
//            per connection from /proc/PID/status.
// handshake: C concurrent connect + upgrade + close cycles; handshakes/s.
//
// Each run_* returns the process exit code: 0 on success, 1 when nothing was
// measured or a connect/handshake failed (see README.md).
#pragma once

#include "client_loop.h"

#include <string>
#include <sys/types.h>

namespace wsbench {

struct common_options {
    std::string url;                 // ws://host:port/path (tcp://host:port with --raw)
    unsigned threads = 1;            // loops (threads); echo only
    std::string cpus;                // CPU list to pin loop threads to, round-robin
    std::string source_addrs;        // IPv4 source addresses to spread connections over
    bool json = false;               // one JSON object instead of text
    double connect_timeout_s = 10;   // connect + upgrade deadline per connection
    unsigned connect_concurrency = 256; // connects + upgrades in flight per thread
    bool no_fixed_files = false;     // use plain fds in SQEs (diagnostics)
};

struct echo_options : common_options {
    unsigned connections = 100;  // total over all threads
    size_t size = 16;            // payload bytes per message (>= 8)
    double duration_s = 10;      // measured window
    double warmup_s = 1;         // traffic before the window, not recorded
    unsigned inflight = 1;       // messages in flight per connection
    bool raw = false;            // plain TCP, fixed-size messages
    bool binary = false;         // binary frames instead of text
    pid_t pid = 0;               // server PID for CPU/RSS, 0 = none
};

struct idle_options : common_options {
    unsigned connections = 1000; // connections to open
    pid_t pid = 0;               // server PID (required)
    double hold_s = 2;           // how long to keep them open after the last one
};

struct handshake_options : common_options {
    double duration_s = 10;      // measured window
    double warmup_s = 0.5;       // cycles before the window, not counted
    unsigned concurrency = 16;   // cycles in flight
};

[[nodiscard]] int run_echo(const echo_options& opt);
[[nodiscard]] int run_idle(const idle_options& opt);
[[nodiscard]] int run_handshake(const handshake_options& opt);

// Shared setup: loop configuration from the common options.
[[nodiscard]] loop_config make_loop_config(const common_options& opt, const target& dest,
                                           unsigned max_connections, size_t message_size);

} // namespace wsbench
