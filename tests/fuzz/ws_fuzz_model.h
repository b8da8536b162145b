// Reference model of the server side of RFC 6455 receiving, for ws_fuzz.cpp.
//
// Written from the RFC and from the contract in protocol/ws_conn.h, not from
// ws_conn.cpp or wslay: it walks the whole client byte stream once and says which
// messages the handler gets, which bytes the server writes (pongs, close replies,
// failure closes, the handler's echoes and close), and the final state and close
// codes. The fuzz target compares every way of feeding the stream against it.
//
// Where the RFC leaves a choice, the model follows ws_conn's documented one:
//   - a frame's header is checked once its first payload byte is there (or at once
//     for an empty frame): a bare header at the end of the stream decides nothing;
//   - order of checks: control frame with length > 125 or without FIN, then a
//     non-minimal length or a 64-bit length with the top bit (1002); then opcode
//     sequencing / reserved opcode, then unmasked or RSV set (1002); then the
//     message size from the header (1009); then UTF-8 of text, at the first byte
//     that can no longer be valid, also inside an incomplete frame (1007);
//   - a close echoes the peer's code without the reason (an empty close gets an
//     empty close); failures send "<code> <reason>" and drop the open message.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz_common.h"

namespace wsgate::fuzz::wsmodel {

// Incremental UTF-8 check (RFC 3629; Unicode table 3-7 of well-formed sequences).
struct utf8_ref {
    int need = 0;       // continuation bytes still due for the current code point
    uint8_t lo = 0x80;  // range allowed for the next continuation byte
    uint8_t hi = 0xBF;
    bool bad = false;

    void feed(const uint8_t* p, size_t n) {
        for (size_t i = 0; i < n && !bad; ++i) {
            uint8_t b = p[i];
            if (need > 0) {
                if (b < lo || b > hi) {
                    bad = true;
                    break;
                }
                --need;
                lo = 0x80;
                hi = 0xBF;
                continue;
            }
            if (b < 0x80) {
                continue;
            }
            lo = 0x80;
            hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                need = 1;
            } else if (b == 0xE0) {
                need = 2;
                lo = 0xA0;
            } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
                need = 2;
            } else if (b == 0xED) {
                need = 2;
                hi = 0x9F;  // no surrogates
            } else if (b == 0xF0) {
                need = 3;
                lo = 0x90;
            } else if (b >= 0xF1 && b <= 0xF3) {
                need = 3;
            } else if (b == 0xF4) {
                need = 3;
                hi = 0x8F;  // <= U+10FFFF
            } else {
                bad = true;
            }
        }
    }
    bool complete() const { return !bad && need == 0; }
};

inline bool utf8_ok(const uint8_t* p, size_t n) {
    utf8_ref u;
    u.feed(p, n);
    return u.complete();
}

