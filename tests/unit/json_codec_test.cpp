// Tests for the JSON codec (protocol/json_codec.h): every op decoded with and
// without id, in any field order, with extra fields and whitespace; `data` kept
// byte for byte; every error outcome with its code and message; the id reported
// by failed decodes; encoders' exact output, escaping, validity (parsed back with
// simdjson DOM) and a publish → message push round trip.
#include "protocol/json_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wsgate::protocol {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class JsonDecoder : public ::testing::Test {
protected:
    decode_result dec(std::string_view s) { return _d.decode(bytes_of(s)); }

    json_decoder _d;
};

// ---- successful decodes ------------------------------------------------------

TEST_F(JsonDecoder, PingWithoutId) {
    auto r = dec(R"({"op":"ping"})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::ping);
    EXPECT_FALSE(r.req.has_id);
    EXPECT_TRUE(r.req.id.empty());
}

TEST_F(JsonDecoder, IdKeptAsRawText) {
    struct tc {
        std::string_view json;
        std::string_view id;
    };
    const tc cases[] = {
        {R"({"op":"ping","id":7})", "7"},
        {R"({"id":-1.50e+3,"op":"ping"})", "-1.50e+3"},
        {R"({"op":"ping","id":"abc"})", R"("abc")"},
        {R"({"op":"ping","id" : "a\"b\u00e9" })", R"("a\"b\u00e9")"},
        {"{ \"op\" : \"ping\" ,\n\t\"id\" :\r\n 42 \n}", "42"},
        {R"({"op":"ping","id":"日本"})", R"("日本")"},
    };
    for (const auto& c : cases) {
        auto r = dec(c.json);
        ASSERT_TRUE(r.ok) << c.json << ": " << r.message;
        EXPECT_TRUE(r.req.has_id) << c.json;
        EXPECT_EQ(r.req.id, c.id) << c.json;
    }
}

TEST_F(JsonDecoder, RoomOps) {
    struct tc {
        std::string_view json;
        op kind;
    };
    const tc cases[] = {
        {R"({"op":"join","room":"lobby"})", op::join},
        {R"({"room":"lobby","op":"join"})", op::join},
        {R"({"op":"leave","room":"lobby","id":1})", op::leave},
        {R"({"op":"presence","x":{"room":"no"},"room":"lobby","y":[1,"2",null]})", op::presence},
        {" \n{ \"room\" :\"lobby\" , \"op\":\"join\" } \n\t", op::join},
        {R"({"op":"join","room":"lo\u0062by"})", op::join},
    };
    for (const auto& c : cases) {
        auto r = dec(c.json);
        ASSERT_TRUE(r.ok) << c.json << ": " << r.message;
        EXPECT_EQ(r.req.kind, c.kind) << c.json;
        EXPECT_EQ(r.req.room, "lobby") << c.json;
    }
}

TEST_F(JsonDecoder, RoomUnescaped) {
    auto r = dec(R"({"op":"join","room":"a\"b\\c\u00e9"})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.room, "a\"b\\c\xC3\xA9");
}

TEST_F(JsonDecoder, NameLengthBounds) {
    std::string room(128, 'r');
    auto r = dec(R"({"op":"join","room":")" + room + "\"}");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.room, room);
}

TEST_F(JsonDecoder, PublishDataByteIdentical) {
    std::string deep;
    for (int i = 0; i < 100; ++i) {
        deep += i % 2 ? "[" : "{\"k\":";
    }
    deep += "1";
    for (int i = 99; i >= 0; --i) {
        deep += i % 2 ? "]" : "}";
    }
    const std::string datas[] = {
        R"({"a":1,"b":[1,2,{"c":null}],"d":"x"})",
        R"({ "a" : 1 ,  "b" : [ ] })",
        "{}",
        "[]",
        R"([1, "two", {"three": 3.0}, [null, true, false]])",
        R"("he said \"hi\" \\ \/ \n \u00e9 \ud83d\ude00")",
        "\"\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\"",
        "1.50e+3",
        "-0",
        "0",
        "12345678901234567890123456789",
        "1e400",
        "-0.000001E-10",
        "true",
        "false",
        "null",
        "\"\"",
        deep,
    };
    for (const auto& d : datas) {
        const std::string variants[] = {
            R"({"op":"publish","room":"r","data":)" + d + "}",
            R"({"data":)" + d + R"(,"op":"publish","room":"r"})",
            "{\"op\":\"publish\",\"data\" : \n " + d + " \t\n,\"room\":\"r\",\"z\":0}",
            "{\"room\":\"r\",\"op\":\"publish\",\"data\":" + d + "\r\n}",
        };
        for (const auto& json : variants) {
            auto r = dec(json);
            ASSERT_TRUE(r.ok) << json << ": " << r.message;
            EXPECT_EQ(r.req.kind, op::publish);
            EXPECT_EQ(r.req.room, "r");
            EXPECT_EQ(r.req.data, d) << json;
        }
    }
}

