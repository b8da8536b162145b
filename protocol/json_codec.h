// JSON codec for client protocol v1 (SPEC section 3): text-frame payloads in,
// `request`s out; pushes and replies encoded into a byte_buffer.
//
// Sans-I/O. One json_decoder per worker, reused for every text frame: it owns one
// simdjson On-Demand parser and a padded copy of the current payload (simdjson
// reads up to SIMDJSON_PADDING bytes past the input, which a wslay message buffer
// does not guarantee). Both grow to the largest message seen and are then reused,
// so a warmed decoder does not allocate. Error-code API only: no exceptions.
//
// Decoding rules (decisions, see also tests/unit/json_codec_test.cpp):
// - The whole payload is validated as strict JSON (RFC 8259), including fields
//   that are ignored, so a forwarded `data` is always valid JSON. Any syntax
//   error, a non-object root, or trailing bytes → bad_request "invalid JSON".
// - Fields may come in any order; unknown fields are ignored. A known field name
//   (op, id, room, user, data, users) appearing twice → bad_request
//   "duplicate field NAME" (ambiguity is rejected rather than resolved).
// - Fields that the op does not use are ignored whatever their type.
// - `data` is the exact text of the value as the sender wrote it (surrounding
//   whitespace trimmed), never re-serialized. Nesting is capped at
//   k_max_json_depth → bad_request "JSON nested too deeply".
// - `id` (number or string) is kept as raw text and reported in the result even
//   when decoding fails afterwards, so the error reply can echo it.
// The views in a decode_result point into the decoder (padded copy and parser
// string buffer) and are valid until the next decode() on the same decoder.
//
// Encoders append one complete JSON payload (not the frame) to `out`. Names and
// messages are JSON-escaped (", \, control chars as \u00XX; other bytes pass
// through, so they must already be valid UTF-8); `data` and `id` are inserted raw.
// An empty `id` means "the request had none": the "id" member is omitted.
#pragma once

#include "protocol/buffer.h"
#include "protocol/message.h"

#include <simdjson.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace wsgate::protocol {

// Limits applied by the decoder.
inline constexpr size_t k_max_name_bytes = max_name_bytes;  // room and user names (message.h)
inline constexpr size_t k_max_online_users = max_users;    // "users" of an online request (message.h)
inline constexpr int k_max_json_depth = 128;          // nesting of the whole document
inline constexpr size_t k_max_op_name_in_error = 32;  // "unknown op NAME" truncation

class json_decoder {
public:
    json_decoder() = default;
    json_decoder(const json_decoder&) = delete;
    json_decoder& operator=(const json_decoder&) = delete;

    // Decode one complete text-frame payload. Never throws.
    decode_result decode(std::span<const uint8_t> payload);

private:
    // What was found for one envelope field while scanning the object.
    enum class field_state : uint8_t { absent, ok, wrong_type, invalid };

    struct scan {
        field_state op = field_state::absent;
        field_state room = field_state::absent;
        field_state user = field_state::absent;
        field_state data = field_state::absent;
        field_state users = field_state::absent;
        bool id_seen = false;
        std::string_view op_name;
        std::string_view room_value;
        std::string_view user_value;
        std::string_view data_value;
        std::string_view users_message;  // why users is invalid
        std::string_view duplicate;      // "duplicate field NAME" for the first repeated field
    };

    bool reserve(size_t n);
    simdjson::error_code scan_object(simdjson::ondemand::document& doc, scan& s, decode_result& r);
    decode_result& resolve(const scan& s, decode_result& r);
    std::string_view unknown_op_message(std::string_view name);

    simdjson::ondemand::parser _parser;
    std::unique_ptr<uint8_t[]> _buf;  // padded copy of the payload
    size_t _buf_cap = 0;              // bytes allocated in _buf (payload + padding)
    std::vector<std::string_view> _users;              // online: unescaped names
    std::array<char, 64> _message{};                   // "unknown op NAME"
};

// Gateway → client pushes.
void encode_message_push(byte_buffer& out, std::string_view room, std::string_view from,
                         std::string_view data);
void encode_direct_push(byte_buffer& out, std::string_view from, std::string_view data);
void encode_broadcast_push(byte_buffer& out, std::string_view data);

// Replies. `id` is the raw id text from the request, or empty when it had none.
void encode_ack(byte_buffer& out, std::string_view id);
void encode_error(byte_buffer& out, std::string_view id, error_code code, std::string_view message);
void encode_pong(byte_buffer& out, std::string_view id);
void encode_presence_reply(byte_buffer& out, std::string_view id, std::string_view room,
                           std::span<const std::string_view> users);
void encode_online_reply(byte_buffer& out, std::string_view id,
                         std::span<const std::string_view> users);

// Append `s` as a JSON string literal (quotes included), escaped.
void append_json_string(byte_buffer& out, std::string_view s);

}  // namespace wsgate::protocol
