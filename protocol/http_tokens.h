// Small helpers for HTTP header values (RFC 9110): optional whitespace and
// case-insensitive tokens. Shared by the upgrade parser and the
// Sec-WebSocket-Extensions negotiation (protocol/deflate.cpp).
#pragma once

#include <cstddef>
#include <string_view>

namespace wsgate::protocol::http {

inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

inline char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

// Case-insensitive (ASCII) equality; `lower` must already be lower case.
inline bool iequals(std::string_view s, std::string_view lower) {
    if (s.size() != lower.size()) {
        return false;
    }
    for (size_t i = 0; i < s.size(); ++i) {
        if (to_lower(s[i]) != lower[i]) {
            return false;
        }
    }
    return true;
}

// Without leading and trailing spaces and tabs.
inline std::string_view trim_ows(std::string_view s) {
    size_t b = 0;
    size_t e = s.size();
    while (b < e && is_ows(s[b])) {
        ++b;
    }
    while (e > b && is_ows(s[e - 1])) {
        --e;
    }
    return s.substr(b, e - b);
}

}  // namespace wsgate::protocol::http