TEST_F(JsonDecoder, SendAndBroadcast) {
    auto r = dec(R"({"data":{"x":[1]},"user":"bob","op":"send","id":"s1"})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::send);
    EXPECT_EQ(r.req.user, "bob");
    EXPECT_EQ(r.req.data, R"({"x":[1]})");
    EXPECT_EQ(r.req.id, R"("s1")");

    r = dec(R"({"op":"broadcast","data":"all"})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::broadcast);
    EXPECT_EQ(r.req.data, R"("all")");
    EXPECT_FALSE(r.req.has_id);
}

TEST_F(JsonDecoder, Online) {
    auto r = dec(R"({"op":"online","users":["a","b\u0063", "d"],"id":3})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::online);
    ASSERT_NE(r.req.users, nullptr);
    EXPECT_EQ(*r.req.users, (std::vector<std::string_view>{"a", "bc", "d"}));

    r = dec(R"({"op":"online","users":[]})");
    ASSERT_TRUE(r.ok) << r.message;
    ASSERT_NE(r.req.users, nullptr);
    EXPECT_TRUE(r.req.users->empty());

    std::string many = R"({"op":"online","users":[)";
    for (size_t i = 0; i < k_max_online_users; ++i) {
        many += (i ? ",\"u" : "\"u") + std::to_string(i) + "\"";
    }
    r = dec(many + "]}");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.users->size(), k_max_online_users);

    r = dec(many + R"(,"one more"]})");
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(r.error, error_code::bad_request);
    EXPECT_EQ(r.message, "too many users");
}

TEST_F(JsonDecoder, FieldsOfOtherOpsIgnored) {
    auto r = dec(R"({"op":"ping","room":5,"user":[],"users":"x","data":1})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.req.kind, op::ping);
}

TEST_F(JsonDecoder, ReuseAcrossSizes) {
    std::string big = R"({"op":"publish","room":"r","data":")" + std::string(100000, 'x') + "\"}";
    for (int i = 0; i < 3; ++i) {
        auto r = dec(big);
        ASSERT_TRUE(r.ok) << r.message;
        EXPECT_EQ(r.req.data.size(), 100002u);
        r = dec(R"({"op":"join","room":"small"})");
        ASSERT_TRUE(r.ok) << r.message;
        EXPECT_EQ(r.req.room, "small");
    }
}

// ---- errors ------------------------------------------------------------------

struct error_case {
    std::string json;
    error_code code;
    std::string_view message;
    std::string_view id;  // expected id, empty for none
};

TEST_F(JsonDecoder, Errors) {
    const error_case cases[] = {
        {"", error_code::bad_request, "invalid JSON", ""},
        {"   ", error_code::bad_request, "invalid JSON", ""},
        {"nope", error_code::bad_request, "invalid JSON", ""},
        {"[1]", error_code::bad_request, "invalid JSON", ""},
        {R"("str")", error_code::bad_request, "invalid JSON", ""},
        {"42", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping"} x)", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping"}})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping"}{})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping",})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping")", error_code::bad_request, "invalid JSON", ""},
        {R"({"op" "ping"})", error_code::bad_request, "invalid JSON", ""},
        {R"({op:"ping"})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":tru})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":{"a":nul}})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":[1,2,]})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":01})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":1.})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"publish","room":"r","data":"\q"})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping","x":[1,{"y":falsey}]})", error_code::bad_request, "invalid JSON", ""},
        {R"({"op":"ping","x":+1})", error_code::bad_request, "invalid JSON", ""},
        {"{\"op\":\"ping\",\"x\":\"a\x01\"}", error_code::bad_request, "invalid JSON", ""},
        {"{\"op\":\"ping\",\"x\":\"\xC3\x28\"}", error_code::bad_request, "invalid JSON", ""},
        {R"({})", error_code::bad_request, "missing field op", ""},
        {R"({"id":1})", error_code::bad_request, "missing field op", "1"},
        {R"({"op":5})", error_code::bad_request, "field op must be a string", ""},
        {R"({"op":null,"id":"q"})", error_code::bad_request, "field op must be a string", R"("q")"},
        {R"({"op":"nope"})", error_code::unknown_op, "unknown op nope", ""},
        {R"({"op":"","id":2})", error_code::unknown_op, "unknown op ", "2"},
        {R"({"op":"PING"})", error_code::unknown_op, "unknown op PING", ""},
        {R"({"op":"0123456789012345678901234567890123456789"})", error_code::unknown_op,
         "unknown op 01234567890123456789012345678901", ""},
        {R"({"op":"join"})", error_code::bad_request, "missing field room", ""},
        {R"({"op":"leave","room":5,"id":3})", error_code::bad_request,
         "field room must be a string", "3"},
        {R"({"op":"presence","room":""})", error_code::bad_request,
         "field room must be 1 to 128 bytes", ""},
        {R"({"op":"join","room":")" + std::string(129, 'r') + "\"}", error_code::bad_request,
         "field room must be 1 to 128 bytes", ""},
        {R"({"op":"publish","data":1})", error_code::bad_request, "missing field room", ""},
        {R"({"op":"publish","room":"r"})", error_code::bad_request, "missing field data", ""},
        {R"({"op":"send","data":1})", error_code::bad_request, "missing field user", ""},
        {R"({"op":"send","user":{},"data":1})", error_code::bad_request,
         "field user must be a string", ""},
        {R"({"op":"send","user":"","data":1})", error_code::bad_request,
         "field user must be 1 to 128 bytes", ""},
        {R"({"op":"send","user":"u"})", error_code::bad_request, "missing field data", ""},
        {R"({"op":"broadcast","id":"b"})", error_code::bad_request, "missing field data", R"("b")"},
        {R"({"op":"online"})", error_code::bad_request, "missing field users", ""},
        {R"({"op":"online","users":"a"})", error_code::bad_request,
         "field users must be an array of strings", ""},
        {R"({"op":"online","users":["a",1]})", error_code::bad_request,
         "field users must be an array of strings", ""},
        {R"({"op":"online","users":["a",""]})", error_code::bad_request,
         "field users: names must be 1 to 128 bytes", ""},
        {R"({"op":"ping","id":true})", error_code::bad_request,
         "field id must be a number or a string", ""},
        {R"({"op":"ping","id":{"a":1}})", error_code::bad_request,
         "field id must be a number or a string", ""},
        {R"({"op":"ping","id":null})", error_code::bad_request,
         "field id must be a number or a string", ""},
        {R"({"op":"ping","op":"join"})", error_code::bad_request, "duplicate field op", ""},
        {R"({"op":"join","room":"a","room":"b"})", error_code::bad_request,
         "duplicate field room", ""},
        {R"({"op":"ping","id":1,"id":2})", error_code::bad_request, "duplicate field id", "1"},
        {R"({"op":"publish","room":"a","data":1,"data":2})", error_code::bad_request,
         "duplicate field data", ""},
        // An id after the duplicate is still read and echoed; the first duplicate is named;
        // a document broken after a duplicate is invalid JSON.
        {R"({"op":"join","room":"a","room":"b","id":1})", error_code::bad_request,
         "duplicate field room", "1"},
        {R"({"op":"join","op":"x","room":"a","room":"b","id":"q"})", error_code::bad_request,
         "duplicate field op", R"("q")"},
        {R"({"op":"join","room":"a","room":"b","x":tru})", error_code::bad_request,
         "invalid JSON", ""},
        // The id is reported even when the document turns out broken after it.
        {R"({"id":9,"op":tru})", error_code::bad_request, "invalid JSON", "9"},
        {R"({"id":"x","op":"ping"}})", error_code::bad_request, "invalid JSON", R"("x")"},
        {R"({"id":"x","op":"ping"}{})", error_code::bad_request, "invalid JSON", R"("x")"},
        // Rejected by simdjson before any field is read: no id to report.
        {R"({"id":"x","op":"ping"} trailing)", error_code::bad_request, "invalid JSON", ""},
        {R"({"id":"x","op":"ping"} 1)", error_code::bad_request, "invalid JSON", ""},
    };
    for (const auto& c : cases) {
        auto r = dec(c.json);
        EXPECT_FALSE(r.ok) << c.json;
        EXPECT_EQ(r.error, c.code) << c.json;
        EXPECT_EQ(r.message, c.message) << c.json;
        EXPECT_EQ(r.req.has_id, !c.id.empty()) << c.json;
        EXPECT_EQ(r.req.id, c.id) << c.json;
    }
}

