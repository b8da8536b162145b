// Client byte streams for ws_fuzz.cpp: a frame builder, and the structured mode
// that turns fuzz bytes into a sequence of mostly well-formed masked frames.
//
// Raw bytes mostly die at the first header check, so the structured mode spends
// the input on decisions instead. Per frame:
//   descriptor byte d: bits 0-2 what (data frame continuing the open message or
//     starting one (text/binary); ping; pong; close 1 in 4; out of sequence 1 in 8),
//     bit 3 no FIN (with v bit 0), bits 4-7 length class (0, 1, 2-9, 0-125, 125,
//     126-381, 126-4125, around 4 KiB, 127, around 64 KiB, one of 64-128 KiB);
//   variation byte v: the mask key (0xFF: key 0); v < 10 is an anomaly (unmasked,
//     RSV, non-minimal length, raw opcode, truncated stream, huge declared length,
//     FIN flipped, key 0, raw bytes before the frame, declared length too long);
//     v >> 4 == 0xE allows invalid UTF-8, == 0x7 ends text inside a code point;
//   then the bytes the length class or anomaly needs, then up to 8 payload bytes
//   (an LCG makes the rest). Text messages come from a UTF-8 generator (one input
//   byte picks each code point: ASCII, 2/3/4-byte, edge values) whose stream goes on
//   across fragments, so code points split across frames.
// Any byte string is a valid description, which is what mutation-based fuzzing needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "fuzz_common.h"

namespace wsgate::fuzz::wsgen {

// How a client frame is laid out on the wire.
struct frame_opts {
    bool fin = true;
    uint8_t rsv = 0;  // 3 bits
    bool masked = true;
    int len_bytes = -1;         // -1 minimal; 0, 2 or 8 forced
    uint64_t declared = ~0ull;  // length written in the header (default: payload size)
    uint32_t mask = 0x37fa213d;
};

inline void append_frame(bytes& s, uint8_t opcode, std::span<const uint8_t> payload,
                         const frame_opts& o = {}) {
    uint64_t len = o.declared == ~0ull ? payload.size() : o.declared;
    s.push_back(static_cast<uint8_t>((o.fin ? 0x80 : 0) | ((o.rsv & 7) << 4) | (opcode & 0xF)));
    int lb = o.len_bytes >= 0 ? o.len_bytes : len < 126 ? 0 : len < 65536 ? 2 : 8;
    uint8_t m = o.masked ? 0x80 : 0;
    if (lb == 0) {
        s.push_back(static_cast<uint8_t>(m | (len & 0x7f)));
    } else {
        s.push_back(static_cast<uint8_t>(m | (lb == 2 ? 126 : 127)));
        for (int i = lb - 1; i >= 0; --i) {
            s.push_back(static_cast<uint8_t>(len >> (8 * i)));
        }
    }
    uint8_t key[4] = {static_cast<uint8_t>(o.mask >> 24), static_cast<uint8_t>(o.mask >> 16),
                      static_cast<uint8_t>(o.mask >> 8), static_cast<uint8_t>(o.mask)};
    if (o.masked) {
        s.insert(s.end(), key, key + 4);
    }
    for (size_t i = 0; i < payload.size(); ++i) {
        s.push_back(o.masked ? static_cast<uint8_t>(payload[i] ^ key[i % 4]) : payload[i]);
    }
}

inline void append_frame(bytes& s, uint8_t opcode, std::string_view payload,
                         const frame_opts& o = {}) {
    append_frame(
        s, opcode,
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()),
        o);
}

inline void append_utf8(bytes& s, uint32_t cp) {
    if (cp < 0x80) {
        s.push_back(static_cast<uint8_t>(cp));
    } else if (cp < 0x800) {
        s.push_back(static_cast<uint8_t>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        s.push_back(static_cast<uint8_t>(0xE0 | (cp >> 12)));
        s.push_back(static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F)));
        s.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
    } else {
        s.push_back(static_cast<uint8_t>(0xF0 | (cp >> 18)));
        s.push_back(static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F)));
        s.push_back(static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F)));
        s.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
    }
}

// Bytes for payloads: from the input while the frame's budget lasts, then an LCG.
struct byte_source {
    input_reader& r;
    uint32_t lcg;
    size_t budget = 0;  // input bytes this frame may still take

