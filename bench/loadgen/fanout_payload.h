// fanout_payload.h — what a fan-out publication carries in its "data" string.
//
// Layout (printable ASCII only, so the string needs no JSON escaping and
// every server forwards it byte for byte):
//   [0, 7)   send time: CLOCK_MONOTONIC ns mod 2^42 (~73 min), base64url
//   [7, 11)  publisher: global id room * P + p (24 bits)
//   [11, 16) sequence number of that publisher, from 0 (30 bits)
//   [16, B)  filler 'a'..'z' repeating, as in payload_template
// 16 bytes is the smallest publication. The receiver checks the length, the
// filler, that the publisher belongs to its room and the sequence number, so
// a truncated, corrupted, misrouted, lost, duplicated or reordered delivery
// is caught.
#pragma once

#include "payload.h"

#include <cstddef>
#include <cstdint>

namespace wsbench {

constexpr size_t fanout_header_size = 16;
constexpr uint64_t fanout_time_mask = (uint64_t{1} << 42) - 1;
constexpr uint64_t fanout_max_publishers = uint64_t{1} << 24;
constexpr uint64_t fanout_max_seq = uint64_t{1} << 30;

struct fanout_stamp {
    uint64_t ns = 0;        // send time mod 2^42
    uint32_t publisher = 0; // global publisher id
    uint32_t seq = 0;       // publisher's sequence number
};

inline void encode_fanout(const fanout_stamp& s, uint8_t* out) noexcept {
    encode_b64_digits(s.ns & fanout_time_mask, out, 7);
    encode_b64_digits(s.publisher, out + 7, 4);
    encode_b64_digits(s.seq, out + 11, 5);
}

// False when the 16 bytes are not a header we wrote.
[[nodiscard]] inline bool decode_fanout(const uint8_t* in, fanout_stamp& s) noexcept {
    uint64_t ns = 0;
    uint64_t pub = 0;
    uint64_t seq = 0;
    if (!decode_b64_digits(in, 7, ns) || !decode_b64_digits(in + 7, 4, pub) ||
        !decode_b64_digits(in + 11, 5, seq)) {
        return false;
    }
    s.ns = ns;
    s.publisher = static_cast<uint32_t>(pub);
    s.seq = static_cast<uint32_t>(seq);
    return true;
}

[[nodiscard]] inline uint64_t fanout_elapsed(uint64_t now_ns, uint64_t stamp_ns) noexcept {
    return (now_ns - stamp_ns) & fanout_time_mask;
}

} // namespace wsbench
