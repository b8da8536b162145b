// payload.h — what an echo benchmark message carries, and how it is checked.
//
// Layout: bytes [0, 8) hold the send time, bytes [8, size) a fixed filler
// ('a'..'z' repeating). The time is CLOCK_MONOTONIC nanoseconds modulo 2^48
// (~78 h), written as 8 characters of the base64url alphabet, so the payload
// is valid UTF-8 and can travel in text frames that servers validate. Latency
// is (receive time - stamp) mod 2^48. The receiver compares the filler with
// the template, so a server that corrupts or truncates payloads is caught.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace wsbench {

constexpr size_t stamp_size = 8;
constexpr uint64_t stamp_mask = (uint64_t{1} << 48) - 1;

void encode_stamp(uint64_t ns, uint8_t* out) noexcept;

inline constexpr char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Byte -> digit value, -1 outside the alphabet.
inline constexpr std::array<int8_t, 256> b64url_decode_table = [] {
    std::array<int8_t, 256> t{};
    for (auto& v : t) {
        v = -1;
    }
    for (int i = 0; i < 64; ++i) {
        t[static_cast<unsigned char>(b64url_alphabet[i])] = static_cast<int8_t>(i);
    }
    return t;
}();

// The low 6*n bits of v as n base64url digits, most significant first.
inline void encode_b64_digits(uint64_t v, uint8_t* out, unsigned n) noexcept {
    for (unsigned i = n; i > 0; --i) {
        out[i - 1] = static_cast<uint8_t>(b64url_alphabet[v & 63]);
        v >>= 6;
    }
}

// Reads n base64url digits; false if one is not in the alphabet. Inline: on
// the fan-out hot path it runs three times per delivery.
[[nodiscard]] inline bool decode_b64_digits(const uint8_t* in, unsigned n, uint64_t& v) noexcept {
    uint64_t acc = 0;
    int bad = 0;
    for (unsigned i = 0; i < n; ++i) {
        const int8_t d = b64url_decode_table[in[i]];
        bad |= d; // negative iff some digit was -1
        acc = (acc << 6) | static_cast<uint64_t>(static_cast<uint8_t>(d) & 63);
    }
    v = acc;
    return bad >= 0;
}

// False when the 8 bytes are not a stamp we wrote.
[[nodiscard]] bool decode_stamp(const uint8_t* in, uint64_t& ns) noexcept;

// Elapsed time from a decoded stamp to `now_ns`.
[[nodiscard]] inline uint64_t stamp_elapsed(uint64_t now_ns, uint64_t stamp) noexcept {
    return (now_ns - stamp) & stamp_mask;
}

// The expected message body; bytes [0, 8) are a placeholder for the stamp.
struct payload_template {
    // text_like: a filler that compresses like real JSON text instead of a..z (fanout --text-payload).
    explicit payload_template(size_t size, bool text_like = false);

    std::vector<uint8_t> bytes; // full message, stamp bytes zero
};

} // namespace wsbench
