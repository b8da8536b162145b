// Client protocol v1 (SPEC section 3): the one internal representation both
// codecs (JSON text frames, binary frames) decode into and encode from.
//
// Sans-I/O. A decoded request holds views into the frame's payload or into the
// decoder's own buffers; they are valid until the next decode on the same
// decoder, i.e. for the duration of ws_handler::on_message(). `data` is carried
// as raw bytes: for JSON it is the exact text of the "data" value as the sender
// wrote it (never re-serialized), for binary the payload bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace wsgate::protocol {

// Client → gateway operations.
enum class op : uint8_t {
    join = 1,       // room
    leave = 2,      // room
    publish = 3,    // room, data
    send = 4,       // user, data
    broadcast = 5,  // data (needs admin)
    presence = 6,   // room → reply lists the room's members
    online = 7,     // users → reply lists which of them are online
    ping = 8,       // → pong
};

// Error codes sent in {"type":"error","code":...}. Stable strings: clients match on them.
enum class error_code : uint8_t {
    bad_request = 1,  // malformed envelope: bad JSON, missing field, wrong type, bad encoding
    unknown_op = 2,   // "op" names no operation
    forbidden = 3,    // not allowed by the token (rooms, pub, admin)
    not_member = 4,   // publish/leave on a room the connection has not joined
    limit = 5,        // a limit was hit (rooms per connection, rate)
    unavailable = 6,  // backplane down and the queue is full
    internal = 7,     // should not happen; logged
};

std::string_view error_code_name(error_code c);

// Request limits shared by both codecs: names (room, user, users entries) are
// 1..max_name_bytes bytes; an online request lists at most max_users names.
inline constexpr size_t max_name_bytes = 128;
inline constexpr size_t max_users = 1000;

// A decoded request. Only the fields its op uses are set.
struct request {
    op kind = op::ping;
    bool has_id = false;
    // JSON: the raw text of the "id" value (a number or a string, quotes included),
    // echoed back verbatim in ack/error/replies. Binary: the 4 id bytes.
    std::string_view id;
    std::string_view room;               // join, leave, publish, presence (unescaped)
    std::string_view user;               // send (unescaped)
    std::string_view data;               // publish, send, broadcast: raw bytes
    const std::vector<std::string_view>* users = nullptr;  // online (unescaped), owned by the decoder
};

// The outcome of decoding one frame: a request, or an error to answer with.
struct decode_result {
    bool ok = false;
    request req;
    error_code error = error_code::bad_request;
    std::string_view message;  // what was wrong, for the error reply ("missing field room", ...)
};

}  // namespace wsgate::protocol
