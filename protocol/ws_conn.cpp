// RFC 6455 receive state machine, its two frame parsers, and the frame-slot pool.
//
// Frame parsing. A frame whose header is complete in the bytes at hand is parsed
// here: complete frames up to 64 KiB go through as one chunk, longer or partial
// ones stream chunk by chunk (frame_slot::own*), the payload unmasked 8 bytes at
// a time into a per-worker scratch buffer. A frame whose header arrives split
// across feeds — or one wslay must reject itself (control frame > 125 bytes or
// fragmented, non-minimal or 2^63+ length) — goes to wslay_frame_recv(), and
// recv_callback serves wslay that frame's bytes and no more, so at the frame's
// end wslay's buffer is empty and the next frame can come back here. Both paths
// hand the same chunks to ws_conn_engine::on_chunk(), which owns every rule above
// the frame (RSV/opcode/mask checks, fragmentation, limits, UTF-8, ping/pong/close);
// like wslay, our parser acts on a header together with its first payload byte,
// so both fail at the same byte. tests/fuzz/ws_fuzz.cpp feeds every stream whole
// (our parser) and byte by byte (wslay) and requires identical results.
//
// Why two: Debian's libwslay 1.1.1 copies input into its 4 KiB buffer and
// unmasks one byte per iteration (~3.5 ns/byte, ~0.28 GB/s per core). Frames
// larger than a receive buffer always arrived split, and echo of 4 KiB-256 KiB
// messages ran at 0.15-0.27x the raw-TCP ceiling; with the streaming parser it
// is 0.67-0.80x (bench/run_echo.sh, 10 connections, same session).
//
// Memory. A slot is borrowed from the worker's pool when a frame is left
// incomplete and returned at its end. For wslay frames frame_slot::pending
// counts + bytes served, - (header + payload) of each frame when its header is
// seen; pending == 0 outside a frame means wslay's context is as good as new.
// A context left mid-parse (failure, reset) is freed. Control payloads split
// across feeds wait in frame_slot::ctrl, so an idle connection (or one between
// fragments) owns no heap memory for them. A message that completes inside one
// chunk goes to the handler straight from the chunk; anything else is copied
// into ws_conn::_msg.
//
// Rules for callers: the pool outlives its connections (~ws_conn gives a borrowed
// slot back to it); the handler may call write_frame() and close() on any
// connection, and feed() on other connections, but not reset() on the one being fed.
#include "protocol/ws_conn.h"

#include "protocol/deflate.h"

#include <wslay/wslay.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

#include "protocol/utf8.h"
#include "protocol/ws_frame.h"

