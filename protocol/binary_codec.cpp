// Binary codec for client protocol v1: bounds-checked decoder and single-allocation
// encoders. Layouts and the order of decode checks: docs/protocol.md.
#include "protocol/binary_codec.h"

#include "protocol/utf8.h"

#include <cassert>
#include <cstring>

namespace wsgate::protocol {
namespace {

constexpr size_t header_size = 3;
constexpr size_t max_u16 = 0xFFFF;

std::string_view as_chars(const uint8_t* p, size_t n) {
    return {reinterpret_cast<const char*>(p), n};
}

// Error messages for one kind of name field, so every failure names the field.
struct name_messages {
    std::string_view truncated;
    std::string_view empty;
    std::string_view too_long;
    std::string_view bad_utf8;
};

constexpr name_messages room_messages{"truncated room", "empty room", "room too long",
                                      "room not valid utf-8"};
constexpr name_messages user_messages{"truncated user", "empty user", "user too long",
                                      "user not valid utf-8"};
constexpr name_messages users_entry_messages{"truncated users entry", "empty users entry",
                                             "users entry too long",
                                             "users entry not valid utf-8"};

// A cursor over the payload. Every read checks the remaining length first; on
// failure it returns false and leaves the cursor where it was.
class reader {
public:
    explicit reader(std::span<const uint8_t> s) : _p(s.data()), _left(s.size()) {}

    size_t left() const { return _left; }

    bool u8(uint8_t& v) {
        if (_left < 1) {
            return false;
        }
        v = _p[0];
        skip(1);
        return true;
    }
    bool u16(uint16_t& v) {
        if (_left < 2) {
            return false;
        }
        v = static_cast<uint16_t>(_p[0] | (_p[1] << 8));
        skip(2);
        return true;
    }
    bool u32(uint32_t& v) {
        if (_left < 4) {
            return false;
        }
        v = static_cast<uint32_t>(_p[0]) | (static_cast<uint32_t>(_p[1]) << 8) |
            (static_cast<uint32_t>(_p[2]) << 16) | (static_cast<uint32_t>(_p[3]) << 24);
        skip(4);
        return true;
    }
    bool bytes(size_t n, std::string_view& v) {
        if (_left < n) {
            return false;
        }
        v = as_chars(_p, n);
        skip(n);
        return true;
    }

    // A name: [u16 len][bytes], 1..max_name_bytes bytes of UTF-8. Returns the error
    // message, or an empty view on success.
    std::string_view name(const name_messages& m, std::string_view& v) {
        uint16_t n = 0;
        if (!u16(n)) {
            return m.truncated;
        }
        if (!bytes(n, v)) {
            return m.truncated;
        }
        if (n == 0) {
            return m.empty;
        }
        if (n > binary::max_name_bytes) {
            return m.too_long;
        }
        if (utf8_validate(utf8_accept, reinterpret_cast<const uint8_t*>(v.data()), v.size()) !=
            utf8_accept) {
            return m.bad_utf8;
        }
        return {};
    }

    // Data: [u32 len][bytes], ending exactly at the end of the payload.
    std::string_view data(std::string_view& v) {
        uint32_t n = 0;
        if (!u32(n)) {
            return "truncated data";
        }
        if (!bytes(n, v)) {
            return "truncated data";
        }
        if (_left != 0) {
            return "trailing bytes";
        }
        return {};
    }

private:
    void skip(size_t n) {
        _p += n;
        _left -= n;
    }

    const uint8_t* _p;
    size_t _left;
};

decode_result fail(decode_result& r, error_code code, std::string_view message) {
    r.ok = false;
    r.error = code;
    r.message = message;
    return r;
}

}  // namespace

decode_result binary_decoder::decode(std::span<const uint8_t> payload) {
    decode_result r;
    _users.clear();
    if (payload.size() < header_size) {
        return fail(r, error_code::bad_request, "frame too short");
    }
    if (payload[0] != binary::version) {
        return fail(r, error_code::bad_request, "unsupported version");
    }
    reader in(payload.subspan(header_size));
    uint8_t op_byte = payload[1];
    uint8_t flags = payload[2];
    if (flags & binary::flag_has_id) {
        std::string_view id;
        if (!in.bytes(binary::id_size, id)) {
            return fail(r, error_code::bad_request, "truncated id");
        }
        r.req.has_id = true;
        r.req.id = id;
    }
    if (flags & ~binary::flag_has_id) {
        return fail(r, error_code::bad_request, "reserved flag bits set");
    }
    if (op_byte < static_cast<uint8_t>(op::join) || op_byte > static_cast<uint8_t>(op::ping)) {
        return fail(r, error_code::unknown_op, "unknown op");
    }
    r.req.kind = static_cast<op>(op_byte);

    std::string_view err;
    switch (r.req.kind) {
        case op::join:
        case op::leave:
        case op::presence:
            err = in.name(room_messages, r.req.room);
            break;
        case op::publish:
            err = in.name(room_messages, r.req.room);
            if (err.empty()) {
                err = in.data(r.req.data);
            }
            break;
        case op::send:
            err = in.name(user_messages, r.req.user);
            if (err.empty()) {
                err = in.data(r.req.data);
            }
            break;
        case op::broadcast:
            err = in.data(r.req.data);
            break;
        case op::online: {
            uint32_t count = 0;
            if (!in.u32(count)) {
                err = "truncated users";
                break;
            }
            if (count > binary::max_users) {
                err = "too many users";
                break;
            }
            for (uint32_t i = 0; i < count && err.empty(); ++i) {
                std::string_view u;
                err = in.name(users_entry_messages, u);
                if (err.empty()) {
                    _users.push_back(u);
                }
            }
            r.req.users = &_users;
            break;
        }
        case op::ping:
            break;
    }
    if (err.empty() && in.left() != 0) {
        err = "trailing bytes";
    }
    if (!err.empty()) {
        return fail(r, error_code::bad_request, err);
    }
    r.ok = true;
    return r;
}

}  // namespace wsgate::protocol

