// Runtime configuration of one wsgate process.
//
// Filled once at start-up from the command line (core/cli.cpp) and then only
// read: every worker gets a const reference. No file-scope statics hold config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/socket.h>

#include <string>
#include <vector>

#include "core/log.h"

namespace wsgate::core {

enum class slow_consumer_policy : uint8_t {
    close,  // past the outbound bound: close 1013 (try again later)
    drop,   // past the outbound bound: drop the oldest queued pushes (counted)
};

struct config {
    std::string config_file;              // --config FILE (TOML; flags override it)
    std::string listen = "0.0.0.0:8080";  // --listen HOST:PORT, parsed into the two below
    std::string listen_host = "0.0.0.0";
    uint16_t listen_port = 8080;
    log_level log = log_level::info;      // --log-level
    unsigned threads = 0;                 // --threads; 0 = one per CPU the process may run on
    bool echo = false;                    // --echo: also serve /echo
    bool demo = false;                    // --demo: serve the demo page at / (development)
    std::string ws_path = "/ws";          // WebSocket endpoint for clients
    size_t max_message = 1 << 20;         // --max-message: bytes per message, larger → 1009
    size_t max_header_bytes = 8192;       // request head limit, larger → 431
    unsigned handshake_timeout_ms = 10000;  // --handshake-timeout-ms: slowloris guard
    unsigned close_linger_ms = 2000;      // how long a closing socket waits for the peer's FIN
    unsigned shutdown_timeout_ms = 3000;  // --close-timeout-ms: after the last close frame, how long
                                          // closing handshakes may take before sockets are cut
    unsigned drain_delay_ms = 5000;       // --drain-delay-ms: SIGTERM → notices start (LB takes us out)
    unsigned drain_spread_ms = 2000;      // --drain-spread-ms: close connections in batches over this
    unsigned reconnect_jitter_ms = 5000;  // --reconnect-jitter-ms: server_shutdown reconnect_in_ms in [0, this]
    unsigned ping_interval_s = 30;        // --ping-interval-s: ping silent connections; 0 = off
    unsigned idle_timeout_s = 0;          // --idle-timeout-s: close 1000 after this long without a message; 0 = off
    size_t max_outbound_bytes = 16u << 20;  // --max-outbound-bytes: queued output bound per connection
    slow_consumer_policy slow_consumer = slow_consumer_policy::close;  // --slow-consumer
    // permessage-deflate (RFC 7692; protocol/deflate.h).
    bool compression = false;             // --compression: accept permessage-deflate offers
    unsigned compression_level = 6;       // --compression-level: zlib level for outbound pushes
    uint64_t compression_min_size = 256;  // --compression-min-size: smaller pushes go uncompressed
    bool compression_client_context_takeover = false;  // --compression-client-context-takeover
    unsigned compression_server_window_bits = 15;     // --compression-server-window-bits
    unsigned compression_client_window_bits = 15;     // --compression-client-window-bits
    unsigned recv_buffers = 1024;         // provided buffers per worker (power of two)
    unsigned recv_buffer_size = 4096;     // bytes per provided buffer
    unsigned listen_backlog = 4096;       // --listen-backlog

    // Authentication and admission (SPEC sections 2 and 5).
    std::string jwt_secret;               // --jwt-secret; empty: anonymous development mode
    unsigned jwt_leeway_s = 30;           // --jwt-leeway-s: clock skew allowed on exp/nbf
    std::vector<std::string> allowed_origins;  // --allow-origin (repeatable); empty: any
    uint64_t max_connections = 0;         // --max-connections: upgraded connections per process, 0 = no limit → 503
    unsigned max_rooms_per_conn = 100;    // --max-rooms-per-conn → error "limit"
    unsigned rate_limit = 100;            // --rate-limit: messages/s per connection, 0 = off
    unsigned rate_burst = 200;            // --rate-burst: bucket size (messages)

    // Redis backplane (SPEC section 4; docs/backplane.md). Empty URL: single node.
    std::string redis_url;                // --redis redis://[[user]:password@]host[:port][/db]
    std::string server_id;                // --server-id; default hostname-pid
    unsigned presence_ttl_s = 60;         // --presence-ttl-s: presence entries expire unless refreshed
    bool redis_cluster = false;           // redis+cluster://: the address is a seed node
    std::string redis_host;               // resolved address of the URL's host, as text
    uint16_t redis_port = 0;
    std::string redis_user;               // parsed from the URL
    std::string redis_password;
    unsigned redis_db = 0;
    sockaddr_storage redis_addr{};        // resolved once at start-up
    socklen_t redis_addr_len = 0;
};

}  // namespace wsgate::core
