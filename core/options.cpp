#include "core/options.h"

#include <array>
#include <cstdio>

namespace wsgate::core {

namespace {

constexpr std::string_view slow_consumer_names[] = {"close", "drop"};
constexpr std::string_view log_level_names[] = {"error", "warn", "info", "debug"};
static_assert(static_cast<int>(slow_consumer_policy::drop) == 1);
static_assert(static_cast<int>(log_level::debug) == 3);

constexpr uint64_t u32_max = 0xffffffffu;

// clang-format off
const std::array<option_spec, 36> table = {{
    {"listen", "--listen", "HOST:PORT to listen on ([v6]:PORT for IPv6)", &config::listen},
    {"threads", "--threads", "worker threads, one per core (0: one per usable CPU)", &config::threads, 0, 1024},
    {"echo", "--echo", "also serve /echo, which echoes every message back", &config::echo},
    {"demo", "--demo",
     "development: serve the demo chat page at / (and the JS client at /wsgate.mjs); not for production",
     &config::demo},
    {"server_id", "--server-id",
     "this gateway's id in Redis: 1-64 of [A-Za-z0-9._-], unique in the fleet (empty: hostname-pid)",
     &config::server_id},

    {"log.level", "--log-level", "error, warn, info or debug (debug: one line per connection event)",
     &config::log, 0, 0, log_level_names},

    {"auth.jwt_secret", "--jwt-secret",
     "HS256 secret: clients must present a JWT (empty: anonymous development mode)", &config::jwt_secret, 0, 0, {},
     true},
    {"auth.jwt_leeway_s", "--jwt-leeway-s", "clock skew allowed on a token's exp and nbf, in seconds",
     &config::jwt_leeway_s, 0, 3600},
    {"auth.allow_origins", "--allow-origin",
     "allowed Origin values (flag repeatable; '*' = any; empty: any); others get 403", &config::allowed_origins},

    {"limits.max_connections", "--max-connections",
     "WebSocket connections per process; more get 503 before the upgrade (0: no limit)", &config::max_connections,
     0, UINT64_MAX},
    {"limits.max_message", "--max-message", "largest message accepted, in bytes (larger: close 1009)",
     &config::max_message, 1, uint64_t{1} << 30},
    {"limits.max_rooms_per_conn", "--max-rooms-per-conn", "rooms one connection may join (error 'limit')",
     &config::max_rooms_per_conn, 1, 1000000},
    {"limits.rate_limit", "--rate-limit",
     "messages per second per connection (token bucket: 'limit' errors, then close 1008); 0: off",
     &config::rate_limit, 0, u32_max},
    {"limits.rate_burst", "--rate-burst", "messages a connection may send at once above the rate",
     &config::rate_burst, 1, 1000000},
    {"limits.max_outbound_bytes", "--max-outbound-bytes",
     "bytes queued for one connection before the slow-consumer policy applies", &config::max_outbound_bytes, 4096,
     uint64_t{1} << 31},
    {"limits.slow_consumer", "--slow-consumer",
     "past max_outbound_bytes: 'close' (1013) or 'drop' (oldest queued pushes, counted)", &config::slow_consumer,
     0, 0, slow_consumer_names},
    {"limits.handshake_timeout_ms", "--handshake-timeout-ms",
     "close connections that have not completed the upgrade by then", &config::handshake_timeout_ms, 1, 3600000},

    {"heartbeat.ping_interval_s", "--ping-interval-s",
     "ping a connection silent for this long; cut it if still silent one interval later (0: off)",
     &config::ping_interval_s, 0, 86400},
    {"heartbeat.idle_timeout_s", "--idle-timeout-s",
     "close (1000, \"idle timeout\") a connection that sent no message for this long; pongs do not count (0: off)",
     &config::idle_timeout_s, 0, 30 * 86400},

    {"shutdown.drain_delay_ms", "--drain-delay-ms",
     "after SIGTERM, /readyz says 503 and listeners close at once; clients are told to leave after this delay",
     &config::drain_delay_ms, 0, 600000},
    {"shutdown.drain_spread_ms", "--drain-spread-ms",
     "server_shutdown + close 1001 go out in batches spread over this time", &config::drain_spread_ms, 0, 600000},
    {"shutdown.reconnect_jitter_ms", "--reconnect-jitter-ms",
     "each client is told to reconnect after a random 0..this ms", &config::reconnect_jitter_ms, 0, 600000},
    {"shutdown.close_timeout_ms", "--close-timeout-ms",
     "connections still open this long after their close frame are cut", &config::shutdown_timeout_ms, 0, 600000},

    {"redis.url", "--redis",
     "Redis backplane: redis://[[user]:password@]host[:port][/db] or redis+cluster://host:port (empty: single node)",
     &config::redis_url, 0, 0, {}, true},
    {"redis.presence_ttl_s", "--presence-ttl-s",
     "presence entries of a gateway that stopped refreshing them vanish after this; refreshed every third of it",
     &config::presence_ttl_s, 3, 86400},

    {"compression.enabled", "--compression",
     "accept permessage-deflate offers: inbound messages inflated, pushes compressed once per publication",
     &config::compression},
    {"compression.level", "--compression-level", "zlib level for outbound pushes (1 fastest - 9 smallest)",
     &config::compression_level, 1, 9},
    {"compression.min_size", "--compression-min-size", "pushes smaller than this many bytes go uncompressed",
     &config::compression_min_size, 0, uint64_t{1} << 30},
    {"compression.client_context_takeover", "--compression-client-context-takeover",
     "let clients keep their compression context (smaller uploads; a per-connection inflater, ~7 KiB + window)",
     &config::compression_client_context_takeover},
    {"compression.server_max_window_bits", "--compression-server-window-bits",
     "our LZ77 window for outbound pushes (9-15); clients that allow less get uncompressed pushes",
     &config::compression_server_window_bits, 9, 15},
    {"compression.client_max_window_bits", "--compression-client-window-bits",
     "window asked of clients that keep context, when they offer client_max_window_bits (8-15)",
     &config::compression_client_window_bits, 8, 15},

    {"io.recv_buffers", "--recv-buffers",
     "provided receive buffers per worker (power of two; fewer means more ENOBUFS re-arms)", &config::recv_buffers,
     1, 32768},
    {"io.recv_buffer_size", "--recv-buffer-size", "bytes per receive buffer", &config::recv_buffer_size, 256,
     1u << 20},
    {"io.listen_backlog", "--listen-backlog",
     "accept queue length per listener (the kernel caps it at net.core.somaxconn)", &config::listen_backlog, 1,
     1u << 20},
    {"io.max_header_bytes", "--max-header-bytes", "largest HTTP upgrade request head (larger: 431)",
     &config::max_header_bytes, 1024, 1u << 20},
    {"io.close_linger_ms", "--close-linger-ms",
     "how long a closed connection waits for the peer's FIN before the socket is cut", &config::close_linger_ms, 0,
     600000},
}};
// clang-format on

template <class E>
std::string choice_value(const option_spec& opt, E value) {
    auto i = static_cast<size_t>(value);
    return toml_quote(i < opt.choices.size() ? opt.choices[i] : std::string_view("?"));
}

std::string redact_url(const std::string& url) {
    // scheme://user:password@host → scheme://user:<redacted>@host
    auto scheme = url.find("://");
    auto at = url.rfind('@');
    if (scheme == std::string::npos || at == std::string::npos || at < scheme) {
        return url;
    }
    auto colon = url.find(':', scheme + 3);
    if (colon == std::string::npos || colon > at) {
        return url;
    }
    return url.substr(0, colon + 1) + "<redacted>" + url.substr(at);
}

}  // namespace

std::span<const option_spec> options() { return table; }

const option_spec* find_option_by_key(std::string_view key) {
    for (const option_spec& o : table) {
        if (o.key == key) {
            return &o;
        }
    }
    return nullptr;
}

std::string toml_quote(std::string_view s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            default:
                if (ch < 0x20 || ch == 0x7f) {
                    char esc[8];
                    std::snprintf(esc, sizeof(esc), "\\u%04x", ch);
                    out += esc;
                } else {
                    out += static_cast<char>(ch);
                }
        }
    }
    return out + "\"";
}

std::string option_value_toml(const option_spec& opt, const config& cfg, bool reveal_secrets) {
    return std::visit(
        [&](auto member) -> std::string {
            const auto& v = cfg.*member;
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, bool>) {
                return v ? "true" : "false";
            } else if constexpr (std::is_same_v<T, unsigned> || std::is_same_v<T, uint64_t>) {
                return std::to_string(v);
            } else if constexpr (std::is_same_v<T, std::string>) {
                if (opt.secret && !reveal_secrets && !v.empty()) {
                    return toml_quote(opt.key == "redis.url" ? redact_url(v) : std::string("<redacted>"));
                }
                return toml_quote(v);
            } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
                std::string out = "[";
                for (size_t i = 0; i < v.size(); ++i) {
                    out += (i ? ", " : "") + toml_quote(v[i]);
                }
                return out + "]";
            } else {
                return choice_value(opt, v);
            }
        },
        opt.target);
}

}  // namespace wsgate::core
