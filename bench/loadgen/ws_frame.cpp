// ws_frame.cpp — see ws_frame.h.
#include "ws_frame.h"

#include <zlib.h>

#include <vector>

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
    const uint8_t op = b0 & 0x0f;
    const uint8_t rsv = b0 & 0x70;
    const bool first_data_frame = op == op_text || op == op_binary;
    if (rsv != 0 && !(rsv == 0x40 && _deflate && _collect && first_data_frame)) {
        return _deflate ? "RSV bits other than RSV1 on a message's first frame" : "RSV bits set without a negotiated extension";
    }
    if (first_data_frame) {
        _msg_compressed = rsv != 0;
    }
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

const uint8_t* frame_reader::inflate_message(const uint8_t* p, size_t n, size_t& out_len) {
    // One inflater and output buffer per load-generator thread, reset per message.
    struct state {
        z_stream z{};
        std::vector<uint8_t> out;
        bool ok = false;
        state() { ok = inflateInit2(&z, -15) == Z_OK; }
        ~state() {
            if (ok) {
                inflateEnd(&z);
            }
        }
    };
    thread_local state st;
    if (!st.ok) {
        return nullptr;
    }
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    inflateReset(&st.z);
    size_t used = 0;
    if (st.out.size() < n * 4 + 4096) {
        st.out.resize(n * 4 + 4096);
    }
    for (int pass = 0; pass < 2; ++pass) {
        st.z.next_in = const_cast<Bytef*>(pass == 0 ? p : tail);
        st.z.avail_in = static_cast<uInt>(pass == 0 ? n : sizeof(tail));
        for (;;) {
            if (used == st.out.size()) {
                st.out.resize(st.out.size() * 2);
            }
            st.z.next_out = st.out.data() + used;
            st.z.avail_out = static_cast<uInt>(st.out.size() - used);
            const int rc = inflate(&st.z, Z_SYNC_FLUSH);
            used = st.out.size() - st.z.avail_out;
            if (rc == Z_STREAM_END) {
                out_len = used;
                return st.out.data();
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                return nullptr;
            }
            if (st.z.avail_in == 0 && st.z.avail_out != 0) {
                break;
            }
        }
    }
    out_len = used;
    return st.out.data();
}

} // namespace wsbench