// Close codes a peer may send (RFC 6455 7.4.1/7.4.2 plus the IANA-registered 1012-1014).
inline bool close_code_ok(uint16_t c) {
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

// An unmasked FIN frame as the server writes it (minimal length encoding).
inline void server_frame(bytes& out, uint8_t opcode, const uint8_t* p, size_t n) {
    out.push_back(static_cast<uint8_t>(0x80 | opcode));
    if (n < 126) {
        out.push_back(static_cast<uint8_t>(n));
    } else if (n < 65536) {
        out.push_back(126);
        out.push_back(static_cast<uint8_t>(n >> 8));
        out.push_back(static_cast<uint8_t>(n));
    } else {
        out.push_back(127);
        for (int i = 7; i >= 0; --i) {
            out.push_back(static_cast<uint8_t>(uint64_t{n} >> (8 * i)));
        }
    }
    out.insert(out.end(), p, p + n);
}

struct message {
    uint8_t opcode;  // 1 text, 2 binary
    bytes payload;
    bool operator==(const message&) const = default;
};

// What the test handler and the server do besides receiving (same in the model and
// in the real runs).
struct behavior {
    size_t max_message = 1 << 20;
    bool echo = false;         // handler writes each message back (write_frame)
    unsigned close_after = 0;  // handler calls close(1000, "bye") after this many messages
    uint16_t pre_close = 0;    // close(code, ...) before any input (1005: no payload)
};

inline constexpr std::string_view pre_close_reason = "shutdown";
inline constexpr std::string_view handler_close_reason = "bye";

enum class state : uint8_t { open, close_sent, closed };  // mirrors protocol::ws_state

struct outcome {
    std::vector<message> messages;
    bytes out;
    state st = state::open;
    uint16_t sent = 0;
    uint16_t recv = 0;
    size_t leftover = 0;  // bytes after the last complete frame while not closed
};

inline void close_frame(bytes& out, uint16_t code, std::string_view reason) {
    bytes p;
    if (code != 1005) {
        p = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
        p.insert(p.end(), reason.begin(), reason.end());
    }
    server_frame(out, 0x8, p.data(), p.size());
}

inline outcome run_model(const bytes& in, const behavior& b) {
    outcome o;
    const size_t max_msg = std::min<size_t>(b.max_message, size_t{1} << 30);
    if (b.pre_close) {
        close_frame(o.out, b.pre_close, pre_close_reason);
        o.sent = b.pre_close;
        o.st = state::close_sent;
    }
    bool msg_open = false;
    uint8_t msg_op = 0;
    bytes msg;
    utf8_ref u;

    auto fail = [&](uint16_t code) {
        if (o.st == state::open) {
            std::string_view reason = code == 1007   ? "invalid utf-8"
                                      : code == 1009 ? "message too big"
                                                     : "protocol error";
            close_frame(o.out, code, reason);
            o.sent = code;
        }
        o.st = state::closed;
        msg_open = false;
        msg.clear();
    };
    auto deliver = [&](uint8_t op, bytes payload) {
        o.messages.push_back({op, payload});
        if (b.echo) {
            server_frame(o.out, op, payload.data(), payload.size());
        }
        if (b.close_after && o.messages.size() == b.close_after && o.st == state::open) {
            close_frame(o.out, 1000, handler_close_reason);
            o.sent = 1000;
            o.st = state::close_sent;
        }
    };

    size_t pos = 0;
    const size_t n = in.size();
    while (o.st != state::closed) {
        const size_t avail = n - pos;
        if (avail < 2) {
            break;
        }
        const uint8_t* p = in.data() + pos;
        const bool fin = p[0] & 0x80;
        const uint8_t rsv = (p[0] >> 4) & 7;
        const uint8_t op = p[0] & 0x0F;
        const bool masked = p[1] & 0x80;
        const bool control = op & 0x8;
        uint64_t len = p[1] & 0x7F;
        size_t h = 2;
        if (control && (len > 125 || !fin)) {
            fail(1002);
            break;
        }
        if (len == 126) {
            if (avail < 4) {
                break;
            }
            len = (uint64_t{p[2]} << 8) | p[3];
            if (len < 126) {
                fail(1002);
                break;
            }
            h = 4;
        } else if (len == 127) {
            if (avail < 10) {
                break;
            }
            len = 0;
            for (int i = 0; i < 8; ++i) {
                len = (len << 8) | p[2 + i];
            }
            if ((len >> 63) != 0 || len < 65536) {
                fail(1002);
                break;
            }
            h = 10;
        }
        uint8_t key[4] = {0, 0, 0, 0};
        if (masked) {
            if (avail < h + 4) {
                break;
            }
            std::copy(p + h, p + h + 4, key);
            h += 4;
        }
        const uint64_t got = std::min<uint64_t>(len, avail - h);
        if (len > 0 && got == 0) {
            break;  // header alone: not acted on yet
        }
        // Header checks.
        if (op == 1 || op == 2) {
            if (msg_open) {
                fail(1002);
                break;
            }
        } else if (op == 0) {
            if (!msg_open) {
                fail(1002);
                break;
            }
        } else if (op != 8 && op != 9 && op != 10) {
            fail(1002);
            break;
        }
        if (!masked || rsv != 0) {
            fail(1002);
            break;
        }
        if (!control) {
            size_t so_far = op == 0 ? msg.size() : 0;
            if (len > max_msg - so_far) {
                fail(1009);
                break;
            }
            if (op != 0) {
                msg_open = true;
                msg_op = op;
                u = utf8_ref{};
                msg.clear();
            }
        }
        bytes data(p + h, p + h + got);
        for (size_t i = 0; i < data.size(); ++i) {
            data[i] ^= key[i & 3];
        }
        const bool complete = got == len;
        if (control) {
            if (!complete) {
                break;
            }
            if (op == 9) {
                if (o.st == state::open) {
                    server_frame(o.out, 0xA, data.data(), data.size());
                }
            } else if (op == 8) {
                uint16_t code = 1005;
                if (data.size() == 1) {
                    fail(1002);
                    break;
                }
                if (data.size() >= 2) {
                    code = static_cast<uint16_t>((data[0] << 8) | data[1]);
                    if (!close_code_ok(code)) {
                        fail(1002);
                        break;
                    }
                    if (!utf8_ok(data.data() + 2, data.size() - 2)) {
                        fail(1007);
                        break;
                    }
                }
                o.recv = code;
                if (o.st == state::open) {
                    close_frame(o.out, code, {});
                    o.sent = code;
                }
                o.st = state::closed;
                msg_open = false;
                msg.clear();
                break;
            }
        } else {
            if (msg_op == 1) {
                u.feed(data.data(), data.size());
                if (u.bad) {
                    fail(1007);
                    break;
                }
            }
            msg.insert(msg.end(), data.begin(), data.end());
            if (!complete) {
                break;
            }
            if (fin) {
                if (msg_op == 1 && !u.complete()) {
                    fail(1007);
                    break;
                }
                msg_open = false;
                bytes m;
                m.swap(msg);
                deliver(msg_op, std::move(m));
            }
        }
        pos += h + len;
    }
    o.leftover = o.st == state::closed ? 0 : n - pos;
    return o;
}

}  // namespace wsgate::fuzz::wsmodel
