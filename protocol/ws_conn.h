// WebSocket connection state (RFC 6455) on top of wslay's frame layer.
//
// Sans-I/O: the core feeds received bytes with feed(); complete text/binary
// messages come out through ws_handler::on_message(); control replies (pong,
// close) and outbound frames are appended to the caller's byte_buffer.
//
// Two receive paths, one set of rules: a frame whose header arrives whole is
// parsed here (header, then payload unmasked 8 bytes at a time, streamed in
// chunks); a frame whose header arrives split goes through wslay's frame layer,
// which is served exactly that frame's bytes. wslay's per-byte unmasking made
// frames over 4 KiB run at 0.15-0.27x the raw-TCP ceiling; see ws_conn.cpp.
// Every outbound frame is written by wslay_frame_send().
//
// Memory: an idle connection holds only a ws_conn (a few words). Per-frame state
// (and wslay's frame context, with its 4 KiB input buffer) lives in a per-worker
// ws_frame_pool; a connection borrows a slot only while it is in the middle of
// a frame, and gives it back at the frame boundary. A message that spans
// several frames or several feed() calls is assembled in a per-connection
// buffer that is released when the message completes.
//
// Failures map to close codes: protocol errors → 1002, invalid UTF-8 in text
// or close reason → 1007, message over the limit → 1009. On failure the close
// frame is queued, further input is ignored, and should_close_socket() turns true.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "protocol/buffer.h"

namespace wsgate::protocol {

class inflater;  // protocol/deflate.h

enum class ws_opcode : uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close = 0x8,
    ping = 0x9,
    pong = 0xA,
};

namespace close_code {
inline constexpr uint16_t normal = 1000;
inline constexpr uint16_t going_away = 1001;
inline constexpr uint16_t protocol_error = 1002;
inline constexpr uint16_t unsupported_data = 1003;
inline constexpr uint16_t no_status = 1005;  // never sent on the wire
inline constexpr uint16_t abnormal = 1006;   // never sent on the wire
inline constexpr uint16_t invalid_payload = 1007;
inline constexpr uint16_t policy_violation = 1008;
inline constexpr uint16_t message_too_big = 1009;
inline constexpr uint16_t internal_error = 1011;
inline constexpr uint16_t service_restart = 1012;
inline constexpr uint16_t try_again_later = 1013;
}  // namespace close_code

// True for codes a peer may send in a close frame (1000-1003, 1007-1014, 3000-4999).
bool is_valid_close_code(uint16_t code);

struct ws_config {
    size_t max_message = 1 << 20;  // bytes per assembled message; larger → 1009
};

// Receives complete messages. `payload` is valid only during the call.
class ws_handler {
public:
    virtual ~ws_handler() = default;
    virtual void on_message(ws_opcode opcode, std::span<const uint8_t> payload) = 0;
};

// Per-worker pool of wslay frame contexts plus the feed/send plumbing they use.
// One per worker thread; never shared between threads.
class ws_frame_pool {
public:
    ws_frame_pool();
    ~ws_frame_pool();
    ws_frame_pool(const ws_frame_pool&) = delete;
    ws_frame_pool& operator=(const ws_frame_pool&) = delete;

    size_t contexts_in_use() const;   // borrowed by connections right now
    size_t contexts_pooled() const;   // idle in the pool

    struct impl;
    impl& get() { return *_impl; }

private:
    std::unique_ptr<impl> _impl;
};

enum class ws_state : uint8_t {
    open,          // normal operation
    close_sent,    // we sent a close frame; waiting for the peer's close
    closed,        // close handshake finished (both sides sent close), or we failed the connection
};

class ws_conn {
public:
    ws_conn() = default;
    ~ws_conn();
    ws_conn(const ws_conn&) = delete;
    ws_conn& operator=(const ws_conn&) = delete;

    // Feed received bytes. Complete messages go to `h`; pongs, close replies and
    // failure closes are appended to `out`. Safe to call with any split of the
    // byte stream. Input after a close was received or a failure is ignored.
    // With permessage-deflate negotiated (enable_deflate()), messages with RSV1
    // are inflated by `inflate` before they reach `h`.
    void feed(std::span<const uint8_t> in, ws_frame_pool& pool, const ws_config& cfg,
              ws_handler& h, byte_buffer& out, inflater* inflate = nullptr);

    // permessage-deflate was negotiated: RSV1 is allowed on a message's first frame.
    void enable_deflate() { _flags |= flag_rsv1_ok; }
    bool deflate_enabled() const { return (_flags & flag_rsv1_ok) != 0; }

    // Append one unfragmented, unmasked server frame to `out` (`compressed`: the
    // payload is a permessage-deflate payload, RSV1 set).
    static void write_frame(ws_frame_pool& pool, byte_buffer& out, ws_opcode opcode,
                            std::span<const uint8_t> payload, bool compressed = false);

    // Start a close handshake from our side (e.g. shutdown): queue a close frame.
    // No-op if a close was already sent.
    void close(ws_frame_pool& pool, byte_buffer& out, uint16_t code, std::string_view reason = {});

    ws_state state() const { return _state; }
    // The connection should be closed once `out` has been flushed: the close
    // handshake completed, or we failed the connection.
    bool should_close_socket() const { return _state == ws_state::closed; }
    // Close code we sent (0 if none yet).
    uint16_t sent_close_code() const { return _sent_code; }
    // Close code the peer sent (close_code::no_status if its close had no body, 0 if none).
    uint16_t received_close_code() const { return _recv_code; }
    // Release any pooled context and assembly memory and return to the state of a
    // freshly constructed ws_conn (the core calls it when a connection slot is freed).
    void reset(ws_frame_pool& pool);

    // Implementation state, documented in ws_conn.cpp. Kept small: an idle
    // connection owns no heap memory.
    struct frame_slot;                 // borrowed pool entry (wslay ctx + control buffer)
private:
    friend struct ws_conn_engine;      // the receive state machine, in ws_conn.cpp

    // _flags bits.
    static constexpr uint8_t flag_rsv1_ok = 0x01;       // permessage-deflate negotiated: RSV1
                                                        // allowed on a message's first frame
    static constexpr uint8_t flag_msg_rsv1 = 0x02;      // the open message had RSV1 set

    frame_slot* _frame = nullptr;      // non-null only while in the middle of a frame
    byte_buffer _msg;                  // fragmented / split message being assembled
    uint32_t _utf8_state = 0;          // incremental UTF-8 validator state for the text message
    uint16_t _sent_code = 0;
    uint16_t _recv_code = 0;
    ws_state _state = ws_state::open;
    ws_opcode _msg_opcode = ws_opcode::continuation;  // text/binary while a message is open
    uint8_t _flags = 0;                // flag_* bits above
};

}  // namespace wsgate::protocol
