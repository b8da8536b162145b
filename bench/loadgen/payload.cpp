// payload.cpp — see payload.h.
#include "payload.h"

#include <string>

namespace wsbench {

void encode_stamp(uint64_t ns, uint8_t* out) noexcept {
    encode_b64_digits(ns & stamp_mask, out, stamp_size);
}

bool decode_stamp(const uint8_t* in, uint64_t& ns) noexcept {
    return decode_b64_digits(in, stamp_size, ns);
}

payload_template::payload_template(size_t size, bool text_like) : bytes(size) {
    for (size_t i = 0; i < size; ++i) {
        bytes[i] = i < stamp_size ? 0 : static_cast<uint8_t>('a' + (i % 26));
    }
    if (!text_like) {
        return;
    }
    // Text that compresses like a real JSON message (about 2.5-3x with zlib,
    // where the a..z filler shrinks ~20x): field names from a small vocabulary,
    // numbers, ids and words from a seeded generator. Printable ASCII without
    // quotes or backslashes, so it needs no JSON escaping.
    static const char* const keys[] = {"id", "user", "room", "price", "qty", "side", "ts", "seq", "status",
                                       "text", "lat", "lon", "score", "level", "type", "ref"};
    static const char* const words[] = {"buy", "sell", "open", "closed", "pending", "alpha", "beta", "lobby",
                                        "match", "update", "player", "order", "filled", "ok", "warn", "eu-west"};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto next = [&x]() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    std::string text;
    while (text.size() < size) {
        text += keys[next() % 16];
        text += '=';
        switch (next() % 3) {
        case 0: text += std::to_string(next() % 1000000); break;
        case 1: text += std::to_string(next() % 10000) + "." + std::to_string(next() % 100); break;
        default: text += words[next() % 16]; break;
        }
        text += next() % 4 == 0 ? "; " : ", ";
    }
    for (size_t i = stamp_size; i < size; ++i) {
        bytes[i] = static_cast<uint8_t>(text[i]);
    }
}

} // namespace wsbench
