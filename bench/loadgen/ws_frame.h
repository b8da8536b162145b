// ws_frame.h — client-side RFC 6455 framing: masked writer, streaming reader.
//
// The writer appends one masked frame to a byte_buffer (client frames must be
// masked, RFC 6455 5.3); the mask key is chosen per frame by the caller.
// The reader is a streaming state machine over server frames: bytes arrive in
// arbitrary slices (provided buffers of a multishot recv), and only frame
// headers (<= 14 bytes) and control payloads (<= 125 bytes) are ever copied.
// For data messages it keeps the first 8 payload bytes (the send stamp), the
// total length, and whether the rest matched the payload template. It accepts
// fragmented messages; it rejects masked server frames, RSV bits (no
// extensions are negotiated) and malformed control frames.
//
// Collect mode (the fan-out scenario, which must read what it receives) also
// hands the whole payload to the sink: a message whose single frame lies in
// one slice is passed in place (no copy); any other is gathered in a
// per-reader buffer first. The pointer is valid during on_message only.
#pragma once

#include "byte_buffer.h"
#include "payload.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wsbench {

enum ws_opcode : uint8_t {
    op_continuation = 0x0,
    op_text = 0x1,
    op_binary = 0x2,
    op_close = 0x8,
    op_ping = 0x9,
    op_pong = 0xA,
};

// Appends FIN frame `opcode` with `len` payload bytes from `payload`, masked with `mask`.
void append_masked_frame(byte_buffer& out, uint8_t opcode, const uint8_t* payload, size_t len,
                         uint32_t mask);

// Appends an echo message: the template with `stamp` in its first 8 bytes.
void append_stamped_frame(byte_buffer& out, uint8_t opcode, const payload_template& tmpl,
                          uint64_t stamp, uint32_t mask);

// Appends the same message unframed (raw TCP mode).
void append_stamped_raw(byte_buffer& out, const payload_template& tmpl, uint64_t stamp);

// A complete message as seen by the reader.
struct message_info {
    uint64_t length = 0;     // payload bytes over all fragments
    uint64_t stamp = 0;      // decoded send stamp, valid when stamp_ok
    bool stamp_ok = false;   // length >= 8 and the first 8 bytes decode
    bool payload_ok = true;  // bytes [8, length) equal the template (true without a template)
    uint8_t opcode = 0;      // op_text or op_binary
    const uint8_t* data = nullptr; // collect mode: the `length` payload bytes (valid in on_message
                                   // only); stamp and template are not checked in that mode
};

// Tracks one message's stamp and filler check across the slices it arrives in.
class message_tracker {
public:
    message_tracker(const uint8_t* tmpl, size_t tmpl_len) : _tmpl(tmpl), _tmpl_len(tmpl_len) {}

    void add(const uint8_t* p, size_t n) noexcept {
        const uint64_t off = _info.length;
        if (off < stamp_size) {
            const size_t take = n < stamp_size - off ? n : stamp_size - off;
            std::memcpy(_stamp + off, p, take);
        }
        if (_tmpl != nullptr && _info.payload_ok) {
            const uint64_t begin = off < stamp_size ? stamp_size : off; // first checked offset
            const uint64_t end = off + n;
            if (end > begin) {
                if (end > _tmpl_len || std::memcmp(p + (begin - off), _tmpl + begin, end - begin) != 0) {
                    _info.payload_ok = false;
                }
            }
        }
        _info.length += n;
    }

    // Finishes the message and resets the tracker for the next one.
    [[nodiscard]] message_info finish(uint8_t opcode) noexcept {
        message_info out = _info;
        out.opcode = opcode;
        out.stamp_ok = out.length >= stamp_size && decode_stamp(_stamp, out.stamp);
        _info = message_info{};
        return out;
    }

    [[nodiscard]] uint64_t length() const noexcept { return _info.length; }

private:
    const uint8_t* _tmpl;      // expected payload, or null to skip the check
    size_t _tmpl_len;          // bytes in _tmpl
    message_info _info{};      // message in progress
    uint8_t _stamp[stamp_size]{}; // first bytes of the message in progress
};

// Collect mode keeps a gather buffer up to this size between messages.
constexpr size_t collect_keep_bytes = 16 * 1024;

// Sink requirements for frame_reader::feed:
//   void on_message(const message_info&);
//   bool on_control(uint8_t opcode, const uint8_t* payload, size_t len); // false: stop
class frame_reader {
public:
    frame_reader(const uint8_t* tmpl, size_t tmpl_len, bool collect = false)
        : _msg(collect ? nullptr : tmpl, collect ? 0 : tmpl_len), _collect(collect) {}

    // Consumes all n bytes. Returns nullptr, or a static string describing a
    // protocol error (the connection must then be dropped), or "stop" when the
    // sink's on_control asked to stop.
    template <class Sink>
    const char* feed(const uint8_t* p, size_t n, Sink& sink);

    // permessage-deflate was negotiated (collect mode only): RSV1 is accepted on
    // a message's first frame and such a message is inflated before the sink
    // sees it (no context takeover: the server always answers
    // server_no_context_takeover).
    void enable_deflate() noexcept { _deflate = true; }

private:
    const char* parse_header() noexcept;
    // Inflates `n` compressed bytes into a per-thread buffer; null on failure.
    static const uint8_t* inflate_message(const uint8_t* p, size_t n, size_t& out_len);