    uint8_t next() {
        if (budget > 0 && !r.empty()) {
            --budget;
            return r.u8();
        }
        lcg = lcg * 1664525u + 1013904223u;
        return static_cast<uint8_t>(lcg >> 24);
    }
    uint32_t next16() {
        uint32_t a = next();
        return (a << 8) | next();
    }
    uint32_t next24() {
        uint32_t a = next16();
        return (a << 8) | next();
    }
};

// A stream of UTF-8 (mostly valid) cut into frame payloads of any length.
struct utf8_stream {
    bytes pending;  // rest of the current code point (or invalid sequence)
    size_t at = 0;
    bool invalid_ok = false;  // may produce invalid sequences (set per frame)

    void refill(byte_source& src) {
        static constexpr uint32_t edges[] = {0x7F,   0x80,   0x7FF,  0x800,   0xD7FF,   0xE000,
                                             0xFEFF, 0xFFFD, 0xFFFF, 0x10000, 0x10FFFF, 0x0};
        static constexpr std::string_view invalid[] = {
            "\xC0\x80",         "\xC1\xBF", "\xED\xA0\x80", "\xED\xBF\xBF", "\xF4\x90\x80\x80",
            "\xF5\x80\x80\x80", "\xFF",     "\xFE",         "\x80",         "\xE0\x80\x80",
            "\xF0\x80\x80\x80", "\xC2",     "\xE1\x80",     "\xF1\x80\x80", "\xC2\x41",
            "\xE0\xA0\x41"};
        pending.clear();
        at = 0;
        uint8_t s = src.next();
        switch (s & 15) {
        case 8: append_utf8(pending, 0x80 + src.next16() % 0x780); break;
        case 9: {
            uint32_t cp = 0x800 + src.next16() % 0xF800;
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp += 0x800;
            }
            append_utf8(pending, cp);
            break;
        }
        case 10: append_utf8(pending, 0x10000 + src.next24() % 0x100000); break;
        case 11: append_utf8(pending, edges[src.next() % std::size(edges)]); break;
        case 12:
            if (invalid_ok) {  // 1 in 16 code points of a frame that allows it
                std::string_view v = invalid[src.next() % std::size(invalid)];
                pending.assign(v.begin(), v.end());
                break;
            }
            [[fallthrough]];
        default:
            pending.push_back(static_cast<uint8_t>(s >> 1));  // ASCII, controls included
            break;
        }
    }
    void take(bytes& out, size_t n, byte_source& src) {
        while (n > 0) {
            if (at == pending.size()) {
                refill(src);
            }
            size_t k = std::min(n, pending.size() - at);
            out.insert(out.end(), pending.begin() + at, pending.begin() + at + k);
            at += k;
            n -= k;
        }
    }
    size_t rest() const { return pending.size() - at; }
    // Finish the code point the last take() stopped inside.
    void finish(bytes& out) {
        out.insert(out.end(), pending.begin() + at, pending.end());
        at = pending.size();
    }
    void reset() {
        pending.clear();
        at = 0;
    }
};