namespace wsgate::protocol::binary {
namespace {

// Writes into space reserved with byte_buffer::prepare(); sizes are computed first,
// so the encoders touch the allocator at most once per message.
class writer {
public:
    explicit writer(uint8_t* p) : _p(p) {}

    void u8(uint8_t v) { *_p++ = v; }
    void u16(uint16_t v) {
        _p[0] = static_cast<uint8_t>(v);
        _p[1] = static_cast<uint8_t>(v >> 8);
        _p += 2;
    }
    void u32(uint32_t v) {
        _p[0] = static_cast<uint8_t>(v);
        _p[1] = static_cast<uint8_t>(v >> 8);
        _p[2] = static_cast<uint8_t>(v >> 16);
        _p[3] = static_cast<uint8_t>(v >> 24);
        _p += 4;
    }
    void raw(std::string_view s) {
        if (!s.empty()) {
            std::memcpy(_p, s.data(), s.size());
            _p += s.size();
        }
    }
    void str(std::string_view s) {
        u16(static_cast<uint16_t>(s.size()));
        raw(s);
    }
    void data(std::string_view s) {
        u32(static_cast<uint32_t>(s.size()));
        raw(s);
    }
    void header(push_type t, std::string_view id) {
        u8(version);
        u8(static_cast<uint8_t>(t));
        if (id.size() == id_size) {
            u8(flag_has_id);
            raw(id);
        } else {
            u8(0);
        }
    }
    uint8_t* pos() const { return _p; }

private:
    uint8_t* _p;
};

std::string_view clamp16(std::string_view s) {
    return s.size() > max_u16 ? s.substr(0, max_u16) : s;
}

size_t header_bytes(std::string_view id) {
    assert(id.empty() || id.size() == id_size);
    return header_size + (id.size() == id_size ? id_size : 0);
}

size_t str_bytes(std::string_view s) { return 2 + s.size(); }

size_t users_bytes(std::span<const std::string_view> users) {
    size_t n = 4;
    for (std::string_view u : users) {
        n += str_bytes(clamp16(u));
    }
    return n;
}

void users_out(writer& w, std::span<const std::string_view> users) {
    w.u32(static_cast<uint32_t>(users.size()));
    for (std::string_view u : users) {
        w.str(clamp16(u));
    }
}

// Reserve exactly `n` bytes, let `fill` write them, commit.
template <typename Fill>
void emit(byte_buffer& out, size_t n, Fill&& fill) {
    uint8_t* start = out.prepare(n);
    writer w(start);
    fill(w);
    assert(static_cast<size_t>(w.pos() - start) == n);
    out.commit(n);
}

}  // namespace

void encode_message_push(byte_buffer& out, std::string_view room, std::string_view from,
                         std::string_view data) {
    room = clamp16(room);
    from = clamp16(from);
    size_t n = header_size + str_bytes(room) + str_bytes(from) + 4 + data.size();
    emit(out, n, [&](writer& w) {
        w.header(push_type::message, {});
        w.str(room);
        w.str(from);
        w.data(data);
    });
}

void encode_direct_push(byte_buffer& out, std::string_view from, std::string_view data) {
    from = clamp16(from);
    size_t n = header_size + str_bytes(from) + 4 + data.size();
    emit(out, n, [&](writer& w) {
        w.header(push_type::direct, {});
        w.str(from);
        w.data(data);
    });
}

void encode_broadcast_push(byte_buffer& out, std::string_view data) {
    size_t n = header_size + 4 + data.size();
    emit(out, n, [&](writer& w) {
        w.header(push_type::broadcast, {});
        w.data(data);
    });
}

void encode_ack(byte_buffer& out, std::string_view id) {
    emit(out, header_bytes(id), [&](writer& w) { w.header(push_type::ack, id); });
}

void encode_error(byte_buffer& out, std::string_view id, error_code code,
                  std::string_view message) {
    message = clamp16(message);
    size_t n = header_bytes(id) + 1 + str_bytes(message);
    emit(out, n, [&](writer& w) {
        w.header(push_type::error, id);
        w.u8(static_cast<uint8_t>(code));
        w.str(message);
    });
}

void encode_pong(byte_buffer& out, std::string_view id) {
    emit(out, header_bytes(id), [&](writer& w) { w.header(push_type::pong, id); });
}

void encode_presence_reply(byte_buffer& out, std::string_view id, std::string_view room,
                           std::span<const std::string_view> users) {
    room = clamp16(room);
    size_t n = header_bytes(id) + str_bytes(room) + users_bytes(users);
    emit(out, n, [&](writer& w) {
        w.header(push_type::presence, id);
        w.str(room);
        users_out(w, users);
    });
}

void encode_online_reply(byte_buffer& out, std::string_view id,
                         std::span<const std::string_view> users) {
    size_t n = header_bytes(id) + users_bytes(users);
    emit(out, n, [&](writer& w) {
        w.header(push_type::online, id);
        users_out(w, users);
    });
}

}  // namespace wsgate::protocol::binary