TEST_F(JsonDecoder, UnknownOpTruncationKeepsUtf8Whole) {
    // 31 ASCII bytes then a 3-byte character straddling the 32-byte cut.
    std::string name = std::string(31, 'a') + "\xE6\x97\xA5" + "tail";
    auto r = dec(R"({"op":")" + name + "\"}");
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(r.error, error_code::unknown_op);
    EXPECT_EQ(r.message, "unknown op " + std::string(31, 'a'));
}

TEST_F(JsonDecoder, NestingLimit) {
    auto nested = [](int n) {
        return R"({"op":"publish","room":"r","data":)" + std::string(n, '[') + std::string(n, ']') + "}";
    };
    auto r = dec(nested(k_max_json_depth - 1));
    EXPECT_TRUE(r.ok) << r.message;
    r = dec(nested(k_max_json_depth + 10));
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.message, "JSON nested too deeply");
    r = dec(nested(5000));
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, error_code::bad_request);
}

TEST_F(JsonDecoder, ErrorThenSuccessResetsState) {
    auto r = dec(R"({"op":"online","users":["a"],"id":1,"x":tru})");
    EXPECT_FALSE(r.ok);
    r = dec(R"({"op":"ping"})");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_FALSE(r.req.has_id);
    EXPECT_EQ(r.req.users, nullptr);
}

