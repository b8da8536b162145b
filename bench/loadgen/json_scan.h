// json_scan.h — just enough JSON to read the gateway's pushes and replies on
// the load generator's hot path.
//
// A text message is one object or (batched pushes) an array of objects. Each
// object's top-level keys are walked once; the values of the keys the
// fan-out scenario needs ("type", "room", "data", "id", "code", "message")
// are returned as views of the raw bytes (escapes are not decoded: the names
// and payloads the benchmark uses contain none). Any other value, nested or
// not, is skipped by bracket counting. Strings are crossed with memchr, so a
// 1 KiB payload costs one vectorised scan, not a per-byte state machine.
// Not a validator: it accepts some malformed JSON (e.g. bad numbers), but
// never reads outside [p, end).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace wsbench {

// The fields of one object the scenario looks at.
struct envelope {
    std::string_view type;    // "type" string value
    std::string_view room;    // "room" string value
    std::string_view data;    // "data" string value (raw); see data_is_string
    std::string_view code;    // "code" string value (errors)
    std::string_view message; // "message" string value (errors)
    uint64_t id = 0;          // "id" when it is a non-negative integer
    bool has_id = false;      // an integer "id" was present
    bool data_is_string = false; // "data" was present and a string
};

namespace json_detail {

[[nodiscard]] inline bool is_space(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

[[nodiscard]] inline const char* skip_space(const char* p, const char* end) noexcept {
    while (p < end && is_space(*p)) {
        ++p;
    }
    return p;
}

// p is just after an opening quote; returns the closing quote or nullptr.
[[nodiscard]] inline const char* string_end(const char* p, const char* end) noexcept {
    const char* from = p;
    while (from < end) {
        const auto* q = static_cast<const char*>(std::memchr(from, '"', static_cast<size_t>(end - from)));
        if (q == nullptr) {
            return nullptr;
        }
        const char* b = q;
        while (b > p && b[-1] == '\\') {
            --b;
        }
        if (((q - b) & 1) == 0) {
            return q; // preceded by an even number of backslashes: not escaped
        }
        from = q + 1;
    }
    return nullptr;
}

// p at the first byte of a value; returns one past its end or nullptr.
[[nodiscard]] inline const char* skip_value(const char* p, const char* end) noexcept {
    if (p >= end) {
        return nullptr;
    }
    if (*p == '"') {
        const char* q = string_end(p + 1, end);
        return q == nullptr ? nullptr : q + 1;
    }
    if (*p == '{' || *p == '[') {
        unsigned depth = 0;
        while (p < end) {
            const char c = *p;
            if (c == '"') {
                const char* q = string_end(p + 1, end);
                if (q == nullptr) {
                    return nullptr;
                }
                p = q + 1;
                continue;
            }
            if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            ++p;
        }
        return nullptr;
    }
    // Number, true, false, null.
    const char* start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_space(*p)) {
        ++p;
    }
    return p == start ? nullptr : p;
}

} // namespace json_detail

// Scans the object starting at p ('{'). Returns one past its '}', filling
// `out`, or nullptr if it is malformed or truncated.
[[nodiscard]] inline const char* scan_object(const char* p, const char* end, envelope& out) noexcept {
    using namespace json_detail;
    out = envelope{};
    if (p >= end || *p != '{') {
        return nullptr;
    }
    p = skip_space(p + 1, end);
    if (p < end && *p == '}') {
        return p + 1;
    }
    while (p < end) {
        if (*p != '"') {
            return nullptr;
        }
        const char* key_end = string_end(p + 1, end);
        if (key_end == nullptr) {
            return nullptr;
        }
        const std::string_view key(p + 1, static_cast<size_t>(key_end - p - 1));
        p = skip_space(key_end + 1, end);
        if (p >= end || *p != ':') {
            return nullptr;
        }
        p = skip_space(p + 1, end);
        const char* value = p;
        p = skip_value(p, end);
        if (p == nullptr) {
            return nullptr;
        }
        const bool str = *value == '"';
        const std::string_view inner = str ? std::string_view(value + 1, static_cast<size_t>(p - value - 2))
                                           : std::string_view();
        if (key == "data") {
            out.data = inner;
            out.data_is_string = str;
        } else if (key == "type") {
            out.type = inner;
        } else if (key == "room") {
            out.room = inner;
        } else if (key == "id") {
            uint64_t v = 0;
            const char* d = value;
            while (d < p && *d >= '0' && *d <= '9' && d - value < 19) {
                v = v * 10 + static_cast<uint64_t>(*d - '0');
                ++d;
            }
            out.has_id = d == p && d > value;
            out.id = v;
        } else if (key == "code") {
            out.code = inner;
        } else if (key == "message") {
            out.message = inner;
        }
        p = skip_space(p, end);
        if (p >= end) {
            return nullptr;
        }
        if (*p == '}') {
            return p + 1;
        }
        if (*p != ',') {
            return nullptr;
        }
        p = skip_space(p + 1, end);
    }
    return nullptr;
}

