// Pushes (gateway → client) built from one publication, in either wire format.
//
// A publication carries its `data` as the sender wrote it: JSON text (from a
// text-frame envelope) or arbitrary bytes (from a binary frame). A receiver gets
// pushes in its connection's format (chosen at the upgrade, JSON by default):
// - JSON receiver, JSON data: `data` inserted verbatim (byte-identical).
// - JSON receiver, binary data: `data` is a JSON string holding the bytes in
//   base64 (RFC 4648, padded) and the push carries `"binary":true`.
// - binary receiver: `data` is the bytes as written (JSON text as UTF-8 bytes).
// So no data is ever lost or re-serialized, whatever the mix of formats.
//
// Batching (opt-in per connection): several pushes of one loop turn in one
// frame. JSON: a JSON array of the push objects. Binary: the batch header
// [version 1][type 12][flags 0] followed by records [u32 length][push].
#pragma once

#include <cstdint>
#include <string_view>

#include "protocol/buffer.h"

namespace wsgate::protocol {

enum class push_kind : uint8_t { message = 1, direct = 2, broadcast = 3 };
enum class wire_format : uint8_t { json = 0, binary = 1 };

struct push_fields {
    push_kind kind = push_kind::message;
    std::string_view room;   // message
    std::string_view from;   // message, direct
    std::string_view data;
    bool data_is_json = true;
    // Message id (Redis backplane): when set, JSON pushes start with
    // {"mid":"<mid>", so every gateway delivers the same bytes and a client can
    // drop a duplicate. Binary pushes carry none (no field for it yet).
    std::string_view mid;
};

// Append one push payload (not a WebSocket frame) to `out`.
void encode_push(byte_buffer& out, wire_format f, const push_fields& p);

// Binary batch frame: type byte and header size.
inline constexpr uint8_t binary_batch_type = 12;
inline constexpr size_t binary_batch_header = 3;

}  // namespace wsgate::protocol
