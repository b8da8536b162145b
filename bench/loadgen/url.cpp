// url.cpp — see url.h.
#include "url.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cstring>
#include <stdexcept>

namespace wsbench {

namespace {

[[noreturn]] void fail(const std::string& url, const std::string& why) {
    throw std::runtime_error("bad URL '" + url + "': " + why);
}

} // namespace

target resolve_target(const std::string& url) {
    target t;
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string::npos) {
        fail(url, "expected ws://host:port/path");
    }
    t.scheme = url.substr(0, scheme_end);
    if (t.scheme != "ws" && t.scheme != "tcp") {
        fail(url, "scheme must be ws:// (wss:// is not supported) or tcp://");
    }
    std::string rest = url.substr(scheme_end + 3);
    const auto path_start = rest.find_first_of("/?");
    std::string authority = rest.substr(0, path_start);
    t.path = path_start == std::string::npos ? "/" : rest.substr(path_start);
    if (!t.path.empty() && t.path[0] == '?') {
        t.path = "/" + t.path;
    }
    if (authority.empty()) {
        fail(url, "missing host");
    }
    std::string port_text;
    if (authority[0] == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            fail(url, "unterminated IPv6 literal");
        }
        t.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                fail(url, "junk after IPv6 literal");
            }
            port_text = authority.substr(close + 2);
        }
    } else {
        const auto colon = authority.rfind(':');
        t.host = authority.substr(0, colon);
        if (colon != std::string::npos) {
            port_text = authority.substr(colon + 1);
        }
    }
    t.port = 80;
    if (!port_text.empty()) {
        char* end = nullptr;
        const unsigned long p = std::strtoul(port_text.c_str(), &end, 10);
        if (*end != '\0' || p == 0 || p > 65535) {
            fail(url, "bad port '" + port_text + "'");
        }
        t.port = static_cast<unsigned>(p);
    } else if (t.scheme == "tcp") {
        fail(url, "tcp:// needs a port");
    }
    t.host_header = authority;

    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port_str = std::to_string(t.port);
    const int rc = getaddrinfo(t.host.c_str(), port_str.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
        fail(url, std::string("cannot resolve host: ") + gai_strerror(rc));
    }
    std::memcpy(&t.addr, res->ai_addr, res->ai_addrlen);
    t.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return t;
}

std::vector<sockaddr_in> parse_source_addrs(const std::string& list) {
    std::vector<sockaddr_in> out;
    size_t pos = 0;
    while (pos < list.size()) {
        auto comma = list.find(',', pos);
        if (comma == std::string::npos) {
            comma = list.size();
        }
        const std::string item = list.substr(pos, comma - pos);
        pos = comma + 1;
        if (item.empty()) {
            continue;
        }
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        if (inet_pton(AF_INET, item.c_str(), &sa.sin_addr) != 1) {
            throw std::runtime_error("bad --source-addrs entry '" + item + "' (IPv4 expected)");
        }
        out.push_back(sa);
    }
    return out;
}

} // namespace wsbench