namespace wsgate::protocol {

namespace {

constexpr size_t max_ctrl_payload = 125;
constexpr size_t max_close_reason = max_ctrl_payload - 2;
// Idle contexts kept per worker (~4.2 KiB each); more are freed on return.
constexpr size_t max_pooled_slots = 1024;
// Frames up to this size get their whole payload reserved when the header is seen;
// larger ones grow as bytes actually arrive (a bare header must not reserve memory).
constexpr uint64_t reserve_frame_limit = 64 * 1024;
// byte_buffer counts in uint32_t; keep assembled messages well inside that.
constexpr size_t max_message_cap = size_t{1} << 30;

using frame::frame_header;
using frame::header_size;
using frame::is_control;
using frame::parse_header;
using frame::unmask_at;
using frame::unmask_copy;
using frame::whole_frame_limit;
using frame::wire_size;


}  // namespace

bool is_valid_close_code(uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

// A borrowed wslay receive context plus the per-frame state that only matters
// while a frame is incomplete.
struct ws_conn::frame_slot {
    wslay_frame_context_ptr ctx = nullptr;  // receive context (user_data = owner)
    ws_frame_pool::impl* owner = nullptr;   // pool that lent it
    frame_slot* next = nullptr;             // free-list link while pooled
    uint64_t pending = 0;                   // bytes fed to ctx - wire size of frames started (mod 2^64)
    uint64_t frame_remaining = 0;           // payload bytes of the current frame still due
    bool in_frame = false;                  // header seen, payload not complete
    uint8_t ctrl_len = 0;                   // control payload collected so far
    uint8_t ctrl[max_ctrl_payload];         // control payload split across feeds

    // Streamed frame (header arrived whole, payload still coming): parsed here,
    // unmasked 8 bytes at a time; wslay's context is not used for it.
    bool own = false;
    bool own_fin = false;
    bool own_masked = false;
    uint8_t own_rsv = 0;
    uint8_t own_opcode = 0;
    uint8_t own_key[4] = {0, 0, 0, 0};
    uint64_t own_len = 0;                   // payload length from the header
    uint64_t own_off = 0;                   // payload bytes consumed so far

    // wslay frame (its header arrived split): wslay is served this frame's bytes
    // only, so its input buffer is empty again when the frame ends.
    uint8_t hdr[14];                        // header bytes served so far
    uint8_t hdr_len = 0;
    bool wire_known = false;                // header complete: wire_total is valid
    uint64_t wire_total = 0;                // header + payload of the current frame
    uint64_t wire_served = 0;               // bytes of it served to wslay
};

struct ws_frame_pool::impl {
    // Input the recv callback serves from (the span of the current feed()), and
    // the slot whose frame it is (the callback serves one frame at most).
    const uint8_t* in = nullptr;
    size_t in_left = 0;
    ws_conn::frame_slot* cur = nullptr;
    // Output the send callback appends to (set around each wslay_frame_send()).
    byte_buffer* out = nullptr;
    wslay_frame_context_ptr send_ctx = nullptr;
    ws_conn::frame_slot* free_list = nullptr;
    size_t pooled = 0;
    size_t in_use = 0;
    // Our own parser's unmasked payload, and a context-less slot that stands in
    // for a borrowed one while a whole frame goes through on_chunk().
    byte_buffer scratch;
    byte_buffer inflated;       // a compressed message's payload, inflated (permessage-deflate)
    ws_conn::frame_slot* whole = nullptr;
    bool scratch_busy = false;  // a handler re-entered feed(): that feed unmasks elsewhere

    impl();
    ~impl();

    ws_conn::frame_slot* acquire();
    // Return a slot; its context is kept only if it is back in its initial state.
    void give_back(ws_conn::frame_slot* s);
    void send(byte_buffer& o, uint8_t opcode, const uint8_t* p, size_t n, bool rsv1 = false);
};

namespace {


// Serves wslay the bytes of the current frame and no more: header bytes one at a
// time until the header is complete (so its length is known), then up to the end
// of the frame. wslay's input buffer is therefore empty when the frame ends, and
// the next frame can go to our own parser.
ssize_t recv_callback(uint8_t* buf, size_t len, int /*flags*/, void* user_data) {
    auto* pool = static_cast<ws_frame_pool::impl*>(user_data);
    ws_conn::frame_slot& s = *pool->cur;
    size_t allow = 1;
    if (s.wire_known) {
        allow = static_cast<size_t>(std::min<uint64_t>(s.wire_total - s.wire_served, SIZE_MAX));
    }
    size_t k = std::min({len, pool->in_left, allow});
    if (k == 0) {
        return -1;  // would block: wslay_frame_recv() answers WSLAY_ERR_WANT_READ
    }
    std::memcpy(buf, pool->in, k);
    if (!s.wire_known) {
        s.hdr[s.hdr_len++] = pool->in[0];
        if (s.hdr_len >= 2 && s.hdr_len == header_size(s.hdr)) {
            uint64_t n = s.hdr[1] & 0x7f;
            if (n >= 126) {
                size_t ext = n == 126 ? 2 : 8;
                n = 0;
                for (size_t i = 0; i < ext; ++i) {
                    n = (n << 8) | s.hdr[2 + i];
                }
            }
            s.wire_known = true;
            s.wire_total = s.hdr_len + n;  // modular: absurd lengths fail in wslay first
        }
    }
    s.wire_served += k;
    pool->in += k;
    pool->in_left -= k;
    return static_cast<ssize_t>(k);
}

ssize_t send_callback(const uint8_t* data, size_t len, int /*flags*/, void* user_data) {
    auto* pool = static_cast<ws_frame_pool::impl*>(user_data);
    pool->out->append(data, len);
    return static_cast<ssize_t>(len);
}

int genmask_callback(uint8_t* /*buf*/, size_t /*len*/, void* /*user_data*/) {
    return -1;  // server frames are never masked
}

constexpr wslay_frame_callbacks frame_callbacks{send_callback, recv_callback, genmask_callback};

wslay_frame_context_ptr new_context(void* user_data) {
    wslay_frame_context_ptr ctx = nullptr;
    if (wslay_frame_context_init(&ctx, &frame_callbacks, user_data) != 0) {
        std::abort();  // out of memory
    }
    return ctx;
}

}  // namespace

ws_frame_pool::impl::impl() : send_ctx(new_context(this)), whole(new ws_conn::frame_slot) {
    whole->owner = this;
}

ws_frame_pool::impl::~impl() {
    // Connections must give their slots back first (the pool outlives them).
    assert(in_use == 0);
    while (free_list) {
        ws_conn::frame_slot* s = free_list;
        free_list = s->next;
        wslay_frame_context_free(s->ctx);
        delete s;
    }
    wslay_frame_context_free(send_ctx);
    delete whole;
}

ws_conn::frame_slot* ws_frame_pool::impl::acquire() {
    ws_conn::frame_slot* s = free_list;
    if (s) {
        free_list = s->next;
        --pooled;
    } else {
        s = new (std::nothrow) ws_conn::frame_slot;
        if (!s) {
            std::abort();  // out of memory
        }
        s->owner = this;
    }
    if (!s->ctx) {
        s->ctx = new_context(this);
    }
    s->next = nullptr;
    s->pending = 0;
    s->frame_remaining = 0;
    s->in_frame = false;
    s->ctrl_len = 0;
    s->own = false;
    s->own_off = 0;
    s->hdr_len = 0;
    s->wire_known = false;
    s->wire_total = 0;
    s->wire_served = 0;
    ++in_use;
    return s;
}

void ws_frame_pool::impl::give_back(ws_conn::frame_slot* s) {
    --in_use;
    // A context is reusable if wslay never saw bytes of an unfinished frame:
    // streamed frames (own) never touch it.
    bool clean = s->own ? true : (!s->in_frame && s->pending == 0);
    if (!clean) {
        // wslay has no reset: a context stopped mid-parse is useless to anyone else.
        wslay_frame_context_free(s->ctx);
        s->ctx = nullptr;
    }
    if (pooled >= max_pooled_slots) {
        wslay_frame_context_free(s->ctx);
        delete s;
        return;
    }
    s->next = free_list;
    free_list = s;
    ++pooled;
}

void ws_frame_pool::impl::send(byte_buffer& o, uint8_t opcode, const uint8_t* p, size_t n, bool rsv1) {
    o.prepare(10 + n);  // header + payload in one growth at most
    byte_buffer* saved = out;
    out = &o;
    wslay_frame_iocb iocb{};
    iocb.fin = 1;
    iocb.rsv = rsv1 ? WSLAY_RSV1_BIT : WSLAY_RSV_NONE;
    iocb.opcode = opcode;
    iocb.payload_length = n;
    iocb.data = p;
    iocb.data_length = n;
    ssize_t r = wslay_frame_send(send_ctx, &iocb);
    out = saved;
    if (r != static_cast<ssize_t>(n)) {
        std::abort();  // misuse: control payload > 125 bytes (the callback never short-writes)
    }
}

ws_frame_pool::ws_frame_pool() : _impl(std::make_unique<impl>()) {}
ws_frame_pool::~ws_frame_pool() = default;

size_t ws_frame_pool::contexts_in_use() const { return _impl->in_use; }
size_t ws_frame_pool::contexts_pooled() const { return _impl->pooled; }

// The per-feed() view of one connection: what a chunk needs to be acted on.
struct ws_conn_engine {
    ws_conn& c;
    ws_frame_pool::impl& pool;
    size_t max_message;
    ws_handler& handler;
    byte_buffer& out;

    // Act on one chunk from wslay_frame_recv(). False once the connection is closed.
    byte_buffer& scratch;  // where our parser unmasks payload
    inflater* inflate;     // permessage-deflate negotiated: inflates RSV1 messages
    byte_buffer& inflated; // ... into here

    bool on_chunk(const wslay_frame_iocb& f);
    size_t feed_at_boundary(std::span<const uint8_t> in);
    size_t feed_own(std::span<const uint8_t> in);
    size_t feed_wslay(std::span<const uint8_t> in);
    void release_slot();
    bool start_frame(const wslay_frame_iocb& f);
    void on_data(const wslay_frame_iocb& f, bool first, bool frame_done);
    void on_control(uint8_t opcode, std::span<const uint8_t> payload);
    void on_close(std::span<const uint8_t> payload);
    void end_message();
    void deliver_compressed(ws_opcode op, std::span<const uint8_t> compressed);
    void fail(uint16_t code);
};

bool ws_conn_engine::on_chunk(const wslay_frame_iocb& f) {
    ws_conn::frame_slot& s = *c._frame;
    bool first = !s.in_frame;
    if (first && !start_frame(f)) {
        return false;
    }
    s.frame_remaining -= f.data_length;
    bool frame_done = s.frame_remaining == 0;
    if (frame_done) {
        s.in_frame = false;
    }
    std::span<const uint8_t> data{f.data, f.data_length};
    if (!is_control(f.opcode)) {
        on_data(f, first, frame_done);
    } else if (first && frame_done) {
        on_control(f.opcode, data);
    } else {
        // wslay guarantees payload_length <= 125 for control frames.
        std::memcpy(s.ctrl + s.ctrl_len, data.data(), data.size());
        s.ctrl_len = static_cast<uint8_t>(s.ctrl_len + data.size());
        if (frame_done) {
            on_control(f.opcode, {s.ctrl, s.ctrl_len});
        }
    }
    return c._state != ws_state::closed;
}

// Header checks, done once per frame on its first chunk (wslay surfaces the header
// together with the first payload byte, or alone for an empty frame).
bool ws_conn_engine::start_frame(const wslay_frame_iocb& f) {
    ws_conn::frame_slot& s = *c._frame;
    s.in_frame = true;
    s.frame_remaining = f.payload_length;
    s.ctrl_len = 0;
    s.pending -= wire_size(f.payload_length, f.mask != 0);

    uint8_t rsv_allowed = WSLAY_RSV_NONE;
    switch (f.opcode) {
    case WSLAY_CONNECTION_CLOSE:
    case WSLAY_PING:
    case WSLAY_PONG:
        break;
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        if (c._msg_opcode != ws_opcode::continuation) {
            fail(close_code::protocol_error);  // new message inside a fragmented one
            return false;
        }
        if (c._flags & ws_conn::flag_rsv1_ok) {
            rsv_allowed = WSLAY_RSV1_BIT;  // permessage-deflate: first frame only
        }
        break;
    case WSLAY_CONTINUATION_FRAME:
        if (c._msg_opcode == ws_opcode::continuation) {
            fail(close_code::protocol_error);  // nothing to continue
            return false;
        }
        break;
    default:
        fail(close_code::protocol_error);  // reserved opcode
        return false;
    }
    if (!f.mask || (f.rsv & ~rsv_allowed) != 0) {
        fail(close_code::protocol_error);
        return false;
    }
    if (is_control(f.opcode)) {
        return true;
    }
    // Size limit from the header, before a byte of the payload is buffered.
    size_t so_far = f.opcode == WSLAY_CONTINUATION_FRAME ? c._msg.size() : 0;
    if (f.payload_length > max_message - so_far) {
        fail(close_code::message_too_big);
        return false;
    }
    if (f.opcode != WSLAY_CONTINUATION_FRAME) {
        c._msg_opcode = static_cast<ws_opcode>(f.opcode);
        c._utf8_state = utf8_accept;
        c._flags = static_cast<uint8_t>((c._flags & ~ws_conn::flag_msg_rsv1) |
                                        ((f.rsv & WSLAY_RSV1_BIT) ? ws_conn::flag_msg_rsv1 : 0));
    }
    return true;
}

void ws_conn_engine::deliver_compressed(ws_opcode op, std::span<const uint8_t> compressed) {
    // RFC 7692: the message's payload, whatever its fragmentation, is one DEFLATE
    // stream piece; inflated against the message limit (a bomb stops at limit + 1
    // bytes), then a text message is checked as UTF-8 as a whole.
    if (!inflate) {
        fail(close_code::protocol_error);
        return;
    }
    switch (inflate->message(compressed, max_message, inflated)) {
    case inflate_result::ok:
        break;
    case inflate_result::too_big:
        inflated.release();
        fail(close_code::message_too_big);
        return;
    case inflate_result::corrupt:
        inflated.release();
        fail(close_code::invalid_payload);
        return;
    }
    if (op == ws_opcode::text && utf8_validate(utf8_accept, inflated.span()) != utf8_accept) {
        fail(close_code::invalid_payload);
        return;
    }
    handler.on_message(op, inflated.span());
    if (inflated.capacity() > (64u << 10)) {
        inflated.release();  // keep a small buffer, not the largest message's
    } else {
        inflated.clear();
    }
}

void ws_conn_engine::on_data(const wslay_frame_iocb& f, bool first, bool frame_done) {
    std::span<const uint8_t> data{f.data, f.data_length};
    bool text = c._msg_opcode == ws_opcode::text;
    if (c._flags & ws_conn::flag_msg_rsv1) {
        bool message_done = frame_done && f.fin;
        if (message_done && first && f.opcode != WSLAY_CONTINUATION_FRAME) {
            ws_opcode op = c._msg_opcode;
            c._msg_opcode = ws_opcode::continuation;
            deliver_compressed(op, data);  // whole message in this chunk: no copy
            return;
        }
        c._msg.append(data);
        if (message_done) {
            ws_opcode op = c._msg_opcode;
            c._msg_opcode = ws_opcode::continuation;
            deliver_compressed(op, c._msg.span());
            c._msg.release();
        }
        return;
    }
    if (text) {
        c._utf8_state = utf8_validate(c._utf8_state, data);
        if (c._utf8_state == utf8_reject) {
            fail(close_code::invalid_payload);
            return;
        }
    }
    bool message_done = frame_done && f.fin;
    if (message_done && text && c._utf8_state != utf8_accept) {
        fail(close_code::invalid_payload);  // ends inside a code point
        return;
    }
    if (message_done && first && f.opcode != WSLAY_CONTINUATION_FRAME) {
        // The whole message is in this chunk: hand out wslay's buffer, no copy.
        ws_opcode op = c._msg_opcode;
        c._msg_opcode = ws_opcode::continuation;
        handler.on_message(op, data);
        return;
    }
    if (first && f.payload_length <= reserve_frame_limit) {
        c._msg.prepare(f.payload_length);
    }
    c._msg.append(data);
    if (message_done) {
        ws_opcode op = c._msg_opcode;
        c._msg_opcode = ws_opcode::continuation;
        handler.on_message(op, c._msg.span());
        // An idle connection owns no heap memory: the assembly buffer goes back
        // after every assembled message (only split messages pay for it).
        c._msg.release();
    }
}

void ws_conn_engine::on_control(uint8_t opcode, std::span<const uint8_t> payload) {
    switch (opcode) {
    case WSLAY_PING:
        if (c._state == ws_state::open) {
            pool.send(out, WSLAY_PONG, payload.data(), payload.size());
        }
        break;
    case WSLAY_CONNECTION_CLOSE:
        on_close(payload);
        break;
    default:
        break;  // pong: unsolicited or late, nothing to do
    }
}

void ws_conn_engine::on_close(std::span<const uint8_t> payload) {
    uint16_t code = close_code::no_status;
    if (payload.size() == 1) {
        fail(close_code::protocol_error);
        return;
    }
    if (payload.size() >= 2) {
        code = static_cast<uint16_t>((payload[0] << 8) | payload[1]);
        if (!is_valid_close_code(code)) {
            fail(close_code::protocol_error);
            return;
        }
        if (!is_valid_utf8(payload.subspan(2))) {
            fail(close_code::invalid_payload);
            return;
        }
    }
    c._recv_code = code;
    if (c._state == ws_state::open) {
        // Echo the code (not the reason); an empty close gets an empty close.
        pool.send(out, WSLAY_CONNECTION_CLOSE, payload.data(), payload.empty() ? 0 : 2);
        c._sent_code = code;
    }
    c._state = ws_state::closed;
    end_message();
}

// Drop a partly assembled message (the connection is closing).
void ws_conn_engine::end_message() {
    c._msg.release();
    c._msg_opcode = ws_opcode::continuation;
    c._utf8_state = utf8_accept;
}

void ws_conn_engine::fail(uint16_t code) {
    if (c._state == ws_state::open) {
        std::string_view reason = code == close_code::invalid_payload    ? "invalid utf-8"
                                  : code == close_code::message_too_big ? "message too big"
                                                                         : "protocol error";
        uint8_t buf[2 + 16];
        buf[0] = static_cast<uint8_t>(code >> 8);
        buf[1] = static_cast<uint8_t>(code);
        std::memcpy(buf + 2, reason.data(), reason.size());
        pool.send(out, WSLAY_CONNECTION_CLOSE, buf, 2 + reason.size());
        c._sent_code = code;
    }
    c._state = ws_state::closed;
    end_message();
}


// At a frame boundary (no slot borrowed). A frame whose header is here whole is
// ours: complete and ≤ 64 KiB → one chunk straight through on_chunk(); longer or
// incomplete → streamed (feed_own). A frame whose header is split or that wslay
// must reject goes to wslay (feed_wslay). Returns the bytes consumed (> 0).
size_t ws_conn_engine::feed_at_boundary(std::span<const uint8_t> in) {
    frame_header h;
    if (!parse_header(in, h)) {
        c._frame = pool.acquire();
        return feed_wslay(in);
    }
    uint64_t avail = in.size() - h.size;
    if (avail >= h.len && h.len <= whole_frame_limit) {
        wslay_frame_iocb f{};
        f.fin = h.fin;
        f.rsv = h.rsv;
        f.opcode = h.opcode;
        f.payload_length = h.len;
        f.mask = h.masked;
        f.data_length = h.len;
        const uint8_t* payload = in.data() + h.size;
        if (h.masked && h.len > 0) {
            scratch.clear();
            uint8_t* dst = scratch.prepare(h.len);
            unmask_copy(dst, payload, h.len, h.key);
            f.data = dst;
        } else {
            f.data = payload;  // unmasked frames fail in start_frame(); empty ones need no bytes
        }
        ws_conn::frame_slot& s = *pool.whole;
        s.in_frame = false;
        s.own = false;
        s.pending = wire_size(h.len, h.masked);
        s.frame_remaining = 0;
        s.ctrl_len = 0;
        c._frame = &s;
        on_chunk(f);
        c._frame = nullptr;
        return h.size + h.len;
    }
    ws_conn::frame_slot& s = *pool.acquire();
    c._frame = &s;
    s.own = true;
    s.own_fin = h.fin;
    s.own_masked = h.masked;
    s.own_rsv = h.rsv;
    s.own_opcode = h.opcode;
    if (h.masked) {
        std::memcpy(s.own_key, h.key, 4);
    }
    s.own_len = h.len;
    s.own_off = 0;
    s.pending = wire_size(h.len, h.masked);  // start_frame() takes it back to 0
    return h.size;
}

// Payload of a streamed frame. Like wslay, the header is acted on together with
// the first payload byte, so both paths fail at the same byte.
size_t ws_conn_engine::feed_own(std::span<const uint8_t> in) {
    ws_conn::frame_slot& s = *c._frame;
    uint64_t left = s.own_len - s.own_off;
    size_t k = static_cast<size_t>(std::min<uint64_t>({left, in.size(), whole_frame_limit}));
    wslay_frame_iocb f{};
    f.fin = s.own_fin;
    f.rsv = s.own_rsv;
    f.opcode = s.own_opcode;
    f.payload_length = s.own_len;
    f.mask = s.own_masked;
    f.data_length = k;
    if (s.own_masked) {
        scratch.clear();
        uint8_t* dst = scratch.prepare(k);
        unmask_at(dst, in.data(), k, s.own_key, s.own_off);
        f.data = dst;
    } else {
        f.data = in.data();
    }
    s.own_off += k;
    on_chunk(f);
    if (c._state == ws_state::closed || s.own_off == s.own_len) {
        release_slot();
    }
    return k;
}

// wslay parses this frame: served through recv_callback, one frame at most.
size_t ws_conn_engine::feed_wslay(std::span<const uint8_t> in) {
    ws_conn::frame_slot& s = *c._frame;
    // Saved so that a handler may feed another connection of the same pool.
    const uint8_t* saved_in = pool.in;
    size_t saved_left = pool.in_left;
    ws_conn::frame_slot* saved_cur = pool.cur;
    pool.in = in.data();
    pool.in_left = in.size();
    pool.cur = &s;
    for (;;) {
        wslay_frame_iocb f;
        ssize_t r = wslay_frame_recv(s.ctx, &f);
        if (r < 0) {
            if (r != WSLAY_ERR_WANT_READ) {
                fail(close_code::protocol_error);  // WSLAY_ERR_PROTO: bad control/length
            }
            break;
        }
        if (!on_chunk(f) || (!s.in_frame && s.wire_known && s.wire_served == s.wire_total)) {
            break;
        }
    }
    size_t used = in.size() - pool.in_left;
    s.pending += used;
    pool.in = saved_in;
    pool.in_left = saved_left;
    pool.cur = saved_cur;
    if (c._state == ws_state::closed || (!s.in_frame && s.wire_known && s.wire_served == s.wire_total)) {
        release_slot();  // frame done: wslay's buffer is empty, its context as good as new
    }
    return used;
}

void ws_conn_engine::release_slot() {
    pool.give_back(c._frame);
    c._frame = nullptr;
}

ws_conn::~ws_conn() {
    if (_frame) {
        _frame->owner->give_back(_frame);
    }
}

void ws_conn::feed(std::span<const uint8_t> in, ws_frame_pool& pool, const ws_config& cfg,
                   ws_handler& h, byte_buffer& out, inflater* inflate) {
    ws_frame_pool::impl& p = pool.get();
    // A handler that feeds another connection of this pool from inside on_message()
    // must not overwrite the payload it was handed: nested feeds unmask (and inflate) elsewhere.
    byte_buffer nested, nested_inflated;
    bool outer = !p.scratch_busy;
    ws_conn_engine e{*this, p, std::min(cfg.max_message, max_message_cap), h, out,
                     outer ? p.scratch : nested, inflate, outer ? p.inflated : nested_inflated};
    p.scratch_busy = true;
    size_t off = 0;
    while (_state != ws_state::closed && off < in.size()) {
        std::span<const uint8_t> rest = in.subspan(off);
        size_t used;
        if (!_frame) {
            used = e.feed_at_boundary(rest);
        } else if (_frame->own) {
            used = e.feed_own(rest);
        } else {
            used = e.feed_wslay(rest);
        }
        if (used == 0) {
            break;  // wslay wants more than it was given (cannot happen with bytes left)
        }
        off += used;
    }
    if (_state == ws_state::closed && _frame) {
        e.release_slot();
    }
    if (outer) {
        p.scratch_busy = false;
        if (p.scratch.capacity() > 2 * whole_frame_limit) {
            p.scratch.release();
        }
    }
}

void ws_conn::write_frame(ws_frame_pool& pool, byte_buffer& out, ws_opcode opcode,
                          std::span<const uint8_t> payload, bool compressed) {
    pool.get().send(out, static_cast<uint8_t>(opcode), payload.data(), payload.size(), compressed);
}

void ws_conn::close(ws_frame_pool& pool, byte_buffer& out, uint16_t code,
                    std::string_view reason) {
    if (_state != ws_state::open) {
        return;
    }
    uint8_t buf[max_ctrl_payload];
    size_t n = 0;
    if (code != close_code::no_status) {
        if (reason.size() > max_close_reason) {
            // Cut at a code point boundary so the reason stays valid UTF-8.
            size_t cut = max_close_reason;
            while (cut > 0 && (static_cast<uint8_t>(reason[cut]) & 0xC0) == 0x80) {
                --cut;
            }
            reason = reason.substr(0, cut);
        }
        buf[0] = static_cast<uint8_t>(code >> 8);
        buf[1] = static_cast<uint8_t>(code);
        if (!reason.empty()) {
            std::memcpy(buf + 2, reason.data(), reason.size());
        }
        n = 2 + reason.size();
    }
    pool.get().send(out, WSLAY_CONNECTION_CLOSE, buf, n);
    _sent_code = code;
    _state = ws_state::close_sent;
}

void ws_conn::reset(ws_frame_pool& pool) {
    if (_frame) {
        assert(_frame->owner == &pool.get());
        pool.get().give_back(_frame);
        _frame = nullptr;
    }
    _msg.release();
    // Back to the state of a freshly constructed ws_conn: the core reuses slots.
    _utf8_state = utf8_accept;
    _sent_code = 0;
    _recv_code = 0;
    _state = ws_state::open;
    _msg_opcode = ws_opcode::continuation;
    _flags = 0;
}

}  // namespace wsgate::protocol
