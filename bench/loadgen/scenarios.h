// scenarios.h — the load generator's scenarios and their options.
//
// echo:      N connections each keep K messages in flight against an echo
//            endpoint; throughput and per-message latency (stamp in payload).
// idle:      N connections opened in batches and left idle; server RSS growth
//            per connection from /proc/PID/status.
// handshake: C concurrent connect + upgrade + close cycles; handshakes/s.
// fanout:    R rooms x (S subscribers + P publishers), wsgate client protocol
//            v1 in JSON text frames; publications flat out (window K per
//            room) or at a fixed rate; deliveries/s, publish -> delivery
//            latency, exactly-once/in-order checks per subscriber.
//
// Each run_* returns the process exit code: 0 on success, 1 when nothing was
// measured or a connect/handshake failed (see README.md).
#pragma once

#include "client_loop.h"

#include <string>
#include <vector>
#include <sys/types.h>

namespace wsbench {

struct common_options {
    std::string url;                 // ws://host:port/path (tcp://host:port with --raw)
    unsigned threads = 1;            // loops (threads); echo and fanout
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

struct fanout_options : common_options {
    unsigned rooms = 1;           // rooms r0 .. r<R-1>
    unsigned subscribers = 100;   // subscriber connections per room
    unsigned publishers = 1;      // publisher connections per room (members too)
    size_t size = 16;             // bytes of each publication's "data" string (>= 16)
    unsigned inflight = 32;       // publications in flight per room (sent, not yet acked)
    bool inflight_given = false;  // --inflight was on the command line (a cap in --rate mode)
    double rate = 0;              // publications/s over all publishers, 0 = flat out
    double duration_s = 10;       // measured window
    double warmup_s = 1;          // traffic before the window, not recorded
    double drain_s = 3;           // after the window: give up when nothing arrived for this long
    std::vector<pid_t> pids;      // server PIDs for CPU/RSS (summed: a fleet on one box), empty = none
    std::string publish_url;      // publishers connect here instead of --url (cross-gateway fan-out)
    double settle_s = 0;          // after every member joined, wait this long before traffic
    bool user_param = false;      // append user=u<N> to each connection's URL
    std::string token;            // append token=<token> when not empty
    bool deflate = false;         // offer permessage-deflate and inflate compressed pushes
    bool text_payload = false;    // filler that compresses like JSON text (not a..z)
};

[[nodiscard]] int run_echo(const echo_options& opt);
[[nodiscard]] int run_fanout(const fanout_options& opt);
[[nodiscard]] int run_idle(const idle_options& opt);
[[nodiscard]] int run_handshake(const handshake_options& opt);

// Shared setup: loop configuration from the common options.
[[nodiscard]] loop_config make_loop_config(const common_options& opt, const target& dest,
                                           unsigned max_connections, size_t message_size);

} // namespace wsbench
