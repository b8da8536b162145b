// payload.cpp — see payload.h.
#include "payload.h"

#include <array>

namespace wsbench {

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<int8_t, 256> make_decode_table() {
    std::array<int8_t, 256> t{};
    for (auto& v : t) {
        v = -1;
    }
    for (int i = 0; i < 64; ++i) {
        t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    }
    return t;
}

constexpr auto decode_table = make_decode_table();

} // namespace

void encode_stamp(uint64_t ns, uint8_t* out) noexcept {
    ns &= stamp_mask;
    for (int i = 7; i >= 0; --i) {
        out[i] = static_cast<uint8_t>(alphabet[ns & 63]);
        ns >>= 6;
    }
}

bool decode_stamp(const uint8_t* in, uint64_t& ns) noexcept {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
        const int8_t d = decode_table[in[i]];
        if (d < 0) {
            return false;
        }
        v = (v << 6) | static_cast<uint64_t>(d);
    }
    ns = v;
    return true;
}

payload_template::payload_template(size_t size) : bytes(size) {
    for (size_t i = 0; i < size; ++i) {
        bytes[i] = i < stamp_size ? 0 : static_cast<uint8_t>('a' + (i % 26));
    }
}

} // namespace wsbench