// Turn the rest of `r` into a client byte stream of about `cap` bytes at most, plus
// one frame of 64 KiB or more if `allow_big`.
inline bytes build_structured(input_reader& r, size_t cap, bool allow_big) {
    bytes s;
    bool msg_open = false;
    bool msg_text = false;
    utf8_stream text;
    byte_source src{r, 0x1234567u};
    int big_frames = 0;
    while (!r.empty() && s.size() < cap) {
        const uint8_t d = r.u8();  // descriptor
        const uint8_t v = r.u8();  // variation
        const int sel = d & 7;
        const bool nofin = (d & 8) && (v & 1);  // 1 in 4 data frames leaves the message open
        const int lclass = d >> 4;
        src.lcg ^= static_cast<uint32_t>(s.size()) * 2654435761u + v;
        src.budget = 8;  // the rest of a payload comes from the LCG: inputs stay dense

        frame_opts o;
        o.mask = v == 0xFF ? 0 : (v * 0x9E3779B1u) ^ static_cast<uint32_t>(s.size() * 0x85EBCA6Bu);
        uint8_t op = 0;
        switch (sel) {
        case 4: op = 9; break;
        case 5: op = 10; break;
        case 6:
            if ((v & 6) == 0) {  // 1 in 32 frames: a close usually ends the stream
                op = 8;
                break;
            }
            [[fallthrough]];
        case 7:
            if ((v & 0x0E) == 0) {  // 1 in 64 frames out of sequence: a new message
                                    // inside a fragmented one, or a continuation
                                    // with none open (1002)
                op = msg_open ? ((d & 8) ? 2 : 1) : 0;
                o.fin = !nofin;
                break;
            }
            [[fallthrough]];
        default:  // next data frame: continue the open message or start one
            op = msg_open ? 0 : (sel & 1) ? 2 : 1;
            o.fin = !nofin;
            break;
        }
        const bool control = op & 8;

        uint64_t len = 0;
        switch (lclass) {
        case 0: len = 0; break;
        case 1: len = 1; break;
        case 2: len = 2 + r.u8() % 8; break;
        case 9: len = 125; break;
        case 10: len = 126 + r.u8(); break;
        case 11: len = 126 + r.u16() % 4000; break;
        case 12: len = 4070 + r.u8() % 40; break;  // around wslay's 4 KiB input buffer
        case 13: len = 127; break;
        case 14: len = 65535 + r.u8() % 4; break;  // the fast path's whole-frame limit is 65536
        case 15: {
            static constexpr uint32_t big[] = {65535, 65536, 65537, 65540, 70000, 1 << 17};
            len = big[r.u8() % std::size(big)];
            break;
        }
        default: len = r.u8() % 126; break;
        }
        if (control) {
            len %= 126;
        }
        if (len >= 65535 && (!allow_big || big_frames++ > 0)) {
            len = 126 + len % 4000;  // at most one large frame per stream keeps runs fast
        }

        // Anomalies: rare on purpose, so most streams get deep.
        int anomaly = v < 10 ? v : -1;
        bool stop_after = false;
        switch (anomaly) {
        case 0: o.masked = false; break;
        case 1: o.rsv = static_cast<uint8_t>(1 + r.u8() % 7); break;
        case 2: o.len_bytes = (r.u8() & 1) ? 8 : 2; break;
        case 3: op = r.u8() & 0xF; break;
        case 5: {
            static constexpr uint64_t huge[] = {1ull << 63, ~0ull >> 1,       1ull << 40,
                                                1ull << 32, (1ull << 30) + 1, (1ull << 20) + 1,
                                                65536};
            o.declared = huge[r.u8() % std::size(huge)];
            len %= 16;
            break;
        }
        case 6: o.fin = !o.fin; break;
        case 7: o.mask = 0; break;
        case 8: {  // raw bytes before the frame
            size_t k = r.u8() % 16;
            for (size_t i = 0; i < k; ++i) {
                s.push_back(r.u8());
            }
            break;
        }
        case 9: o.declared = len + 1 + r.u8() % 3; break;
        default: break;
        }

        bytes payload;
        if (op == 8) {
            static constexpr uint16_t codes[] = {1000, 1001, 1002, 1003, 1004,  1005, 1006,
                                                 1007, 1008, 1009, 1010, 1011,  1012, 1013,
                                                 1014, 1015, 1016, 999,  0,     2999, 3000,
                                                 3999, 4000, 4999, 5000, 65535, 1000, 1000};
            if (len >= 2) {
                uint16_t c = codes[r.u8() % std::size(codes)];
                payload = {static_cast<uint8_t>(c >> 8), static_cast<uint8_t>(c)};
                utf8_stream reason;
                reason.invalid_ok = (v >> 4) == 0xE;
                reason.take(payload, len - 2, src);
                if (payload.size() + reason.rest() <= 125) {
                    reason.finish(payload);
                }
            } else if (len == 1) {
                payload.push_back(src.next());
            }
        } else if (!control && (op == 1 || (op == 0 && msg_open && msg_text))) {
            if (op == 1) {
                text.reset();
            }
            text.invalid_ok = (v >> 4) == 0xE;  // 1 in 16 frames
            text.take(payload, len, src);
            if (o.fin && (v >> 4) != 0x7) {
                text.finish(payload);  // usually end the message on a code point boundary
            }
        } else {
            for (uint64_t i = 0; i < len; ++i) {
                payload.push_back(src.next());
            }
        }

        if (anomaly == 4) {  // truncated: the stream ends inside this frame
            bytes f;
            append_frame(f, op, payload, o);
            f.resize(r.u16() % (f.size() + 1));
            s.insert(s.end(), f.begin(), f.end());
            stop_after = true;
        } else {
            append_frame(s, op, payload, o);
        }
        if (op == 1 || op == 2) {
            msg_open = !o.fin;
            msg_text = op == 1;
        } else if (op == 0 && o.fin) {
            msg_open = false;
        }
        if (stop_after) {
            break;
        }
    }
    return s;
}

}  // namespace wsgate::fuzz::wsgen
