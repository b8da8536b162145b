// Push encoding in both formats (protocol/push.h) and the server frame header
// writer used for batch frames (protocol/ws_frame.h).
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "protocol/push.h"
#include "protocol/ws_frame.h"

namespace wsgate::protocol {
namespace {

std::string encode(wire_format f, const push_fields& p) {
    byte_buffer out;
    encode_push(out, f, p);
    return std::string(out.view());
}

TEST(Push, JsonDataIsVerbatim) {
    push_fields p;
    p.kind = push_kind::message;
    p.room = "lobby";
    p.from = "al\"ice";
    p.data = R"( {"a" : [1, 2.50, "\u00e9"]} )";
    EXPECT_EQ(encode(wire_format::json, p),
              R"({"type":"message","room":"lobby","from":"al\"ice","data": {"a" : [1, 2.50, "\u00e9"]} })");
    p.kind = push_kind::direct;
    p.data = "7";
    EXPECT_EQ(encode(wire_format::json, p), R"({"type":"direct","from":"al\"ice","data":7})");
    p.kind = push_kind::broadcast;
    EXPECT_EQ(encode(wire_format::json, p), R"({"type":"broadcast","data":7})");
}

TEST(Push, BinaryDataToJsonIsBase64) {
    push_fields p;
    p.kind = push_kind::message;
    p.room = "r";
    p.from = "u";
    p.data = std::string_view("\x00\x01\xff", 3);
    p.data_is_json = false;
    EXPECT_EQ(encode(wire_format::json, p), R"({"type":"message","room":"r","from":"u","binary":true,"data":"AAH/"})");
    p.kind = push_kind::direct;
    p.data = "";
    EXPECT_EQ(encode(wire_format::json, p), R"({"type":"direct","from":"u","binary":true,"data":""})");
    p.kind = push_kind::broadcast;
    p.data = "ab";
    EXPECT_EQ(encode(wire_format::json, p), R"({"type":"broadcast","binary":true,"data":"YWI="})");
}

TEST(Push, MessageIdLeadsJsonPushes) {
    push_fields p;
    p.kind = push_kind::message;
    p.room = "r";
    p.from = "u";
    p.data = "[1]";
    p.mid = "gw\"1:0:7";
    EXPECT_EQ(encode(wire_format::json, p), R"({"mid":"gw\"1:0:7","type":"message","room":"r","from":"u","data":[1]})");
    p.kind = push_kind::broadcast;
    p.data = "ab";
    p.data_is_json = false;
    EXPECT_EQ(encode(wire_format::json, p), R"({"mid":"gw\"1:0:7","type":"broadcast","binary":true,"data":"YWI="})");
    // Appended after existing bytes: only this push's '{' is dropped.
    byte_buffer out;
    out.append(std::string_view("xyz"));
    p.kind = push_kind::direct;
    p.data = "1";
    p.data_is_json = true;
    encode_push(out, wire_format::json, p);
    EXPECT_EQ(out.view(), R"(xyz{"mid":"gw\"1:0:7","type":"direct","from":"u","data":1})");
    // Binary pushes carry no id.
    push_fields q = p;
    q.mid = {};
    EXPECT_EQ(encode(wire_format::binary, p), encode(wire_format::binary, q));
}

TEST(Push, BinaryReceiverGetsBytes) {
    push_fields p;
    p.kind = push_kind::direct;
    p.from = "bob";
    p.data = R"({"x":1})";  // JSON text passes as its bytes
    std::string got = encode(wire_format::binary, p);
    std::string want = std::string("\x01\x02\x00", 3) + std::string("\x03\x00", 2) + "bob" +
                       std::string("\x07\x00\x00\x00", 4) + R"({"x":1})";
    EXPECT_EQ(got, want);
}

TEST(ServerHeader, LengthEncodings) {
    uint8_t h[frame::max_server_header];
    ASSERT_EQ(frame::write_server_header(h, 0x1, 125), 2u);
    EXPECT_EQ(h[0], 0x81);
    EXPECT_EQ(h[1], 125);
    ASSERT_EQ(frame::write_server_header(h, 0x2, 126), 4u);
    EXPECT_EQ(h[0], 0x82);
    EXPECT_EQ(h[1], 126);
    EXPECT_EQ(h[2], 0);
    EXPECT_EQ(h[3], 126);
    ASSERT_EQ(frame::write_server_header(h, 0x1, 65535), 4u);
    EXPECT_EQ(h[2], 0xff);
    EXPECT_EQ(h[3], 0xff);
    ASSERT_EQ(frame::write_server_header(h, 0x1, 65536), 10u);
    EXPECT_EQ(h[1], 127);
    for (int i = 2; i < 7; ++i) {
        EXPECT_EQ(h[i], 0) << i;
    }
    EXPECT_EQ(h[7], 1);
    EXPECT_EQ(h[8], 0);
    EXPECT_EQ(h[9], 0);
    // What our own parser reads back.
    frame::frame_header fh;
    ASSERT_TRUE(frame::parse_header(std::span<const uint8_t>(h, 10), fh));
    EXPECT_EQ(fh.len, 65536u);
    EXPECT_TRUE(fh.fin);
    EXPECT_FALSE(fh.masked);
}

}  // namespace
}  // namespace wsgate::protocol