// ---- encoders ----------------------------------------------------------------

// Parse `s` back with simdjson DOM: every encoder output must be valid JSON.
bool valid_json(std::string_view s) {
    simdjson::dom::parser p;
    simdjson::dom::element e;
    return p.parse(s.data(), s.size()).get(e) == simdjson::SUCCESS;
}

TEST(JsonEncoder, ExactOutput) {
    const std::string_view users[] = {"a", "b\"c"};
    struct tc {
        std::string out;
        std::string_view want;
    };
    std::vector<tc> cases;
    auto run = [&cases](auto&& fn, std::string_view want) {
        byte_buffer b;
        fn(b);
        cases.push_back({std::string(b.view()), want});
    };
    run([](byte_buffer& b) { encode_message_push(b, "lobby", "alice", R"({"x":[1,2]})"); },
        R"({"type":"message","room":"lobby","from":"alice","data":{"x":[1,2]}})");
    run([](byte_buffer& b) { encode_direct_push(b, "bob", "1.50e+3"); },
        R"({"type":"direct","from":"bob","data":1.50e+3})");
    run([](byte_buffer& b) { encode_broadcast_push(b, "null"); },
        R"({"type":"broadcast","data":null})");
    run([](byte_buffer& b) { encode_ack(b, "7"); }, R"({"type":"ack","id":7})");
    run([](byte_buffer& b) { encode_ack(b, R"("a\"b")"); }, R"({"type":"ack","id":"a\"b"})");
    run([](byte_buffer& b) { encode_error(b, "7", error_code::bad_request, "missing field room"); },
        R"({"type":"error","id":7,"code":"bad_request","message":"missing field room"})");
    run([](byte_buffer& b) { encode_error(b, "", error_code::unknown_op, "unknown op \"x\""); },
        R"({"type":"error","code":"unknown_op","message":"unknown op \"x\""})");
    run([](byte_buffer& b) { encode_pong(b, ""); }, R"({"type":"pong"})");
    run([](byte_buffer& b) { encode_pong(b, R"("p")"); }, R"({"type":"pong","id":"p"})");
    run([&users](byte_buffer& b) { encode_presence_reply(b, "3", "lobby", users); },
        R"({"type":"presence","id":3,"room":"lobby","users":["a","b\"c"]})");
    run([](byte_buffer& b) { encode_presence_reply(b, "", "r", {}); },
        R"({"type":"presence","room":"r","users":[]})");
    run([&users](byte_buffer& b) { encode_online_reply(b, "4", users); },
        R"({"type":"online","id":4,"users":["a","b\"c"]})");
    run([](byte_buffer& b) { encode_online_reply(b, "", {}); }, R"({"type":"online","users":[]})");
    for (const auto& c : cases) {
        EXPECT_EQ(c.out, c.want);
        EXPECT_TRUE(valid_json(c.out)) << c.out;
    }
}

