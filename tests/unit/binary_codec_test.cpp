// Tests for the binary codec (protocol/binary_codec.h, layouts in docs/protocol.md):
// every op with and without id; every decode error with its exact code and message;
// every truncation and one-byte extension of valid requests (each copied into an
// exact-size heap block so ASan flags any overread); exact encoder bytes; round trips
// through a small test-side parser of gateway → client messages.
#include "protocol/binary_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace wsgate::protocol {
namespace {

using bytes = std::vector<uint8_t>;

// Builds little-endian byte strings.
struct builder {
    bytes b;
    builder& u8(uint8_t v) {
        b.push_back(v);
        return *this;
    }
    builder& u16(uint16_t v) { return u8(v & 0xFF).u8(v >> 8); }
    builder& u32(uint32_t v) { return u16(v & 0xFFFF).u16(v >> 16); }
    builder& raw(std::string_view s) {
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    builder& str(std::string_view s) { return u16(static_cast<uint16_t>(s.size())).raw(s); }
    builder& data(std::string_view s) { return u32(static_cast<uint32_t>(s.size())).raw(s); }
};

constexpr std::string_view test_id("\x01\x02\x00\xFF", 4);

builder req(op o, bool with_id) {
    builder x;
    x.u8(1).u8(static_cast<uint8_t>(o)).u8(with_id ? 1 : 0);
    if (with_id) {
        x.raw(test_id);
    }
    return x;
}

// Decodes from an exact-size heap copy, so reading one byte past the end is an ASan error.
decode_result decode_exact(binary_decoder& d, const bytes& v) {
    auto copy = std::make_unique<uint8_t[]>(v.size());
    if (!v.empty()) {
        std::memcpy(copy.get(), v.data(), v.size());
    }
    static std::unique_ptr<uint8_t[]> keep;  // views must outlive this call
    keep = std::move(copy);
    return d.decode(std::span<const uint8_t>(keep.get(), v.size()));
}

const std::string binary_data("a\0b\xFF\x00z", 6);

// One valid request per op, with or without id.
std::vector<bytes> valid_requests(bool with_id) {
    return {
        req(op::join, with_id).str("lobby").b,
        req(op::leave, with_id).str("lobby").b,
        req(op::publish, with_id).str("lobby").data(binary_data).b,
        req(op::send, with_id).str("bob").data("hi").b,
        req(op::broadcast, with_id).data(binary_data).b,
        req(op::presence, with_id).str("lobby").b,
        req(op::online, with_id).u32(2).str("bob").str("eve").b,
        req(op::ping, with_id).b,
    };
}

class BinaryDecode : public ::testing::TestWithParam<bool> {
protected:
    void expect_id(const decode_result& r) {
        EXPECT_EQ(r.req.has_id, GetParam());
        EXPECT_EQ(r.req.id, GetParam() ? test_id : std::string_view());
    }
    binary_decoder dec;
};

TEST_P(BinaryDecode, JoinLeavePresence) {
    for (op o : {op::join, op::leave, op::presence}) {
        auto r = decode_exact(dec, req(o, GetParam()).str("lobby").b);
        ASSERT_TRUE(r.ok) << r.message;
        EXPECT_EQ(r.req.kind, o);
        EXPECT_EQ(r.req.room, "lobby");
        expect_id(r);
    }
}

TEST_P(BinaryDecode, Publish) {
    auto r = decode_exact(dec, req(op::publish, GetParam()).str("lobby").data(binary_data).b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::publish);
    EXPECT_EQ(r.req.room, "lobby");
    EXPECT_EQ(r.req.data, binary_data);
    expect_id(r);
}

TEST_P(BinaryDecode, PublishEmptyData) {
    auto r = decode_exact(dec, req(op::publish, GetParam()).str("r").data("").b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_TRUE(r.req.data.empty());
}

TEST_P(BinaryDecode, Send) {
    auto r = decode_exact(dec, req(op::send, GetParam()).str("bob").data("hi").b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::send);
    EXPECT_EQ(r.req.user, "bob");
    EXPECT_EQ(r.req.data, "hi");
    expect_id(r);
}

TEST_P(BinaryDecode, Broadcast) {
    auto r = decode_exact(dec, req(op::broadcast, GetParam()).data(binary_data).b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::broadcast);
    EXPECT_EQ(r.req.data, binary_data);
    expect_id(r);
}

TEST_P(BinaryDecode, Online) {
    auto r = decode_exact(dec, req(op::online, GetParam()).u32(2).str("bob").str("eve").b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::online);
    ASSERT_NE(r.req.users, nullptr);
    EXPECT_EQ(*r.req.users, (std::vector<std::string_view>{"bob", "eve"}));
    expect_id(r);
    // Reuse: the list is cleared, not appended to.
    r = decode_exact(dec, req(op::online, GetParam()).u32(0).b);
    ASSERT_TRUE(r.ok) << r.message;
    ASSERT_NE(r.req.users, nullptr);
    EXPECT_TRUE(r.req.users->empty());
}

TEST_P(BinaryDecode, Ping) {
    auto r = decode_exact(dec, req(op::ping, GetParam()).b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::ping);
    expect_id(r);
}

TEST_P(BinaryDecode, Limits) {
    std::string max_name(binary::max_name_bytes, 'x');
    EXPECT_TRUE(decode_exact(dec, req(op::join, GetParam()).str(max_name).b).ok);
    builder many = req(op::online, GetParam()).u32(binary::max_users);
    for (size_t i = 0; i < binary::max_users; ++i) {
        many.str("u");
    }
    auto r = decode_exact(dec, many.b);
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.users->size(), binary::max_users);
    EXPECT_TRUE(decode_exact(dec, req(op::join, GetParam()).str("caf\xC3\xA9").b).ok);
}

// Every prefix of a valid request is rejected as bad_request, never read past.
TEST_P(BinaryDecode, TruncationAtEveryOffset) {
    for (const bytes& full : valid_requests(GetParam())) {
        for (size_t n = 0; n < full.size(); ++n) {
            bytes cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
            auto r = decode_exact(dec, cut);
            EXPECT_FALSE(r.ok) << "op " << int(full[1]) << " cut at " << n;
            EXPECT_EQ(r.error, error_code::bad_request) << "op " << int(full[1]) << " at " << n;
            EXPECT_FALSE(r.message.empty());
            if (GetParam() && n >= 7) {
                EXPECT_EQ(r.req.id, test_id) << "id readable at " << n;
            }
        }
        EXPECT_TRUE(decode_exact(dec, full).ok);
    }
}

TEST_P(BinaryDecode, TrailingByteRejected) {
    for (bytes full : valid_requests(GetParam())) {
        full.push_back(0);
        auto r = decode_exact(dec, full);
        EXPECT_FALSE(r.ok) << "op " << int(full[1]);
        EXPECT_EQ(r.error, error_code::bad_request);
        EXPECT_EQ(r.message, "trailing bytes") << "op " << int(full[1]);
        EXPECT_EQ(r.req.has_id, GetParam());
    }
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutId, BinaryDecode, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "with_id" : "no_id"; });

struct error_case {
    const char* name;
    bytes input;
    error_code code;
    std::string_view message;
    bool id_reported;
};

std::vector<error_case> error_cases() {
    std::string long_name(binary::max_name_bytes + 1, 'x');
    builder too_many = req(op::online, true).u32(binary::max_users + 1);
    return {
        {"empty", {}, error_code::bad_request, "frame too short", false},
        {"two_bytes", {1, 1}, error_code::bad_request, "frame too short", false},
        {"version0", builder().u8(0).u8(8).u8(0).b, error_code::bad_request, "unsupported version",
         false},
        {"version2", builder().u8(2).u8(8).u8(1).raw(test_id).b, error_code::bad_request,
         "unsupported version", false},
        {"truncated_id", builder().u8(1).u8(8).u8(1).u8(1).u8(2).b, error_code::bad_request,
         "truncated id", false},
        {"reserved_flags", builder().u8(1).u8(8).u8(3).raw(test_id).b, error_code::bad_request,
         "reserved flag bits set", true},
        {"reserved_flags_no_id", builder().u8(1).u8(8).u8(0x80).b, error_code::bad_request,
         "reserved flag bits set", false},
        {"op0", builder().u8(1).u8(0).u8(1).raw(test_id).b, error_code::unknown_op, "unknown op",
         true},
        {"op9", builder().u8(1).u8(9).u8(0).b, error_code::unknown_op, "unknown op", false},
        {"op255", builder().u8(1).u8(255).u8(1).raw(test_id).u16(1).raw("x").b,
         error_code::unknown_op, "unknown op", true},
        {"room_no_len", req(op::join, true).u8(5).b, error_code::bad_request, "truncated room",
         true},
        {"room_short", req(op::join, true).u16(5).raw("lob").b, error_code::bad_request,
         "truncated room", true},
        {"room_empty", req(op::leave, true).str("").b, error_code::bad_request, "empty room", true},
        {"room_long", req(op::presence, true).str(long_name).b, error_code::bad_request,
         "room too long", true},
        {"room_utf8", req(op::join, true).str("a\xC0\x80").b, error_code::bad_request,
         "room not valid utf-8", true},
        {"room_utf8_cut", req(op::join, false).str("caf\xC3").b, error_code::bad_request,
         "room not valid utf-8", false},
        {"user_empty", req(op::send, true).str("").data("x").b, error_code::bad_request,
         "empty user", true},
        {"user_short", req(op::send, true).u16(9).raw("bob").b, error_code::bad_request,
         "truncated user", true},
        {"user_long", req(op::send, true).str(long_name).data("x").b, error_code::bad_request,
         "user too long", true},
        {"user_utf8", req(op::send, true).str("\xFF").data("x").b, error_code::bad_request,
         "user not valid utf-8", true},
        {"data_missing", req(op::publish, true).str("r").b, error_code::bad_request,
         "truncated data", true},
        {"data_len_short", req(op::publish, true).str("r").u16(1).b, error_code::bad_request,
         "truncated data", true},
        {"data_over", req(op::broadcast, true).u32(5).raw("abcd").b, error_code::bad_request,
         "truncated data", true},
        {"data_huge", req(op::broadcast, false).u32(0xFFFFFFFF).raw("abcd").b,
         error_code::bad_request, "truncated data", false},
        {"data_under", req(op::broadcast, true).u32(3).raw("abcd").b, error_code::bad_request,
         "trailing bytes", true},
        {"send_data_under", req(op::send, true).str("bob").u32(0).raw("z").b,
         error_code::bad_request, "trailing bytes", true},
        {"users_no_count", req(op::online, true).u16(0).b, error_code::bad_request,
         "truncated users", true},
        {"users_too_many", too_many.b, error_code::bad_request, "too many users", true},
        {"users_huge_count", req(op::online, true).u32(0xFFFFFFFF).b, error_code::bad_request,
         "too many users", true},
        {"users_missing_entry", req(op::online, true).u32(2).str("bob").b,
         error_code::bad_request, "truncated users entry", true},
        {"users_empty_entry", req(op::online, true).u32(2).str("bob").str("").b,
         error_code::bad_request, "empty users entry", true},
        {"users_long_entry", req(op::online, true).u32(1).str(long_name).b,
         error_code::bad_request, "users entry too long", true},
        {"users_utf8_entry", req(op::online, true).u32(1).str("\xED\xA0\x80").b,
         error_code::bad_request, "users entry not valid utf-8", true},
        {"users_trailing", req(op::online, true).u32(1).str("bob").str("eve").b,
         error_code::bad_request, "trailing bytes", true},
        {"ping_trailing", req(op::ping, true).u8(0).b, error_code::bad_request, "trailing bytes",
         true},
        {"join_trailing", req(op::join, false).str("r").u8(0).b, error_code::bad_request,
         "trailing bytes", false},
    };
}

TEST(BinaryDecodeErrors, ExactCodeMessageAndId) {
    binary_decoder dec;
    for (const error_case& c : error_cases()) {
        SCOPED_TRACE(c.name);
        auto r = decode_exact(dec, c.input);
        EXPECT_FALSE(r.ok);
        EXPECT_EQ(r.error, c.code);
        EXPECT_EQ(r.message, c.message);
        EXPECT_EQ(r.req.has_id, c.id_reported);
        EXPECT_EQ(r.req.id, c.id_reported ? test_id : std::string_view());
    }
}

// Deterministic garbage, including plausible headers: never crashes, always answers.
TEST(BinaryDecodeErrors, RandomInputNeverCrashes) {
    binary_decoder dec;
    std::mt19937 rng(12345);
    for (int i = 0; i < 20000; ++i) {
        bytes v(rng() % 24);
        for (auto& x : v) {
            x = static_cast<uint8_t>(rng() % 4 == 0 ? rng() % 4 : rng());
        }
        if (v.size() >= 3 && rng() % 2) {
            v[0] = 1;
            v[1] = static_cast<uint8_t>(1 + rng() % 8);
            v[2] = static_cast<uint8_t>(rng() % 2);
        }
        auto r = decode_exact(dec, v);
        if (!r.ok) {
            EXPECT_FALSE(r.message.empty());
        }
    }
}

// ---- encoders ----

bytes out_bytes(const byte_buffer& b) { return bytes(b.data(), b.data() + b.size()); }

TEST(BinaryEncode, Pushes) {
    byte_buffer out;
    binary::encode_message_push(out, "lobby", "al", std::string_view("\0x", 2));
    EXPECT_EQ(out_bytes(out), builder()
                                  .u8(1).u8(1).u8(0)
                                  .u8(5).u8(0).raw("lobby")
                                  .u8(2).u8(0).raw("al")
                                  .u8(2).u8(0).u8(0).u8(0).u8(0).raw("x")
                                  .b);
    out.clear();
    binary::encode_direct_push(out, "al", "hi");
    EXPECT_EQ(out_bytes(out), builder().u8(1).u8(2).u8(0).str("al").data("hi").b);
    out.clear();
    binary::encode_broadcast_push(out, "");
    EXPECT_EQ(out_bytes(out), bytes({1, 3, 0, 0, 0, 0, 0}));
}

TEST(BinaryEncode, Replies) {
    byte_buffer out;
    binary::encode_ack(out, test_id);
    EXPECT_EQ(out_bytes(out), bytes({1, 4, 1, 0x01, 0x02, 0x00, 0xFF}));
    out.clear();
    binary::encode_ack(out, {});
    EXPECT_EQ(out_bytes(out), bytes({1, 4, 0}));
    out.clear();
    binary::encode_pong(out, {});
    EXPECT_EQ(out_bytes(out), bytes({1, 6, 0}));
    out.clear();
    binary::encode_pong(out, test_id);
    EXPECT_EQ(out_bytes(out), bytes({1, 6, 1, 0x01, 0x02, 0x00, 0xFF}));
    out.clear();
    binary::encode_error(out, std::string_view("\x01\0\0\0", 4), error_code::not_member,
                         "not a member");
    EXPECT_EQ(out_bytes(out), builder()
                                  .u8(1).u8(5).u8(1).u8(1).u8(0).u8(0).u8(0)
                                  .u8(4).u8(12).u8(0).raw("not a member")
                                  .b);
    out.clear();
    binary::encode_error(out, {}, error_code::bad_request, "");
    EXPECT_EQ(out_bytes(out), bytes({1, 5, 0, 1, 0, 0}));
    out.clear();
    std::vector<std::string_view> users{"al", "bo"};
    binary::encode_presence_reply(out, test_id, "r", users);
    EXPECT_EQ(out_bytes(out), builder()
                                  .u8(1).u8(7).u8(1).raw(test_id)
                                  .str("r").u32(2).str("al").str("bo")
                                  .b);
    out.clear();
    binary::encode_online_reply(out, {}, users);
    EXPECT_EQ(out_bytes(out), builder().u8(1).u8(8).u8(0).u32(2).str("al").str("bo").b);
    out.clear();
    binary::encode_online_reply(out, test_id, {});
    EXPECT_EQ(out_bytes(out), builder().u8(1).u8(8).u8(1).raw(test_id).u32(0).b);
}

TEST(BinaryEncode, AppendsAfterExistingBytes) {
    byte_buffer out;
    out.append(std::string_view("prefix"));
    binary::encode_ack(out, test_id);
    binary::encode_pong(out, {});
    EXPECT_EQ(out.view().substr(0, 6), "prefix");
    EXPECT_EQ(out_bytes(out).size(), 6u + 7u + 3u);
}

TEST(BinaryEncode, LargeDataAndErrorMessageClamp) {
    byte_buffer out;
    std::string big(100000, '\0');
    big[99999] = 'z';
    binary::encode_broadcast_push(out, big);
    ASSERT_EQ(out.size(), 7u + big.size());
    EXPECT_EQ(out.view().substr(7), big);
    out.clear();
    binary::encode_error(out, {}, error_code::internal, big);
    EXPECT_EQ(out.size(), 3u + 1u + 2u + 0xFFFFu);
    EXPECT_EQ(out.data()[4], 0xFF);
    EXPECT_EQ(out.data()[5], 0xFF);
}

// ---- round trips, through a test-side parser of gateway → client messages ----

struct parsed {
    uint8_t type = 0;
    std::optional<std::string> id;
    std::string room, from, data, message;
    uint8_t code = 0;
    std::vector<std::string> users;
};

// Minimal, strict parser; returns nullopt on any inconsistency.
std::optional<parsed> parse_out(std::string_view v) {
    size_t pos = 0;
    auto need = [&](size_t n) { return v.size() - pos >= n; };
    auto u8 = [&]() { return static_cast<uint8_t>(v[pos++]); };
    auto u16 = [&]() {
        uint16_t lo = u8();
        return static_cast<uint16_t>(lo | (u8() << 8));
    };
    auto u32 = [&]() {
        uint32_t lo = u16();
        return lo | (static_cast<uint32_t>(u16()) << 16);
    };
    auto str = [&](std::string& s) {
        if (!need(2)) {
            return false;
        }
        uint16_t n = u16();
        if (!need(n)) {
            return false;
        }
        s = std::string(v.substr(pos, n));
        pos += n;
        return true;
    };
    auto dat = [&](std::string& s) {
        if (!need(4)) {
            return false;
        }
        uint32_t n = u32();
        if (!need(n)) {
            return false;
        }
        s = std::string(v.substr(pos, n));
        pos += n;
        return true;
    };
    auto users = [&](std::vector<std::string>& u) {
        if (!need(4)) {
            return false;
        }
        uint32_t n = u32();
        for (uint32_t i = 0; i < n; ++i) {
            if (!str(u.emplace_back())) {
                return false;
            }
        }
        return true;
    };
    parsed p;
    if (!need(3) || u8() != 1) {
        return std::nullopt;
    }
    p.type = u8();
    uint8_t flags = u8();
    if (flags & 1) {
        if (!need(4)) {
            return std::nullopt;
        }
        p.id = std::string(v.substr(pos, 4));
        pos += 4;
    }
    bool ok = true;
    switch (p.type) {
        case 1: ok = str(p.room) && str(p.from) && dat(p.data); break;
        case 2: ok = str(p.from) && dat(p.data); break;
        case 3: ok = dat(p.data); break;
        case 4:
        case 6: break;
        case 5: ok = need(1) && ((p.code = u8()), str(p.message)); break;
        case 7: ok = str(p.room) && users(p.users); break;
        case 8: ok = users(p.users); break;
        default: ok = false;
    }
    if (!ok || pos != v.size()) {
        return std::nullopt;
    }
    return p;
}

TEST(BinaryRoundTrip, PublishToMessagePush) {
    binary_decoder dec;
    std::string data = binary_data + std::string(300, '\0') + "\x80\xFE";
    auto r = decode_exact(dec, req(op::publish, true).str("lobby").data(data).b);
    ASSERT_TRUE(r.ok) << r.message;
    byte_buffer out;
    binary::encode_message_push(out, r.req.room, "alice", r.req.data);
    auto p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 1);
    EXPECT_FALSE(p->id.has_value());
    EXPECT_EQ(p->room, "lobby");
    EXPECT_EQ(p->from, "alice");
    EXPECT_EQ(p->data, data);
}

