// Our frame parser's pieces: header parsing and word-wise unmasking.
//
// Used by ws_conn.cpp for frames whose header arrives whole (wslay parses the
// others; see the comment at the top of ws_conn.cpp). Header-only so that the
// micro-benchmarks and tests reach the same code. No I/O, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace wsgate::protocol::frame {

inline bool is_control(uint8_t opcode) { return (opcode & 0x8) != 0; }

// Header length once its first two bytes are known (2 + extended length + key).
inline size_t header_size(const uint8_t b[2]) {
    size_t n = 2 + ((b[1] & 0x80) ? 4 : 0);
    uint8_t len7 = b[1] & 0x7f;
    return n + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

// Modular (uint64_t) on purpose: a header may announce up to 2^63-1 bytes, and
// pending is only ever compared with 0, which wrap-around arithmetic preserves.
inline uint64_t wire_size(uint64_t payload_length, bool masked) {
    uint64_t header = 2 + (payload_length < 126 ? 0 : payload_length < 65536 ? 2 : 8) +
                      (masked ? 4 : 0);
    return header + payload_length;
}

// Largest payload handed on as one chunk (and the largest chunk a streamed frame
// is unmasked in): bounds the per-worker scratch buffer.
inline constexpr uint64_t whole_frame_limit = 64 * 1024;

// XOR-unmask n bytes from src into dst, 8 bytes at a time. wslay unmasks one
// byte per iteration with a modulo, ~3.5 ns/byte measured: the dominant cost
// of echoing 1 KiB messages. `key` is the 4-byte masking key.
inline void unmask_copy(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t key[4]) {
    uint32_t k32;
    std::memcpy(&k32, key, 4);
    uint64_t k64 = (static_cast<uint64_t>(k32) << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        std::memcpy(&v, src + i, 8);
        v ^= k64;
        std::memcpy(dst + i, &v, 8);
    }
    for (; i < n; ++i) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

// Unmask n bytes at payload offset `off` (the key rotates with the offset).
inline void unmask_at(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t key[4], uint64_t off) {
    uint8_t k[4];
    for (int i = 0; i < 4; ++i) {
        k[i] = key[(off + static_cast<uint64_t>(i)) & 3];
    }
    unmask_copy(dst, src, n, k);
}

// Parsed frame header: what our parser needs before it can take a frame.
struct frame_header {
    bool fin = false;
    bool masked = false;
    uint8_t rsv = 0;
    uint8_t opcode = 0;
    uint64_t len = 0;
    size_t size = 0;  // header bytes
    const uint8_t* key = nullptr;
};

// True when `in` starts with a complete header that wslay would accept. Anything
// wslay rejects itself (control frame > 125 bytes or not FIN, non-minimal or
// 2^63+ lengths) is left to wslay, so the outcome stays wslay's.
inline bool parse_header(std::span<const uint8_t> in, frame_header& h) {
    if (in.size() < 2) {
        return false;
    }
    const uint8_t* p = in.data();
    h.fin = (p[0] & 0x80) != 0;
    h.rsv = (p[0] >> 4) & 0x7;
    h.opcode = p[0] & 0x0f;
    h.masked = (p[1] & 0x80) != 0;
    h.len = p[1] & 0x7f;
    h.size = header_size(p);
    if (in.size() < h.size) {
        return false;
    }
    if (is_control(h.opcode) && (h.len > 125 || !h.fin)) {
        return false;
    }
    if (h.len == 126) {
        h.len = (static_cast<uint64_t>(p[2]) << 8) | p[3];
        if (h.len < 126) {
            return false;
        }
    } else if (h.len == 127) {
        h.len = 0;
        for (int i = 0; i < 8; ++i) {
            h.len = (h.len << 8) | p[2 + i];
        }
        if (h.len < 65536 || (h.len >> 63) != 0) {
            return false;
        }
    }
    h.key = h.masked ? p + h.size - 4 : nullptr;
    return true;
}

// Write the header of an unfragmented, unmasked server frame (FIN set) whose
// payload of `len` bytes follows elsewhere (batched pushes are assembled from
// iovecs; every other outbound frame goes through wslay). Returns its size (2–10).
inline constexpr size_t max_server_header = 10;
inline size_t write_server_header(uint8_t* out, uint8_t opcode, uint64_t len) {
    out[0] = static_cast<uint8_t>(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = static_cast<uint8_t>(len);
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = static_cast<uint8_t>(len >> 8);
        out[3] = static_cast<uint8_t>(len);
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; ++i) {
        out[2 + i] = static_cast<uint8_t>(len >> (56 - 8 * i));
    }
    return 10;
}

}  // namespace wsgate::protocol::frame
