// Push encoding in both wire formats; see push.h for the rules.
#include "protocol/push.h"

#include <openssl/evp.h>

#include <cstring>

#include "protocol/binary_codec.h"
#include "protocol/json_codec.h"

namespace wsgate::protocol {

namespace {

// `"<base64>"` with quotes, straight into out.
void append_base64_string(byte_buffer& out, std::string_view bytes) {
    size_t n = 4 * ((bytes.size() + 2) / 3);
    uint8_t* p = out.prepare(n + 3);  // EVP_EncodeBlock writes a terminating NUL
    p[0] = '"';
    int w = EVP_EncodeBlock(p + 1, reinterpret_cast<const unsigned char*>(bytes.data()),
                            static_cast<int>(bytes.size()));
    p[1 + w] = '"';
    out.commit(static_cast<size_t>(w) + 2);
}

}  // namespace

namespace {
void encode_json_push(byte_buffer& out, const push_fields& p);
}  // namespace

void encode_push(byte_buffer& out, wire_format f, const push_fields& p) {
    if (f == wire_format::json) {
        if (p.mid.empty()) {
            encode_json_push(out, p);
            return;
        }
        // {"mid":"…", then the push object without its '{'.
        out.append(std::string_view("{\"mid\":"));
        append_json_string(out, p.mid);
        out.append(std::string_view(","));
        size_t at = out.size();
        encode_json_push(out, p);
        uint8_t* b = out.data();
        std::memmove(b + at, b + at + 1, out.size() - at - 1);  // drop the object's '{'
        out.unappend(1);
        return;
    }
    switch (p.kind) {
    case push_kind::message:
        binary::encode_message_push(out, p.room, p.from, p.data);
        return;
    case push_kind::direct:
        binary::encode_direct_push(out, p.from, p.data);
        return;
    case push_kind::broadcast:
        binary::encode_broadcast_push(out, p.data);
        return;
    }
}

namespace {

void encode_json_push(byte_buffer& out, const push_fields& p) {
    if (p.data_is_json) {
        switch (p.kind) {
        case push_kind::message:
            encode_message_push(out, p.room, p.from, p.data);
            return;
        case push_kind::direct:
            encode_direct_push(out, p.from, p.data);
            return;
        case push_kind::broadcast:
            encode_broadcast_push(out, p.data);
            return;
        }
        return;
    }
    switch (p.kind) {
    case push_kind::message:
        out.append(std::string_view("{\"type\":\"message\",\"room\":"));
        append_json_string(out, p.room);
        out.append(std::string_view(",\"from\":"));
        append_json_string(out, p.from);
        break;
    case push_kind::direct:
        out.append(std::string_view("{\"type\":\"direct\",\"from\":"));
        append_json_string(out, p.from);
        break;
    case push_kind::broadcast:
        out.append(std::string_view("{\"type\":\"broadcast\""));
        break;
    }
    out.append(std::string_view(",\"binary\":true,\"data\":"));
    append_base64_string(out, p.data);
    out.append(std::string_view("}"));
}

}  // namespace

}  // namespace wsgate::protocol
