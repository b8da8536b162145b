// payload.cpp — see payload.h.
#include "payload.h"

namespace wsbench {

void encode_stamp(uint64_t ns, uint8_t* out) noexcept {
    encode_b64_digits(ns & stamp_mask, out, stamp_size);
}

bool decode_stamp(const uint8_t* in, uint64_t& ns) noexcept {
    return decode_b64_digits(in, stamp_size, ns);
}

payload_template::payload_template(size_t size) : bytes(size) {
    for (size_t i = 0; i < size; ++i) {
        bytes[i] = i < stamp_size ? 0 : static_cast<uint8_t>('a' + (i % 26));
    }
}

} // namespace wsbench
