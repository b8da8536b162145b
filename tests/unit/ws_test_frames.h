// Test helpers for protocol/ws_conn: a client frame builder (masked, with any
// fin/rsv/opcode/length encoding, including illegal ones), a parser for the
// unmasked frames the server writes, a recording handler, and feeding a byte
// stream whole, byte by byte or in seeded random slices.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/ws_conn.h"

namespace wsgate::protocol::test {

using bytes = std::vector<uint8_t>;

inline bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

inline bytes concat(std::initializer_list<bytes> parts) {
    bytes out;
    for (const auto& p : parts) {
        out.insert(out.end(), p.begin(), p.end());
    }
    return out;
}

// How a client frame is laid out on the wire.
struct frame_opts {
    bool fin = true;
    uint8_t rsv = 0;             // 3 bits: RSV1 = 4, RSV2 = 2, RSV3 = 1
    bool masked = true;
    int len_bytes = -1;          // -1 minimal, 0 (7-bit), 2 (16-bit) or 8 (64-bit) forced
    uint64_t declared_len = ~0ull;  // length written in the header (default: payload size)
    uint32_t mask = 0x37fa213d;
};

inline bytes client_frame(uint8_t opcode, std::span<const uint8_t> payload, frame_opts o = {}) {
    uint64_t len = o.declared_len == ~0ull ? payload.size() : o.declared_len;
    bytes f;
    f.push_back(static_cast<uint8_t>((o.fin ? 0x80 : 0) | ((o.rsv & 7) << 4) | (opcode & 0xF)));
    int lb = o.len_bytes >= 0 ? o.len_bytes : len < 126 ? 0 : len < 65536 ? 2 : 8;
    uint8_t m = o.masked ? 0x80 : 0;
    if (lb == 0) {
        f.push_back(static_cast<uint8_t>(m | len));
    } else {
        f.push_back(static_cast<uint8_t>(m | (lb == 2 ? 126 : 127)));
        for (int i = lb - 1; i >= 0; --i) {
            f.push_back(static_cast<uint8_t>(len >> (8 * i)));
        }
    }
    uint8_t key[4] = {static_cast<uint8_t>(o.mask >> 24), static_cast<uint8_t>(o.mask >> 16),
                      static_cast<uint8_t>(o.mask >> 8), static_cast<uint8_t>(o.mask)};
    if (o.masked) {
        f.insert(f.end(), key, key + 4);
    }
    for (size_t i = 0; i < payload.size(); ++i) {
        f.push_back(o.masked ? static_cast<uint8_t>(payload[i] ^ key[i % 4]) : payload[i]);
    }
    return f;
}

inline bytes client_frame(uint8_t opcode, std::string_view payload, frame_opts o = {}) {
    bytes p = to_bytes(payload);
    return client_frame(opcode, std::span<const uint8_t>(p), o);
}

inline bytes close_payload(uint16_t code, std::string_view reason = {}) {
    bytes p{static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
    p.insert(p.end(), reason.begin(), reason.end());
    return p;
}

// The exact bytes the server should write for one unmasked FIN frame.
inline bytes server_frame(uint8_t opcode, std::span<const uint8_t> payload) {
    frame_opts o;
    o.masked = false;
    return client_frame(opcode, payload, o);
}
inline bytes server_frame(uint8_t opcode, std::string_view payload) {
    return server_frame(opcode, std::span<const uint8_t>(to_bytes(payload)));
}
inline bytes server_close(uint16_t code, std::string_view reason) {
    return server_frame(0x8, std::span<const uint8_t>(close_payload(code, reason)));
}
inline bytes fail_close(uint16_t code) {
    std::string_view reason = code == close_code::invalid_payload    ? "invalid utf-8"
                              : code == close_code::message_too_big ? "message too big"
                                                                     : "protocol error";
    return server_close(code, reason);
}

struct message {
    ws_opcode opcode;
    bytes payload;
    bool operator==(const message&) const = default;
};

inline void PrintTo(const message& m, std::ostream* os) {
    *os << "{op " << int(m.opcode) << ", " << m.payload.size() << " bytes}";
}

struct recorder : ws_handler {
    std::vector<message> messages;
    void on_message(ws_opcode opcode, std::span<const uint8_t> payload) override {
        messages.push_back({opcode, bytes(payload.begin(), payload.end())});
    }
};

// One way to cut a byte stream into feed() calls.
struct split_mode {
    enum kind { whole, bytewise, random } k;
    uint32_t seed = 0;
    std::string name() const {
        return k == whole ? "whole" : k == bytewise ? "bytewise" : "random/" + std::to_string(seed);
    }
};

inline std::vector<split_mode> all_modes() {
    std::vector<split_mode> m{{split_mode::whole}, {split_mode::bytewise}};
    for (uint32_t seed : {1u, 7u, 42u, 1234u, 99991u}) {
        m.push_back({split_mode::random, seed});
    }
    return m;
}

// A connection with its pool, handler and output queue. The pool is declared
// first so it outlives the connection.
struct harness {
    ws_frame_pool pool;
    ws_config cfg;
    recorder rec;
    byte_buffer out;
    ws_conn conn;
    inflater* inflate = nullptr;  // permessage-deflate (set with conn.enable_deflate())

    void feed(std::span<const uint8_t> in) { conn.feed(in, pool, cfg, rec, out, inflate); }
    void feed(const bytes& in) { feed(std::span<const uint8_t>(in)); }

    void feed(const bytes& in, split_mode m) {
        if (m.k == split_mode::whole) {
            feed(in);
            return;
        }
        std::mt19937 rng(m.seed);
        size_t i = 0;
        while (i < in.size()) {
            size_t n = 1;
            if (m.k == split_mode::random) {
                n = rng() % 2 ? 1 + rng() % 8 : 1 + rng() % 12000;
            }
            n = std::min(n, in.size() - i);
            feed(std::span<const uint8_t>(in.data() + i, n));
            i += n;
        }
    }

    bytes out_bytes() const { return bytes(out.data(), out.data() + out.size()); }
};

}  // namespace wsgate::protocol::test