TEST(BinaryRoundTrip, SendAndBroadcastPushes) {
    binary_decoder dec;
    auto r = decode_exact(dec, req(op::send, false).str("bob").data(binary_data).b);
    ASSERT_TRUE(r.ok);
    byte_buffer out;
    binary::encode_direct_push(out, "alice", r.req.data);
    auto p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 2);
    EXPECT_EQ(p->from, "alice");
    EXPECT_EQ(p->data, binary_data);

    r = decode_exact(dec, req(op::broadcast, true).data(binary_data).b);
    ASSERT_TRUE(r.ok);
    out.clear();
    binary::encode_broadcast_push(out, r.req.data);
    p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 3);
    EXPECT_EQ(p->data, binary_data);
}

TEST(BinaryRoundTrip, RepliesEchoId) {
    binary_decoder dec;
    byte_buffer out;
    auto r = decode_exact(dec, req(op::online, true).u32(3).str("a").str("b").str("c").b);
    ASSERT_TRUE(r.ok);
    std::vector<std::string_view> online{(*r.req.users)[0], (*r.req.users)[2]};
    binary::encode_online_reply(out, r.req.id, online);
    auto p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 8);
    EXPECT_EQ(p->id, std::string(test_id));
    EXPECT_EQ(p->users, (std::vector<std::string>{"a", "c"}));

    r = decode_exact(dec, req(op::presence, true).str("lobby").b);
    ASSERT_TRUE(r.ok);
    out.clear();
    std::vector<std::string_view> members{"x", "y", "z"};
    binary::encode_presence_reply(out, r.req.id, r.req.room, members);
    p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 7);
    EXPECT_EQ(p->room, "lobby");
    EXPECT_EQ(p->users, (std::vector<std::string>{"x", "y", "z"}));

    // A failed decode with a readable id → error reply carrying it.
    r = decode_exact(dec, req(op::join, true).str("").b);
    ASSERT_FALSE(r.ok);
    out.clear();
    binary::encode_error(out, r.req.id, r.error, r.message);
    p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 5);
    EXPECT_EQ(p->id, std::string(test_id));
    EXPECT_EQ(p->code, static_cast<uint8_t>(error_code::bad_request));
    EXPECT_EQ(p->message, "empty room");

    r = decode_exact(dec, req(op::ping, false).b);
    ASSERT_TRUE(r.ok);
    out.clear();
    binary::encode_pong(out, r.req.id);
    p = parse_out(out.view());
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->type, 6);
    EXPECT_FALSE(p->id.has_value());
}

}  // namespace
}  // namespace wsgate::protocol
