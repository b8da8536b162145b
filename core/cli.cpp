// Command-line parsing with CLI11: unknown flags are rejected by name.
#include "core/cli.h"

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>

#include "backplane/presence.h"
#include "backplane/redis_names.h"

#ifndef WSGATE_VERSION
#define WSGATE_VERSION "0.0.0"
#endif

namespace wsgate::core {

namespace {

// "HOST:PORT", "[v6]:PORT" or ":PORT". Returns an error message, empty on success.
std::string parse_listen(const std::string& s, config& cfg) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) {
        return "expected HOST:PORT, got '" + s + "'";
    }
    std::string host = s.substr(0, colon);
    std::string port = s.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535 || port.empty()) {
        return "invalid port in '" + s + "'";
    }
    cfg.listen_host = host.empty() ? "0.0.0.0" : host;
    cfg.listen_port = static_cast<uint16_t>(value);
    return {};
}

}  // namespace

int parse_command_line(int argc, char** argv, config& cfg) {
    CLI::App app{"wsgate: a thread-per-core io_uring WebSocket gateway", "wsgate"};
    app.set_version_flag("--version", std::string("wsgate ") + WSGATE_VERSION);

    std::string listen = cfg.listen_host + ":" + std::to_string(cfg.listen_port);
    app.add_option("--listen", listen, "HOST:PORT to listen on")->capture_default_str();
    app.add_option("--threads", cfg.threads, "worker threads, one per core (default: one per usable CPU)")
        ->check(CLI::Range(0u, 1024u));
    app.add_flag("--echo", cfg.echo, "also serve /echo, which echoes every message back");
    app.add_option("--max-message", cfg.max_message, "largest message accepted, in bytes (larger: close 1009)")
        ->capture_default_str()
        ->check(CLI::Range(size_t{1}, size_t{1} << 30));
    app.add_option("--handshake-timeout-ms", cfg.handshake_timeout_ms,
                   "close connections that have not completed the upgrade by then")
        ->capture_default_str()
        ->check(CLI::Range(1u, 3600000u));

    app.add_option("--drain-delay-ms", cfg.drain_delay_ms,
                   "graceful shutdown: after SIGTERM, /readyz says 503 and listeners close at once; clients are "
                   "told to leave only after this delay (load balancers take the gateway out meanwhile)")
        ->capture_default_str()
        ->check(CLI::Range(0u, 600000u));
    app.add_option("--drain-spread-ms", cfg.drain_spread_ms,
                   "graceful shutdown: server_shutdown + close 1001 go out in batches spread over this time")
        ->capture_default_str()
        ->check(CLI::Range(0u, 600000u));
    app.add_option("--reconnect-jitter-ms", cfg.reconnect_jitter_ms,
                   "graceful shutdown: each client is told to reconnect after a random 0..this ms")
        ->capture_default_str()
        ->check(CLI::Range(0u, 600000u));
    app.add_option("--close-timeout-ms", cfg.shutdown_timeout_ms,
                   "graceful shutdown: connections still open this long after their close frame are cut")
        ->capture_default_str()
        ->check(CLI::Range(0u, 600000u));
    app.add_option("--ping-interval-s", cfg.ping_interval_s,
                   "ping a connection silent for this long; cut it if still silent one interval later (0: off)")
        ->capture_default_str()
        ->check(CLI::Range(0u, 86400u));

    app.add_option("--jwt-secret", cfg.jwt_secret,
                   "HS256 secret: clients must present a JWT (without it: anonymous development mode)");
    app.add_option("--jwt-leeway-s", cfg.jwt_leeway_s, "clock skew allowed on a token's exp and nbf, in seconds")
        ->capture_default_str()
        ->check(CLI::Range(0u, 3600u));
    app.add_option("--allow-origin", cfg.allowed_origins,
                   "allowed Origin (repeatable, e.g. https://app.example.com; '*' = any); others get 403");
    app.add_option("--max-connections", cfg.max_connections,
                   "WebSocket connections per process; more get 503 before the upgrade (0 = no limit)")
        ->capture_default_str();
    app.add_option("--max-rooms-per-conn", cfg.max_rooms_per_conn, "rooms one connection may join (error 'limit')")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--rate-limit", cfg.rate_limit,
                   "messages per second per connection (token bucket; 'limit' errors, then close 1008); 0 = off")
        ->capture_default_str();
    app.add_option("--rate-burst", cfg.rate_burst, "messages a connection may send at once above --rate-limit")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--max-outbound-bytes", cfg.max_outbound_bytes,
                   "bytes queued for one connection before the slow-consumer policy applies")
        ->capture_default_str()
        ->check(CLI::Range(size_t{4096}, size_t{1} << 31));
    std::string slow = "close";
    app.add_option("--slow-consumer", slow,
                   "past --max-outbound-bytes: 'close' (1013) or 'drop' (oldest queued pushes, counted)")
        ->capture_default_str()
        ->check(CLI::IsMember({"close", "drop"}));

    app.add_option("--redis", cfg.redis_url,
                   "Redis backplane: redis://[[user]:password@]host[:port][/db] (without it: a single node)");
    app.add_option("--server-id", cfg.server_id,
                   "this gateway's id in Redis: 1-64 of [A-Za-z0-9._-], unique in the fleet (default: hostname-pid)");
    app.add_option("--presence-ttl-s", cfg.presence_ttl_s,
                   "Redis presence entries of a gateway that stopped refreshing them (killed) vanish after this; "
                   "refreshed every third of it")
        ->capture_default_str()
        ->check(CLI::Range(3u, 86400u));

    app.add_option("--recv-buffers", cfg.recv_buffers,
                   "provided receive buffers per worker (power of two; fewer means more ENOBUFS re-arms)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 32768u));
    app.add_option("--recv-buffer-size", cfg.recv_buffer_size, "bytes per receive buffer")
        ->capture_default_str()
        ->check(CLI::Range(256u, 1u << 20));

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);  // prints help/version (exit 0) or the error naming the flag (non-zero)
    }
    if ((cfg.recv_buffers & (cfg.recv_buffers - 1)) != 0) {
        std::fprintf(stderr, "--recv-buffers: %u is not a power of two\n", cfg.recv_buffers);
        return 2;
    }
    cfg.slow_consumer = slow == "drop" ? slow_consumer_policy::drop : slow_consumer_policy::close;
    if (auto err = parse_listen(listen, cfg); !err.empty()) {
        std::fprintf(stderr, "--listen: %s\n", err.c_str());
        return 2;
    }
    if (cfg.server_id.empty()) {
        char host[256] = {};
        gethostname(host, sizeof(host) - 1);
        std::string id;
        for (char ch : std::string_view(host).substr(0, backplane::max_server_id_bytes - 8)) {
            id += backplane::valid_server_id(std::string_view(&ch, 1)) ? ch : '-';
        }
        cfg.server_id = id + "-" + std::to_string(getpid());
    }
    if (!backplane::valid_server_id(cfg.server_id)) {
        std::fprintf(stderr, "--server-id: '%s' must be 1-64 bytes of A-Z a-z 0-9 . _ -\n", cfg.server_id.c_str());
        return 2;
    }
    if (!cfg.redis_url.empty()) {
        backplane::redis_endpoint ep;
        std::string err;
        if (!backplane::parse_redis_url(cfg.redis_url, ep, err)) {
            std::fprintf(stderr, "--redis: %s\n", err.c_str());
            return 2;
        }
        cfg.redis_cluster = ep.cluster;
        cfg.redis_port = ep.port;
        cfg.redis_user = ep.user;
        cfg.redis_password = ep.password;
        cfg.redis_db = ep.db;
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        std::string port = std::to_string(ep.port);
        if (int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res) {
            std::fprintf(stderr, "--redis: cannot resolve %s: %s\n", ep.host.c_str(), gai_strerror(rc));
            return 2;
        }
        std::memcpy(&cfg.redis_addr, res->ai_addr, res->ai_addrlen);
        // The seed's address as text (cluster nodes announce IP literals; an
        // empty announced host means "the one you asked").
        char text[INET6_ADDRSTRLEN] = {};
        const void* a = res->ai_family == AF_INET6
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr);
        inet_ntop(res->ai_family, a, text, sizeof(text));
        cfg.redis_host = text;
        cfg.redis_addr_len = static_cast<socklen_t>(res->ai_addrlen);
        freeaddrinfo(res);
    }
    return -1;
}

}  // namespace wsgate::core
