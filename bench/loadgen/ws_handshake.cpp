// ws_handshake.cpp — see ws_handshake.h.
#include "ws_handshake.h"

#include "rng.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>
#include <string_view>

namespace wsbench {

namespace {

constexpr std::string_view ws_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        char y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = static_cast<char>(x - 'A' + 'a');
        }
        if (y >= 'A' && y <= 'Z') {
            y = static_cast<char>(y - 'A' + 'a');
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

// True if the comma-separated header value lists `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
    while (!value.empty()) {
        const auto comma = value.find(',');
        if (iequals(trim(value.substr(0, comma)), token)) {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        value.remove_prefix(comma + 1);
    }
    return false;
}

} // namespace

accept_token compute_accept(const char* key, size_t key_len) {
    unsigned char input[128];
    accept_token out{};
    if (key_len + ws_guid.size() > sizeof(input)) {
        return out;
    }
    std::memcpy(input, key, key_len);
    std::memcpy(input + key_len, ws_guid.data(), ws_guid.size());
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(input, key_len + ws_guid.size(), digest);
    unsigned char b64[32];
    EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH); // 28 chars + NUL
    std::memcpy(out.data(), b64, out.size());
    return out;
}

namespace {
std::string g_extra_headers;  // set once by main() before any thread starts
} // namespace

void set_extra_request_headers(std::string lines) { g_extra_headers = std::move(lines); }

handshake_request make_handshake_request(const std::string& host_header, const std::string& path,
                                         rng& random) {
    unsigned char raw[16];
    for (size_t i = 0; i < sizeof(raw); i += 8) {
        const uint64_t r = random.next();
        std::memcpy(raw + i, &r, 8);
    }
    unsigned char key[32];
    EVP_EncodeBlock(key, raw, sizeof(raw)); // 24 chars + NUL
    const auto* key_chars = reinterpret_cast<const char*>(key);

    handshake_request req;
    req.expected = compute_accept(key_chars, 24);
    req.bytes.reserve(256);
    req.bytes += "GET ";
    req.bytes += path;
    req.bytes += " HTTP/1.1\r\nHost: ";
    req.bytes += host_header;
    req.bytes += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
    req.bytes.append(key_chars, 24);
    req.bytes += "\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsgate-bench\r\n";
    req.bytes += g_extra_headers;
    req.bytes += "\r\n";
    return req;
}

handshake_result parse_handshake_response(const uint8_t* data, size_t len,
                                          const accept_token& expected) {
    handshake_result r;
    const std::string_view all(reinterpret_cast<const char*>(data), len);
    const auto end = all.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (len > max_response_header) {
            r.status = handshake_status::failed;
            r.error = "response header too large";
        }
        return r;
    }
    r.consumed = end + 4;
    std::string_view head = all.substr(0, end + 2);

    // Status line: HTTP/1.1 101 Switching Protocols
    const auto eol = head.find("\r\n");
    const std::string_view status_line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") {
        r.status = handshake_status::failed;
        r.error = "malformed status line";
        return r;
    }
    const auto sp = status_line.find(' ');
    if (sp == std::string_view::npos || sp + 4 > status_line.size()) {
        r.status = handshake_status::failed;
        r.error = "malformed status line";
        return r;
    }
    for (size_t i = sp + 1; i < sp + 4; ++i) {
        const char c = status_line[i];
        if (c < '0' || c > '9') {
            r.status = handshake_status::failed;
            r.error = "malformed status code";
            return r;
        }
        r.http_status = r.http_status * 10 + (c - '0');
    }
    if (r.http_status != 101) {
        r.status = handshake_status::failed;
        r.error = "status is not 101";
        return r;
    }

    bool upgrade_ok = false;
    bool connection_ok = false;
    bool accept_ok = false;
    while (!head.empty()) {
        const auto line_end = head.find("\r\n");
        const std::string_view line = head.substr(0, line_end);
        head.remove_prefix(line_end + 2);
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            continue;
        }
        const std::string_view name = trim(line.substr(0, colon));
        const std::string_view value = trim(line.substr(colon + 1));
        if (iequals(name, "upgrade")) {
            upgrade_ok = iequals(value, "websocket");
        } else if (iequals(name, "connection")) {
            connection_ok = has_token(value, "upgrade");
        } else if (iequals(name, "sec-websocket-accept")) {
            accept_ok = value == std::string_view(expected.data(), expected.size());
        }
    }
    if (!accept_ok) {
        r.status = handshake_status::failed;
        r.error = "missing or wrong Sec-WebSocket-Accept";
    } else if (!upgrade_ok || !connection_ok) {
        r.status = handshake_status::failed;
        r.error = "missing Upgrade/Connection headers";
    } else {
        r.status = handshake_status::ok;
    }
    return r;
}

} // namespace wsbench
