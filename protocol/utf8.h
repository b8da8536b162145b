// Incremental UTF-8 validation (RFC 3629, Unicode table 3-7 "well-formed byte sequences").
//
// WebSocket text messages and close reasons must be valid UTF-8 (RFC 6455 8.1), and a
// message may arrive in many fragments and many reads: a code point can be split at
// any byte. The validator is therefore a DFA whose whole state fits in a uint32_t that
// the caller carries from chunk to chunk. It rejects as soon as the bytes seen cannot
// be the prefix of any valid string (0xF5, overlong 0xC0 0x80, surrogate 0xED 0xA0,
// > U+10FFFF ...), so a connection fails at the earliest fragment, not at FIN.
//
// Cost: ASCII runs are skipped 16 / 8 bytes at a time (one load + mask test per word);
// other bytes take one table lookup each. No allocation, no exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace wsgate::protocol {

// The input so far is complete, valid UTF-8 (also the initial state).
inline constexpr uint32_t utf8_accept = 0;
// The input so far can never become valid; sticky.
inline constexpr uint32_t utf8_reject = 16;

// Validate n more bytes starting from `state` (utf8_accept for a new string).
// Returns the new state: utf8_accept if everything fed so far ends on a code point
// boundary, utf8_reject (returned at the first bad byte, the rest unread) if invalid,
// any other value if valid so far but in the middle of a multi-byte sequence.
uint32_t utf8_validate(uint32_t state, const uint8_t* p, size_t n);

inline uint32_t utf8_validate(uint32_t state, std::span<const uint8_t> s) {
    return utf8_validate(state, s.data(), s.size());
}

// One-shot: the whole of `s` is valid UTF-8.
inline bool is_valid_utf8(std::span<const uint8_t> s) {
    return utf8_validate(utf8_accept, s.data(), s.size()) == utf8_accept;
}

inline bool is_valid_utf8(std::string_view s) {
    return utf8_validate(utf8_accept, reinterpret_cast<const uint8_t*>(s.data()), s.size()) ==
           utf8_accept;
}

}  // namespace wsgate::protocol