    message_tracker _msg;           // data message in progress
    uint8_t _hdr[14]{};             // header bytes collected so far
    uint8_t _hdr_len = 0;           // valid bytes in _hdr
    uint8_t _hdr_need = 2;          // header size once known (2 until the length byte is seen)
    bool _in_payload = false;       // between a parsed header and the end of its payload
    bool _in_message = false;       // a fragmented data message is open
    uint8_t _frame_opcode = 0;      // opcode of the current frame
    bool _frame_fin = false;        // FIN bit of the current frame
    uint8_t _msg_opcode = 0;        // opcode of the first frame of the open message
    uint64_t _remaining = 0;        // payload bytes left in the current frame
    uint8_t _ctrl[125]{};           // control frame payload
    uint8_t _ctrl_len = 0;          // bytes in _ctrl
    bool _collect = false;          // hand payloads to the sink (see the header comment)
    bool _deflate = false;          // permessage-deflate negotiated
    bool _msg_compressed = false;   // the open message had RSV1
    uint64_t _frame_len = 0;        // payload length of the current frame
    const uint8_t* _direct = nullptr; // collect: the message, in place in the caller's slice
    uint64_t _collect_len = 0;      // collect: payload bytes of the message so far
    byte_buffer _body;              // collect: message bytes gathered across slices/fragments
};

template <class Sink>
const char* frame_reader::feed(const uint8_t* p, size_t n, Sink& sink) {
    while (n > 0 || (_in_payload && _remaining == 0)) {
        if (!_in_payload) {
            if (_hdr_len == 0 && n >= 2) {
                // Fast path: the whole header is in this slice.
                if ((p[1] & 0x80) != 0) {
                    return "masked frame from server";
                }
                const uint8_t len7 = p[1] & 0x7f;
                const uint8_t need = static_cast<uint8_t>(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0));
                if (n >= need) {
                    std::memcpy(_hdr, p, need);
                    _hdr_len = need;
                    _hdr_need = need;
                    p += need;
                    n -= need;
                    if (const char* err = parse_header()) {
                        return err;
                    }
                    continue;
                }
            }
            // Collect the header, possibly across slices.
            while (n > 0 && _hdr_len < _hdr_need) {
                _hdr[_hdr_len++] = *p++;
                --n;
                if (_hdr_len == 2) {
                    if ((_hdr[1] & 0x80) != 0) {
                        return "masked frame from server";
                    }
                    const uint8_t len7 = _hdr[1] & 0x7f;
                    _hdr_need = static_cast<uint8_t>(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0));
                }
            }
            if (_hdr_len < _hdr_need) {
                return nullptr; // need more bytes
            }
            if (const char* err = parse_header()) {
                return err;
            }
            continue;
        }
        const size_t chunk = _remaining < n ? static_cast<size_t>(_remaining) : n;
        if ((_frame_opcode & 0x8) != 0) {
            std::memcpy(_ctrl + _ctrl_len, p, chunk);
            _ctrl_len = static_cast<uint8_t>(_ctrl_len + chunk);
        } else if (chunk > 0) {
            if (_collect) {
                // In place when the whole single-frame message is in this slice.
                if (_frame_fin && _remaining == _frame_len && chunk == _remaining && _body.empty()) {
                    _direct = p;
                } else {
                    _body.append(p, chunk);
                }
                _collect_len += chunk;
            } else {
                _msg.add(p, chunk);
            }
        }
        p += chunk;
        n -= chunk;
        _remaining -= chunk;
        if (_remaining != 0) {
            return nullptr;
        }
        // Frame complete.
        _in_payload = false;
        _hdr_len = 0;
        _hdr_need = 2;
        if ((_frame_opcode & 0x8) != 0) {
            const uint8_t len = _ctrl_len;
            _ctrl_len = 0;
            if (!sink.on_control(_frame_opcode, _ctrl, len)) {
                return "stop";
            }
        } else if (_frame_fin) {
            _in_message = false;
            if (_collect) {
                message_info m;
                m.length = _collect_len;
                m.opcode = _msg_opcode;
                m.data = _direct != nullptr ? _direct : _body.data();
                if (_msg_compressed) {
                    size_t len = 0;
                    m.data = inflate_message(m.data, static_cast<size_t>(m.length), len);
                    if (m.data == nullptr) {
                        return "compressed message does not inflate";
                    }
                    m.length = len;
                }
                _direct = nullptr;
                _collect_len = 0;
                sink.on_message(m);
                // Keep a small buffer for the next split message; give big ones back
                // (batched frames run to 64 KiB, times thousands of connections).
                if (_body.capacity() > collect_keep_bytes) {
                    _body.release();
                } else {
                    _body.clear();
                }
            } else {
                sink.on_message(_msg.finish(_msg_opcode));
            }
        }
    }
    return nullptr;
}

// Raw TCP mode: the stream is cut into fixed-size messages.
class raw_reader {
public:
    raw_reader(const uint8_t* tmpl, size_t msg_size) : _msg(tmpl, msg_size), _size(msg_size) {}

    template <class Sink>
    void feed(const uint8_t* p, size_t n, Sink& sink) {
        while (n > 0) {
            const uint64_t left = _size - _msg.length();
            const size_t chunk = left < n ? static_cast<size_t>(left) : n;
            _msg.add(p, chunk);
            p += chunk;
            n -= chunk;
            if (_msg.length() == _size) {
                sink.on_message(_msg.finish(op_binary));
            }
        }
    }

private:
    message_tracker _msg; // message in progress
    uint64_t _size;       // fixed message size
};

} // namespace wsbench