// Fast path for the push as wsgate and the Node peer write it, with a data
// string of exactly data_len bytes:
//   {"type":"message","room":"R","from":"F","data":"<data_len bytes>"}
// Returns one past the '}' and fills `out`, or nullptr when the object has
// any other shape (the caller then falls back to scan_object). It does not
// look inside the data string: the caller validates the payload itself, and a
// string that is not exactly the payload fails that check either way.
[[nodiscard]] inline const char* scan_message_push(const char* p, const char* end, size_t data_len,
                                                   envelope& out) noexcept {
    using namespace json_detail;
    static constexpr std::string_view head = R"({"type":"message","room":")";
    static constexpr std::string_view from = R"(","from":")";
    static constexpr std::string_view data = R"(","data":")";
    if (static_cast<size_t>(end - p) < head.size() || std::memcmp(p, head.data(), head.size()) != 0) {
        return nullptr;
    }
    const char* room = p + head.size();
    const char* room_end = string_end(room, end);
    if (room_end == nullptr || static_cast<size_t>(end - room_end) < from.size() ||
        std::memcmp(room_end, from.data(), from.size()) != 0) {
        return nullptr;
    }
    const char* from_end = string_end(room_end + from.size(), end);
    if (from_end == nullptr || static_cast<size_t>(end - from_end) < data.size() ||
        std::memcmp(from_end, data.data(), data.size()) != 0) {
        return nullptr;
    }
    const char* d = from_end + data.size();
    if (static_cast<size_t>(end - d) < data_len + 2 || d[data_len] != '"' || d[data_len + 1] != '}' ||
        (data_len > 0 && d[data_len - 1] == '\\')) {
        return nullptr;
    }
    out = envelope{};
    out.type = "message";
    out.room = std::string_view(room, static_cast<size_t>(room_end - room));
    out.data = std::string_view(d, data_len);
    out.data_is_string = true;
    return d + data_len + 2;
}

// Calls f(const envelope&) for each object of a text message: a single
// object, or an array of objects. False if the message is malformed (objects
// before the fault have been passed to f). data_hint, when not 0, is the
// expected length of a push's data string: such pushes take the fast path.
template <class F>
[[nodiscard]] bool for_each_envelope(const char* p, size_t n, size_t data_hint, F&& f) {
    using namespace json_detail;
    const char* end = p + n;
    envelope env;
    const auto object = [&](const char* at) {
        const char* next = data_hint != 0 ? scan_message_push(at, end, data_hint, env) : nullptr;
        return next != nullptr ? next : scan_object(at, end, env);
    };
    p = skip_space(p, end);
    if (p < end && *p == '{') {
        p = object(p);
        if (p == nullptr) {
            return false;
        }
        f(static_cast<const envelope&>(env));
        return skip_space(p, end) == end;
    }
    if (p >= end || *p != '[') {
        return false;
    }
    p = skip_space(p + 1, end);
    if (p < end && *p == ']') {
        return skip_space(p + 1, end) == end;
    }
    while (p < end) {
        p = object(p);
        if (p == nullptr) {
            return false;
        }
        f(static_cast<const envelope&>(env));
        p = skip_space(p, end);
        if (p < end && *p == ']') {
            return skip_space(p + 1, end) == end;
        }
        if (p >= end || *p != ',') {
            return false;
        }
        p = skip_space(p + 1, end);
    }
    return false;
}

} // namespace wsbench
