// Binary codec for client protocol v1 (SPEC section 3): the operations of the JSON
// envelopes, carried in WebSocket binary frames. Byte layouts: docs/protocol.md.
//
// Sans-I/O. The decoder takes one complete message payload (after unmasking and
// reassembly) and returns a decode_result whose views point into that payload or into
// the decoder's own users vector; they stay valid until the next decode() on the same
// decoder. The encoders append one message payload (not a WebSocket frame) to a
// byte_buffer with a single prepare()/commit().
//
// Every read is bounds-checked against the span; the decoder never reads past it and
// needs no padding. No allocation on the hot path except the users vector growing to
// its high-water mark (capped at max_users entries). No exceptions.
#pragma once

#include "protocol/buffer.h"
#include "protocol/message.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace wsgate::protocol::binary {

// The only version this codec speaks (byte 0 of every message).
inline constexpr uint8_t version = 1;
// Header flags (byte 2). Bits 1..7 are reserved and must be 0 in requests.
inline constexpr uint8_t flag_has_id = 0x01;
// Size of the opaque request id, echoed back in replies.
inline constexpr size_t id_size = 4;
// Request limits: protocol::max_name_bytes and protocol::max_users (message.h).
using protocol::max_name_bytes;
using protocol::max_users;

// Gateway → client message types (byte 1).
enum class push_type : uint8_t {
    message = 1,
    direct = 2,
    broadcast = 3,
    ack = 4,
    error = 5,
    pong = 6,
    presence = 7,
    online = 8,
};

// Encoders. `id` is the request's id view as decoded (4 bytes) or empty for "no id";
// any other size is a programmer error (asserts in debug builds, sent without id
// otherwise). Strings longer than 65535 bytes are clamped.

// {"type":"message","room":…,"from":…,"data":…}
void encode_message_push(byte_buffer& out, std::string_view room, std::string_view from,
                         std::string_view data);
// {"type":"direct","from":…,"data":…}
void encode_direct_push(byte_buffer& out, std::string_view from, std::string_view data);
// {"type":"broadcast","data":…}
void encode_broadcast_push(byte_buffer& out, std::string_view data);
// {"type":"ack","id":…}
void encode_ack(byte_buffer& out, std::string_view id);
// {"type":"error","id":…,"code":…,"message":…}
void encode_error(byte_buffer& out, std::string_view id, error_code code, std::string_view message);
// {"type":"pong"} (with the ping's id when it had one)
void encode_pong(byte_buffer& out, std::string_view id);
// {"type":"presence","id":…,"room":…,"users":[…]}
void encode_presence_reply(byte_buffer& out, std::string_view id, std::string_view room,
                           std::span<const std::string_view> users);
// {"type":"online","id":…,"users":[…]}
void encode_online_reply(byte_buffer& out, std::string_view id,
                         std::span<const std::string_view> users);

}  // namespace wsgate::protocol::binary

namespace wsgate::protocol {

// One per worker, reused for every binary message.
class binary_decoder {
public:
    binary_decoder() = default;
    binary_decoder(const binary_decoder&) = delete;
    binary_decoder& operator=(const binary_decoder&) = delete;

    // Parse one request. On failure, result.req.has_id/id are set when the id was
    // readable, so the error reply can carry it.
    [[nodiscard]] decode_result decode(std::span<const uint8_t> payload);

private:
    // Backing store for request::users (online); cleared on every decode, capacity kept.
    std::vector<std::string_view> _users;
};

}  // namespace wsgate::protocol
