// ws_frame.cpp — see ws_frame.h.
#include "ws_frame.h"

namespace wsbench {

namespace {

// Writes the client frame header (with mask key) and returns its length.
size_t write_header(uint8_t* h, uint8_t opcode, uint64_t len, uint32_t mask) {
    size_t n = 0;
    h[n++] = static_cast<uint8_t>(0x80 | opcode);
    if (len < 126) {
        h[n++] = static_cast<uint8_t>(0x80 | len);
    } else if (len <= 0xffff) {
        h[n++] = 0x80 | 126;
        h[n++] = static_cast<uint8_t>(len >> 8);
        h[n++] = static_cast<uint8_t>(len);
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; --i) {
            h[n++] = static_cast<uint8_t>(len >> (8 * i));
        }
    }
    std::memcpy(h + n, &mask, 4);
    return n + 4;
}

size_t header_size(uint64_t len) {
    return (len < 126 ? 2 : len <= 0xffff ? 4 : 10) + 4;
}

// dst[i] = src[i] ^ key[i % 4], with the key starting at offset 0 (callers
// keep offsets multiples of 4). Eight bytes per step; the compiler vectorizes.
void mask_copy(uint8_t* dst, const uint8_t* src, size_t len, uint32_t mask) {
    const uint64_t key = (static_cast<uint64_t>(mask) << 32) | mask;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        std::memcpy(&v, src + i, 8);
        v ^= key;
        std::memcpy(dst + i, &v, 8);
    }
    const auto* k = reinterpret_cast<const uint8_t*>(&mask);
    for (; i < len; ++i) {
        dst[i] = src[i] ^ k[i & 3];
    }
}

} // namespace

void append_masked_frame(byte_buffer& out, uint8_t opcode, const uint8_t* payload, size_t len,
                         uint32_t mask) {
    uint8_t* p = out.extend(header_size(len) + len);
    const size_t h = write_header(p, opcode, len, mask);
    mask_copy(p + h, payload, len, mask);
}

void append_stamped_frame(byte_buffer& out, uint8_t opcode, const payload_template& tmpl,
                          uint64_t stamp, uint32_t mask) {
    const size_t len = tmpl.bytes.size();
    uint8_t* p = out.extend(header_size(len) + len);
    const size_t h = write_header(p, opcode, len, mask);
    uint8_t s[stamp_size];
    encode_stamp(stamp, s);
    mask_copy(p + h, s, stamp_size, mask);
    mask_copy(p + h + stamp_size, tmpl.bytes.data() + stamp_size, len - stamp_size, mask);
}

void append_stamped_raw(byte_buffer& out, const payload_template& tmpl, uint64_t stamp) {
    const size_t len = tmpl.bytes.size();
    uint8_t* p = out.extend(len);
    encode_stamp(stamp, p);
    std::memcpy(p + stamp_size, tmpl.bytes.data() + stamp_size, len - stamp_size);
}

const char* frame_reader::parse_header() noexcept {
    const uint8_t b0 = _hdr[0];
    const uint8_t len7 = _hdr[1] & 0x7f;
    uint64_t len = len7;
    if (len7 == 126) {
        len = (static_cast<uint64_t>(_hdr[2]) << 8) | _hdr[3];
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; ++i) {
            len = (len << 8) | _hdr[2 + i];
        }
        if ((len >> 63) != 0) {
            return "frame length with top bit set";
        }
    }
    if ((b0 & 0x70) != 0) {
        return "RSV bits set without a negotiated extension";
    }
    const uint8_t op = b0 & 0x0f;
    const bool fin = (b0 & 0x80) != 0;
    if ((op & 0x8) != 0) {
        if (op != op_close && op != op_ping && op != op_pong) {
            return "reserved control opcode";
        }
        if (!fin || len > 125) {
            return "fragmented or oversized control frame";
        }
    } else if (op == op_continuation) {
        if (!_in_message) {
            return "continuation frame without a message";
        }
    } else if (op == op_text || op == op_binary) {
        if (_in_message) {
            return "new data frame inside a fragmented message";
        }
        _in_message = true;
        _msg_opcode = op;
    } else {
        return "reserved data opcode";
    }
    _frame_opcode = op;
    _frame_fin = fin;
    _frame_len = len;
    _remaining = len;
    _in_payload = true;
    return nullptr;
}

} // namespace wsbench
