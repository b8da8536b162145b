// JSON codec for client protocol v1: see json_codec.h for the rules and decisions.
#include "protocol/json_codec.h"

#include <cstring>
#include <new>

namespace wsgate::protocol {

namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view k_invalid_json = "invalid JSON";
constexpr std::string_view k_too_deep = "JSON nested too deeply";

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_ws(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_ws(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// Checked on the raw token because the sender's spelling is what gets forwarded;
// simdjson's own number parsers reject valid JSON such as 1e400.
bool valid_number(std::string_view s) {
    size_t i = 0;
    size_t n = s.size();
    if (i < n && s[i] == '-') {
        ++i;
    }
    if (i >= n) {
        return false;
    }
    if (s[i] == '0') {
        ++i;
    } else if (is_digit(s[i])) {
        while (i < n && is_digit(s[i])) {
            ++i;
        }
    } else {
        return false;
    }
    if (i < n && s[i] == '.') {
        ++i;
        if (i >= n || !is_digit(s[i])) {
            return false;
        }
        while (i < n && is_digit(s[i])) {
            ++i;
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < n && (s[i] == '+' || s[i] == '-')) {
            ++i;
        }
        if (i >= n || !is_digit(s[i])) {
            return false;
        }
        while (i < n && is_digit(s[i])) {
            ++i;
        }
    }
    return i == n;
}

// Fully validate one value (On-Demand skips unread values only structurally).
// Recursion is bounded by k_max_json_depth.
simdjson::error_code validate_value(od::value v, int depth) {
    if (depth > k_max_json_depth) {
        return simdjson::DEPTH_ERROR;
    }
    od::json_type t;
    if (auto e = v.type().get(t)) {
        return e;
    }
    switch (t) {
    case od::json_type::object: {
        od::object o;
        if (auto e = v.get_object().get(o)) {
            return e;
        }
        for (auto fr : o) {
            od::field f;
            if (auto e = std::move(fr).get(f)) {
                return e;
            }
            std::string_view key;
            if (auto e = f.unescaped_key().get(key)) {
                return e;
            }
            if (auto e = validate_value(f.value(), depth + 1)) {
                return e;
            }
        }
        return simdjson::SUCCESS;
    }
    case od::json_type::array: {
        od::array a;
        if (auto e = v.get_array().get(a)) {
            return e;
        }
        for (auto er : a) {
            od::value x;
            if (auto e = std::move(er).get(x)) {
                return e;
            }
            if (auto e = validate_value(x, depth + 1)) {
                return e;
            }
        }
        return simdjson::SUCCESS;
    }
    case od::json_type::string: {
        std::string_view s;
        return v.get_string().get(s);
    }
    case od::json_type::number:
        return valid_number(trim(v.raw_json_token())) ? simdjson::SUCCESS : simdjson::NUMBER_ERROR;
    case od::json_type::boolean: {
        std::string_view tok = trim(v.raw_json_token());
        return (tok == "true" || tok == "false") ? simdjson::SUCCESS : simdjson::T_ATOM_ERROR;
    }
    case od::json_type::null:
        return trim(v.raw_json_token()) == "null" ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
    return simdjson::TAPE_ERROR;
}

// Read a string-typed envelope field; another type is validated and recorded.
template <typename State>
simdjson::error_code read_string(od::value v, std::string_view& out, State& st) {
    od::json_type t;
    if (auto e = v.type().get(t)) {
        return e;
    }
    if (t != od::json_type::string) {
        st = State::wrong_type;
        return validate_value(v, 2);
    }
    if (auto e = v.get_string().get(out)) {
        return e;
    }
    st = State::ok;
    return simdjson::SUCCESS;
}

struct op_name_entry {
    std::string_view name;
    op kind;
};

constexpr op_name_entry k_ops[] = {
    {"join", op::join},           {"leave", op::leave},       {"publish", op::publish},
    {"send", op::send},           {"broadcast", op::broadcast}, {"presence", op::presence},
    {"online", op::online},       {"ping", op::ping},
};

// Messages for one named field (static strings: no formatting on the hot path).
struct field_messages {
    std::string_view missing;
    std::string_view wrong_type;
    std::string_view bad_size;
};

constexpr field_messages k_room_msgs{"missing field room", "field room must be a string",
                                     "field room must be 1 to 128 bytes"};
constexpr field_messages k_user_msgs{"missing field user", "field user must be a string",
                                     "field user must be 1 to 128 bytes"};
static_assert(k_max_name_bytes == 128, "update the size messages");

}  // namespace

bool json_decoder::reserve(size_t n) {
    size_t need = n + simdjson::SIMDJSON_PADDING;
    if (need <= _buf_cap) {
        return true;
    }
    size_t cap = _buf_cap ? _buf_cap : 1024;
    while (cap < need) {
        cap *= 2;
    }
    std::unique_ptr<uint8_t[]> p(new (std::nothrow) uint8_t[cap]);
    if (!p) {
        return false;
    }
    _buf = std::move(p);
    _buf_cap = cap;
    return true;
}

decode_result json_decoder::decode(std::span<const uint8_t> payload) {
    decode_result r;
    r.ok = false;
    r.error = error_code::bad_request;
    r.message = k_invalid_json;
    _users.clear();
    if (!reserve(payload.size())) {
        r.error = error_code::internal;
        r.message = "out of memory";
        return r;
    }
    if (!payload.empty()) {
        std::memcpy(_buf.get(), payload.data(), payload.size());
    }
    // simdjson does not care what the padding holds; zeroing keeps memory checkers quiet.
    std::memset(_buf.get() + payload.size(), 0, simdjson::SIMDJSON_PADDING);

    od::document doc;
    if (_parser.iterate(reinterpret_cast<const char*>(_buf.get()), payload.size(), _buf_cap)
            .get(doc)) {
        return r;
    }
    scan s;
    simdjson::error_code e = scan_object(doc, s, r);
    if (e) {
        if (e == simdjson::DEPTH_ERROR) {
            r.message = k_too_deep;
        }
        return r;  // r.message already says why (invalid JSON or duplicate field)
    }
    // Trailing bytes after the object: the iterator is not at the end.
    const char* rest = nullptr;
    if (doc.current_location().get(rest) != simdjson::OUT_OF_BOUNDS) {
        r.message = k_invalid_json;
        return r;
    }
    return resolve(s, r);
}

simdjson::error_code json_decoder::scan_object(od::document& doc, scan& s, decode_result& r) {
    od::object obj;
    if (auto e = doc.get_object().get(obj)) {
        return e;
    }
    for (auto fr : obj) {
        od::field f;
        if (auto e = std::move(fr).get(f)) {
            return e;
        }
        std::string_view key;
        if (auto e = f.unescaped_key().get(key)) {
            return e;
        }
        od::value v = f.value();
        bool dup = false;
        simdjson::error_code e = simdjson::SUCCESS;
        if (key == "op") {
            dup = s.op != field_state::absent;
            if (!dup) {
                e = read_string(v, s.op_name, s.op);
            }
        } else if (key == "room") {
            dup = s.room != field_state::absent;
            if (!dup) {
                e = read_string(v, s.room_value, s.room);
            }
        } else if (key == "user") {
            dup = s.user != field_state::absent;
            if (!dup) {
                e = read_string(v, s.user_value, s.user);
            }
        } else if (key == "id") {
            dup = s.id_seen || r.req.has_id;
            if (!dup) {
                s.id_seen = true;
                od::json_type t;
                if ((e = v.type().get(t))) {
                    return e;
                }
                std::string_view tok = trim(v.raw_json_token());
                e = validate_value(v, 2);
                if (!e && (t == od::json_type::number || t == od::json_type::string)) {
                    r.req.has_id = true;
                    r.req.id = tok;
                }
            }
        } else if (key == "data") {
            dup = s.data != field_state::absent;
            if (!dup) {
                od::json_type t;
                if ((e = v.type().get(t))) {
                    return e;
                }
                std::string_view tok = v.raw_json_token();
                const char* start = tok.data();
                if ((e = validate_value(v, 2))) {
                    return e;
                }
                if (t == od::json_type::object || t == od::json_type::array) {
                    // The walk leaves the iterator on the token after the value.
                    const char* end = nullptr;
                    if ((e = doc.current_location().get(end))) {
                        return e;
                    }
                    s.data_value = trim(std::string_view(start, static_cast<size_t>(end - start)));
                } else {
                    s.data_value = trim(tok);
                }
                s.data = field_state::ok;
            }
        } else if (key == "users") {
            dup = s.users != field_state::absent;
            if (!dup) {
                od::json_type t;
                if ((e = v.type().get(t))) {
                    return e;
                }
                if (t != od::json_type::array) {
                    s.users = field_state::wrong_type;
                    e = validate_value(v, 2);
                } else {
                    s.users = field_state::ok;
                    od::array a;
                    if ((e = v.get_array().get(a))) {
                        return e;
                    }
                    for (auto er : a) {
                        od::value x;
                        if ((e = std::move(er).get(x))) {
                            return e;
                        }
                        std::string_view name;
                        field_state st = field_state::absent;
                        if ((e = read_string(x, name, st))) {
                            return e;
                        }
                        if (s.users != field_state::ok) {
                            continue;  // already failed: only validate the rest
                        }
                        if (st != field_state::ok) {
                            s.users = field_state::wrong_type;
                        } else if (_users.size() >= k_max_online_users) {
                            s.users = field_state::invalid;
                            s.users_message = "too many users";
                        } else if (name.empty() || name.size() > k_max_name_bytes) {
                            s.users = field_state::invalid;
                            s.users_message = "field users: names must be 1 to 128 bytes";
                        } else {
                            _users.push_back(name);
                        }
                    }
                }
            }
        } else {
            e = validate_value(v, 2);  // ignored, but the document must be valid JSON
        }
        if (e) {
            return e;
        }
        if (dup) {
            // Validate first: a broken document is "invalid JSON", not a duplicate.
            if ((e = validate_value(v, 2))) {
                return e;
            }
            // Keep scanning: the rest must still be valid JSON, and an id that
            // comes later is still echoed in the error reply.
            std::string_view dup_message;
            if (key == "op") {
                dup_message = "duplicate field op";
            } else if (key == "room") {
                dup_message = "duplicate field room";
            } else if (key == "user") {
                dup_message = "duplicate field user";
            } else if (key == "id") {
                dup_message = "duplicate field id";
            } else if (key == "data") {
                dup_message = "duplicate field data";
            } else {
                dup_message = "duplicate field users";
            }
            if (s.duplicate.empty()) {
                s.duplicate = dup_message;
            }
        }
    }
    return simdjson::SUCCESS;
}

decode_result& json_decoder::resolve(const scan& s, decode_result& r) {
    if (!s.duplicate.empty()) {
        r.message = s.duplicate;  // ambiguity is rejected rather than resolved
        return r;
    }
    if (s.id_seen && !r.req.has_id) {
        r.message = "field id must be a number or a string";
        return r;
    }
    if (s.op == field_state::absent) {
        r.message = "missing field op";
        return r;
    }
    if (s.op != field_state::ok) {
        r.message = "field op must be a string";
        return r;
    }
    const op_name_entry* found = nullptr;
    for (const auto& entry : k_ops) {
        if (entry.name == s.op_name) {
            found = &entry;
            break;
        }
    }
    if (!found) {
        r.error = error_code::unknown_op;
        r.message = unknown_op_message(s.op_name);
        return r;
    }
    r.req.kind = found->kind;

    auto name = [&r](field_state st, std::string_view value, const field_messages& m,
                     std::string_view& dst) {
        if (st == field_state::absent) {
            r.message = m.missing;
            return false;
        }
        if (st != field_state::ok) {
            r.message = m.wrong_type;
            return false;
        }
        if (value.empty() || value.size() > k_max_name_bytes) {
            r.message = m.bad_size;
            return false;
        }
        dst = value;
        return true;
    };
    auto data = [&r, &s]() {
        if (s.data != field_state::ok) {
            r.message = "missing field data";
            return false;
        }
        r.req.data = s.data_value;
        return true;
    };

    bool ok = false;
    switch (found->kind) {
    case op::join:
    case op::leave:
    case op::presence:
        ok = name(s.room, s.room_value, k_room_msgs, r.req.room);
        break;
    case op::publish:
        ok = name(s.room, s.room_value, k_room_msgs, r.req.room) && data();
        break;
    case op::send:
        ok = name(s.user, s.user_value, k_user_msgs, r.req.user) && data();
        break;
    case op::broadcast:
        ok = data();
        break;
    case op::online:
        if (s.users == field_state::absent) {
            r.message = "missing field users";
        } else if (s.users == field_state::wrong_type) {
            r.message = "field users must be an array of strings";
        } else if (s.users == field_state::invalid) {
            r.message = s.users_message;
        } else {
            r.req.users = &_users;
            ok = true;
        }
        break;
    case op::ping:
        ok = true;
        break;
    }
    if (ok) {
        r.ok = true;
        r.message = {};
    }
    return r;
}

std::string_view json_decoder::unknown_op_message(std::string_view name) {
    constexpr std::string_view prefix = "unknown op ";
    static_assert(prefix.size() + k_max_op_name_in_error <= std::tuple_size_v<decltype(_message)>);
    size_t cut = name.size();
    if (cut > k_max_op_name_in_error) {
        cut = k_max_op_name_in_error;
        // Do not split a UTF-8 sequence: back off over continuation bytes.
        while (cut > 0 && (static_cast<uint8_t>(name[cut]) & 0xC0) == 0x80) {
            --cut;
        }
    }
    std::memcpy(_message.data(), prefix.data(), prefix.size());
    if (cut > 0) {
        std::memcpy(_message.data() + prefix.size(), name.data(), cut);
    }
    return {_message.data(), prefix.size() + cut};
}

// ---- encoders ----------------------------------------------------------------

void append_json_string(byte_buffer& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.append(std::string_view("\""));
    size_t run = 0;  // start of the pending run of bytes that need no escaping
    for (size_t i = 0; i < s.size(); ++i) {
        auto c = static_cast<uint8_t>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        out.append(s.data() + run, i - run);
        run = i + 1;
        if (c == '"') {
            out.append(std::string_view("\\\""));
        } else if (c == '\\') {
            out.append(std::string_view("\\\\"));
        } else {
            const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            out.append(esc, sizeof(esc));
        }
    }
    out.append(s.data() + run, s.size() - run);
    out.append(std::string_view("\""));
}

namespace {

void append_id(byte_buffer& out, std::string_view id) {
    if (!id.empty()) {
        out.append(std::string_view(",\"id\":"));
        out.append(id);
    }
}

void append_users(byte_buffer& out, std::span<const std::string_view> users) {
    out.append(std::string_view(",\"users\":["));
    for (size_t i = 0; i < users.size(); ++i) {
        if (i > 0) {
            out.append(std::string_view(","));
        }
        append_json_string(out, users[i]);
    }
    out.append(std::string_view("]"));
}

}  // namespace

void encode_message_push(byte_buffer& out, std::string_view room, std::string_view from,
                         std::string_view data) {
    out.append(std::string_view("{\"type\":\"message\",\"room\":"));
    append_json_string(out, room);
    out.append(std::string_view(",\"from\":"));
    append_json_string(out, from);
    out.append(std::string_view(",\"data\":"));
    out.append(data);
    out.append(std::string_view("}"));
}

void encode_direct_push(byte_buffer& out, std::string_view from, std::string_view data) {
    out.append(std::string_view("{\"type\":\"direct\",\"from\":"));
    append_json_string(out, from);
    out.append(std::string_view(",\"data\":"));
    out.append(data);
    out.append(std::string_view("}"));
}

void encode_broadcast_push(byte_buffer& out, std::string_view data) {
    out.append(std::string_view("{\"type\":\"broadcast\",\"data\":"));
    out.append(data);
    out.append(std::string_view("}"));
}

void encode_ack(byte_buffer& out, std::string_view id) {
    out.append(std::string_view("{\"type\":\"ack\""));
    append_id(out, id);
    out.append(std::string_view("}"));
}

void encode_error(byte_buffer& out, std::string_view id, error_code code, std::string_view message) {
    out.append(std::string_view("{\"type\":\"error\""));
    append_id(out, id);
    out.append(std::string_view(",\"code\":\""));
    out.append(error_code_name(code));  // fixed identifiers: nothing to escape
    out.append(std::string_view("\",\"message\":"));
    append_json_string(out, message);
    out.append(std::string_view("}"));
}

void encode_pong(byte_buffer& out, std::string_view id) {
    out.append(std::string_view("{\"type\":\"pong\""));
    append_id(out, id);
    out.append(std::string_view("}"));
}

void encode_presence_reply(byte_buffer& out, std::string_view id, std::string_view room,
                           std::span<const std::string_view> users) {
    out.append(std::string_view("{\"type\":\"presence\""));
    append_id(out, id);
    out.append(std::string_view(",\"room\":"));
    append_json_string(out, room);
    append_users(out, users);
    out.append(std::string_view("}"));
}

void encode_online_reply(byte_buffer& out, std::string_view id,
                         std::span<const std::string_view> users) {
    out.append(std::string_view("{\"type\":\"online\""));
    append_id(out, id);
    append_users(out, users);
    out.append(std::string_view("}"));
}

}  // namespace wsgate::protocol
