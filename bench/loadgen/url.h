// url.h — ws:// URL parsing and address resolution for the load generator.
//
// Only ws:// (plain TCP) is supported: the benchmark measures the gateway's
// event loop, not TLS. `tcp://host:port` is accepted as well for --raw runs.
// Resolution happens once, at startup (getaddrinfo may block; that is fine
// before any ring exists).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <vector>

namespace wsbench {

struct target {
    std::string scheme;   // "ws" or "tcp"
    std::string host;     // as written in the URL, used for the Host header
    unsigned port = 0;    // 80 when a ws:// URL names none
    std::string path;     // request target, "/" when empty; includes the query
    std::string host_header; // host[:port] exactly as sent in "Host:"
    sockaddr_storage addr{}; // resolved destination
    socklen_t addr_len = 0;  // length of addr
};

// Parses and resolves `url`; throws std::runtime_error with a readable message.
[[nodiscard]] target resolve_target(const std::string& url);

// Parses a comma-separated list of IPv4 source addresses ("127.0.0.1,127.0.0.2").
[[nodiscard]] std::vector<sockaddr_in> parse_source_addrs(const std::string& list);

} // namespace wsbench
