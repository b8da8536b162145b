// payload.h — what an echo benchmark message carries, and how it is checked.
//
// Layout: bytes [0, 8) hold the send time, bytes [8, size) a fixed filler
// ('a'..'z' repeating). The time is CLOCK_MONOTONIC nanoseconds modulo 2^48
// (~78 h), written as 8 characters of the base64url alphabet, so the payload
// is valid UTF-8 and can travel in text frames that servers validate. Latency
// is (receive time - stamp) mod 2^48. The receiver compares the filler with
// the template, so a server that corrupts or truncates payloads is caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace wsbench {

constexpr size_t stamp_size = 8;
constexpr uint64_t stamp_mask = (uint64_t{1} << 48) - 1;

void encode_stamp(uint64_t ns, uint8_t* out) noexcept;

// False when the 8 bytes are not a stamp we wrote.
[[nodiscard]] bool decode_stamp(const uint8_t* in, uint64_t& ns) noexcept;

// Elapsed time from a decoded stamp to `now_ns`.
[[nodiscard]] inline uint64_t stamp_elapsed(uint64_t now_ns, uint64_t stamp) noexcept {
    return (now_ns - stamp) & stamp_mask;
}

// The expected message body; bytes [0, 8) are a placeholder for the stamp.
struct payload_template {
    explicit payload_template(size_t size);

    std::vector<uint8_t> bytes; // full message, stamp bytes zero
};

} // namespace wsbench