TEST(JsonEncoder, ErrorCodeNames) {
    EXPECT_EQ(error_code_name(error_code::bad_request), "bad_request");
    EXPECT_EQ(error_code_name(error_code::unknown_op), "unknown_op");
    EXPECT_EQ(error_code_name(error_code::forbidden), "forbidden");
    EXPECT_EQ(error_code_name(error_code::not_member), "not_member");
    EXPECT_EQ(error_code_name(error_code::limit), "limit");
    EXPECT_EQ(error_code_name(error_code::unavailable), "unavailable");
    EXPECT_EQ(error_code_name(error_code::internal), "internal");
}

TEST(JsonEncoder, Escaping) {
    std::string name = "a\"b\\c";
    name += '\x01';
    name += '\n';
    name += '\x1f';
    name += '\0';
    name += "/\x7f\xC3\xA9\xF0\x9F\x98\x80z";
    byte_buffer b;
    append_json_string(b, name);
    EXPECT_EQ(b.view(),
              "\"a\\\"b\\\\c\\u0001\\u000a\\u001f\\u0000/\x7f\xC3\xA9\xF0\x9F\x98\x80z\"");
    EXPECT_TRUE(valid_json(b.view()));

    // Parsed back, the escaped string is the original.
    simdjson::dom::parser p;
    std::string_view back;
    ASSERT_EQ(p.parse(b.view().data(), b.view().size()).get_string().get(back), simdjson::SUCCESS);
    EXPECT_EQ(back, name);

    byte_buffer m;
    encode_message_push(m, name, name, "1");
    EXPECT_TRUE(valid_json(m.view())) << m.view();
    simdjson::dom::element e;
    ASSERT_EQ(p.parse(m.view().data(), m.view().size()).get(e), simdjson::SUCCESS);
    std::string_view room;
    std::string_view from;
    ASSERT_EQ(e["room"].get(room), simdjson::SUCCESS);
    EXPECT_EQ(room, name);
    ASSERT_EQ(e["from"].get(from), simdjson::SUCCESS);
    EXPECT_EQ(from, name);

    byte_buffer empty;
    append_json_string(empty, "");
    EXPECT_EQ(empty.view(), "\"\"");
}

TEST(JsonEncoder, AppendsToExistingBuffer) {
    byte_buffer b;
    b.append(std::string_view("prefix"));
    encode_pong(b, "");
    EXPECT_EQ(b.view(), R"(prefix{"type":"pong"})");
}

TEST(JsonRoundTrip, PublishToMessagePush) {
    const std::string_view datas[] = {
        R"({"k" : [1, 2.50, "x\u0041\"", {"n":null}], "t":true})",
        R"("\ud83d\ude00 日本")",
        "1.50e+3",
        "[ ]",
        "false",
    };
    json_decoder d;
    for (auto data : datas) {
        std::string json = R"({"id":"r1","op":"publish","room":"lo\"bby","data":  )" +
                           std::string(data) + "  }";
        auto r = d.decode(bytes_of(json));
        ASSERT_TRUE(r.ok) << json << ": " << r.message;
        byte_buffer out;
        encode_message_push(out, r.req.room, "alice", r.req.data);
        std::string want = R"({"type":"message","room":"lo\"bby","from":"alice","data":)" +
                           std::string(data) + "}";
        EXPECT_EQ(out.view(), want);
        ASSERT_TRUE(valid_json(out.view())) << out.view();

        // The push decodes (as an envelope with extra fields) to the same data bytes.
        json_decoder again;
        std::string as_publish = std::string(out.view());
        as_publish.insert(1, R"("op":"publish",)");
        auto r2 = again.decode(bytes_of(as_publish));
        ASSERT_TRUE(r2.ok) << as_publish << ": " << r2.message;
        EXPECT_EQ(r2.req.data, data);
        EXPECT_EQ(r2.req.room, "lo\"bby");

        byte_buffer ack;
        encode_ack(ack, r.req.id);
        EXPECT_EQ(ack.view(), R"({"type":"ack","id":"r1"})");
    }
}

}  // namespace
}  // namespace wsgate::protocol
