// Tests for protocol/ws_conn: client frames fed whole, byte by byte and in seeded
// random slices; asserts the exact messages delivered and the exact bytes queued
// (pongs, close replies, failure closes) and the frame-context pool accounting.
#include "protocol/ws_conn.h"

#include <gtest/gtest.h>

#include "tests/unit/ws_test_frames.h"

namespace wsgate::protocol::test {
namespace {

constexpr uint8_t op_cont = 0x0;
constexpr uint8_t op_text = 0x1;
constexpr uint8_t op_binary = 0x2;
constexpr uint8_t op_close = 0x8;
constexpr uint8_t op_ping = 0x9;
constexpr uint8_t op_pong = 0xA;

bytes pattern(size_t n, bool text) {
    bytes p(n);
    for (size_t i = 0; i < n; ++i) {
        p[i] = text ? static_cast<uint8_t>('a' + i % 26) : static_cast<uint8_t>(i * 131 + 7);
    }
    return p;
}

// Feed `stream` in every split mode; expect these messages, these output bytes and
// this final state, and no context still borrowed.
void expect_outcome(const bytes& stream, const std::vector<message>& msgs, const bytes& out,
                    ws_state state, ws_config cfg = {}) {
    for (const auto& m : all_modes()) {
        SCOPED_TRACE(m.name());
        harness h;
        h.cfg = cfg;
        h.feed(stream, m);
        ASSERT_EQ(h.rec.messages.size(), msgs.size());
        for (size_t i = 0; i < msgs.size(); ++i) {
            ASSERT_EQ(h.rec.messages[i], msgs[i]) << "message " << i;
        }
        ASSERT_EQ(h.out_bytes(), out);
        EXPECT_EQ(h.conn.state(), state);
        EXPECT_EQ(h.pool.contexts_in_use(), 0u);
    }
}

void expect_failure(const bytes& stream, uint16_t code, const std::vector<message>& before = {},
                    ws_config cfg = {}) {
    expect_outcome(stream, before, fail_close(code), ws_state::closed, cfg);
    harness h;
    h.cfg = cfg;
    h.feed(stream);
    EXPECT_EQ(h.conn.sent_close_code(), code);
    EXPECT_TRUE(h.conn.should_close_socket());
}

TEST(ws_conn, text_and_binary_sizes) {
    for (size_t n : {0, 1, 125, 126, 127, 65535, 65536, 200000}) {
        for (bool text : {true, false}) {
            SCOPED_TRACE(std::to_string(n) + (text ? " text" : " binary"));
            bytes p = pattern(n, text);
            bytes f = client_frame(text ? op_text : op_binary, std::span<const uint8_t>(p));
            expect_outcome(f, {{text ? ws_opcode::text : ws_opcode::binary, p}}, {},
                           ws_state::open);
        }
    }
}

TEST(ws_conn, many_messages_in_one_stream) {
    bytes stream;
    std::vector<message> want;
    for (size_t n : {0, 5, 125, 126, 3000, 4090, 4096, 5000, 70000, 1, 0}) {
        bytes p = pattern(n, n % 2 == 0);
        uint8_t op = n % 2 == 0 ? op_text : op_binary;
        stream = concat({stream, client_frame(op, std::span<const uint8_t>(p))});
        want.push_back({n % 2 == 0 ? ws_opcode::text : ws_opcode::binary, p});
    }
    expect_outcome(stream, want, {}, ws_state::open);
}

TEST(ws_conn, multibyte_text_and_length_encodings) {
    bytes p = to_bytes("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5 \xF0\x9F\x98\x80");
    expect_outcome(client_frame(op_text, std::span<const uint8_t>(p)), {{ws_opcode::text, p}},
                   {}, ws_state::open);
    // Different masks give the same message.
    frame_opts o;
    o.mask = 0;
    expect_outcome(client_frame(op_text, std::span<const uint8_t>(p), o), {{ws_opcode::text, p}},
                   {}, ws_state::open);
}

TEST(ws_conn, fragmented_with_interleaved_ping) {
    for (size_t n_frags = 1; n_frags <= 6; ++n_frags) {
        for (bool text : {true, false}) {
            SCOPED_TRACE(std::to_string(n_frags) + (text ? " text" : " binary"));
            // Text with multi-byte code points cut across fragment boundaries.
            bytes whole = text ? to_bytes("h\xC3\xA9llo w\xE2\x82\xACrld \xF0\x9F\x98\x80 done")
                               : pattern(5000, false);
            bytes stream;
            bytes out;
            size_t pos = 0;
            for (size_t i = 0; i < n_frags; ++i) {
                size_t end = i + 1 == n_frags ? whole.size() : (whole.size() * (i + 1)) / (n_frags + 1);
                if (i == 1 && n_frags > 2) {
                    end = pos;  // one empty fragment
                }
                bytes part(whole.begin() + pos, whole.begin() + end);
                frame_opts o;
                o.fin = i + 1 == n_frags;
                uint8_t op = i == 0 ? (text ? op_text : op_binary) : op_cont;
                stream = concat({stream, client_frame(op, std::span<const uint8_t>(part), o)});
                if (i + 1 < n_frags) {
                    std::string ping = "ping " + std::to_string(i);
                    stream = concat({stream, client_frame(op_ping, ping)});
                    out = concat({out, server_frame(op_pong, ping)});
                    // An unsolicited pong is ignored.
                    stream = concat({stream, client_frame(op_pong, "late")});
                }
                pos = end;
            }
            expect_outcome(stream, {{text ? ws_opcode::text : ws_opcode::binary, whole}}, out,
                           ws_state::open);
        }
    }
}

TEST(ws_conn, empty_fragments_and_messages) {
    frame_opts nf;
    nf.fin = false;
    bytes stream = concat({client_frame(op_text, "", nf), client_frame(op_cont, "", nf),
                           client_frame(op_cont, ""), client_frame(op_binary, ""),
                           client_frame(op_text, "")});
    expect_outcome(stream, {{ws_opcode::text, {}}, {ws_opcode::binary, {}}, {ws_opcode::text, {}}},
                   {}, ws_state::open);
}

TEST(ws_conn, control_inside_fragmented_message_acts_at_once) {
    frame_opts nf;
    nf.fin = false;
    harness h;
    h.feed(concat({client_frame(op_text, "first ", nf), client_frame(op_ping, "now")}));
    EXPECT_TRUE(h.rec.messages.empty());
    EXPECT_EQ(h.out_bytes(), server_frame(op_pong, "now"));
    h.feed(client_frame(op_cont, "second"));
    ASSERT_EQ(h.rec.messages.size(), 1u);
    EXPECT_EQ(h.rec.messages[0], (message{ws_opcode::text, to_bytes("first second")}));

    // A close in the middle of a fragmented message ends it: the message is dropped.
    bytes stream = concat({client_frame(op_binary, "part", nf),
                           client_frame(op_close, std::span<const uint8_t>(close_payload(1000))),
                           client_frame(op_cont, "rest")});
    expect_outcome(stream, {}, server_close(1000, ""), ws_state::closed);
}

TEST(ws_conn, ping_pong) {
    bytes p125 = pattern(125, false);
    bytes stream = concat({client_frame(op_ping, ""), client_frame(op_ping, std::span<const uint8_t>(p125)),
                           client_frame(op_pong, "unsolicited"), client_frame(op_text, "x")});
    bytes out = concat({server_frame(op_pong, ""), server_frame(op_pong, std::span<const uint8_t>(p125))});
    expect_outcome(stream, {{ws_opcode::text, to_bytes("x")}}, out, ws_state::open);
}

TEST(ws_conn, protocol_errors_1002) {
    frame_opts nf;
    nf.fin = false;
    for (uint8_t rsv : {1, 2, 4, 7}) {
        frame_opts o;
        o.rsv = rsv;
        SCOPED_TRACE("rsv " + std::to_string(rsv));
        expect_failure(client_frame(op_text, "hi", o), close_code::protocol_error);
        expect_failure(client_frame(op_ping, "", o), close_code::protocol_error);
        expect_failure(concat({client_frame(op_binary, "a", nf), client_frame(op_cont, "b", o)}),
                       close_code::protocol_error);
    }
    for (uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
        SCOPED_TRACE("opcode " + std::to_string(op));
        expect_failure(client_frame(op, "x"), close_code::protocol_error);
        expect_failure(client_frame(op, ""), close_code::protocol_error);
    }
    frame_opts unmasked;
    unmasked.masked = false;
    expect_failure(client_frame(op_text, "hi", unmasked), close_code::protocol_error);
    expect_failure(client_frame(op_ping, "", unmasked), close_code::protocol_error);

    // Control frames: > 125 bytes, or fragmented.
    bytes p126 = pattern(126, false);
    expect_failure(client_frame(op_ping, std::span<const uint8_t>(p126)), close_code::protocol_error);
    expect_failure(client_frame(op_close, std::span<const uint8_t>(p126)), close_code::protocol_error);
    expect_failure(client_frame(op_ping, "x", nf), close_code::protocol_error);
    expect_failure(client_frame(op_close, "", nf), close_code::protocol_error);
    expect_failure(client_frame(op_pong, "", nf), close_code::protocol_error);

    // Continuation with nothing open; a new message inside a fragmented one.
    expect_failure(client_frame(op_cont, "x"), close_code::protocol_error);
    expect_failure(concat({client_frame(op_text, "a"), client_frame(op_cont, "b")}),
                   close_code::protocol_error, {{ws_opcode::text, to_bytes("a")}});
    expect_failure(concat({client_frame(op_text, "a", nf), client_frame(op_text, "b")}),
                   close_code::protocol_error);
    expect_failure(concat({client_frame(op_text, "a", nf), client_frame(op_binary, "b", nf)}),
                   close_code::protocol_error);

    // Non-minimal and out-of-range length encodings.
    frame_opts l16;
    l16.len_bytes = 2;
    expect_failure(client_frame(op_text, "short", l16), close_code::protocol_error);
    frame_opts l64;
    l64.len_bytes = 8;
    bytes p200 = pattern(200, true);
    expect_failure(client_frame(op_text, std::span<const uint8_t>(p200), l64), close_code::protocol_error);
    frame_opts huge;
    huge.declared_len = 1ull << 63;
    expect_failure(client_frame(op_binary, "", huge), close_code::protocol_error);

    // Close frame with a 1-byte body.
    expect_failure(client_frame(op_close, "\x03"), close_code::protocol_error);
}

TEST(ws_conn, invalid_close_codes_1002) {
    for (uint16_t code : {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
        SCOPED_TRACE(code);
        EXPECT_FALSE(is_valid_close_code(code));
        expect_failure(client_frame(op_close, std::span<const uint8_t>(close_payload(code))),
                       close_code::protocol_error);
    }
}

TEST(ws_conn, invalid_utf8_1007) {
    frame_opts nf;
    nf.fin = false;
    for (std::string_view bad : {"\xF5", "ab\xC0\x80", "\xED\xA0\x80", "x\xF4\x90\x80\x80", "\xFF"}) {
        expect_failure(client_frame(op_text, bad), close_code::invalid_payload);
    }
    // Message ends inside a code point.
    expect_failure(client_frame(op_text, "abc\xE2\x82"), close_code::invalid_payload);
    expect_failure(concat({client_frame(op_text, "abc", nf), client_frame(op_cont, "\xE2", nf),
                           client_frame(op_cont, "\x82")}),
                   close_code::invalid_payload);
    // Invalid across a fragment boundary: ED | A0 80.
    expect_failure(concat({client_frame(op_text, "abc\xED", nf), client_frame(op_cont, "\xA0\x80")}),
                   close_code::invalid_payload);
    // Valid text inside binary messages is not checked; invalid close reason is.
    expect_outcome(client_frame(op_binary, "\xFF\xFE"), {{ws_opcode::binary, to_bytes("\xFF\xFE")}},
                   {}, ws_state::open);
    expect_failure(client_frame(op_close, std::span<const uint8_t>(close_payload(1000, "ok\xC0\xAF"))),
                   close_code::invalid_payload);
}

TEST(ws_conn, invalid_utf8_detected_at_earliest_fragment) {
    frame_opts nf;
    nf.fin = false;
    {
        harness h;
        h.feed(client_frame(op_text, "hello \xF5 there", nf));  // no FIN, nothing more sent
        EXPECT_EQ(h.out_bytes(), fail_close(close_code::invalid_payload));
        EXPECT_EQ(h.conn.state(), ws_state::closed);
    }
    {
        harness h;
        h.feed(client_frame(op_text, "abc\xED", nf));
        EXPECT_TRUE(h.out_bytes().empty());  // ED may still become valid
        h.feed(client_frame(op_cont, "\xA0\x80 more", nf));
        EXPECT_EQ(h.out_bytes(), fail_close(close_code::invalid_payload));
    }
    {
        // Inside one large frame: fails as soon as the bad byte arrives.
        bytes p = pattern(100000, true);
        p[10] = 0xC0;
        bytes f = client_frame(op_text, std::span<const uint8_t>(p));
        harness h;
        h.feed(std::span<const uint8_t>(f.data(), 100));
        EXPECT_EQ(h.out_bytes(), fail_close(close_code::invalid_payload));
        EXPECT_EQ(h.pool.contexts_in_use(), 0u);
    }
}

TEST(ws_conn, message_too_big_1009) {
    ws_config cfg;
    cfg.max_message = 1000;
    frame_opts nf;
    nf.fin = false;
    bytes p1000 = pattern(1000, false);
    expect_outcome(client_frame(op_binary, std::span<const uint8_t>(p1000)),
                   {{ws_opcode::binary, p1000}}, {}, ws_state::open, cfg);
    bytes p1001 = pattern(1001, false);
    expect_failure(client_frame(op_binary, std::span<const uint8_t>(p1001)),
                   close_code::message_too_big, {}, cfg);
    {
        // Rejected from the header, before the payload arrives.
        frame_opts big;
        big.declared_len = 1ull << 40;
        bytes f = client_frame(op_text, "x", big);
        harness h;
        h.cfg = cfg;
        h.feed(bytes(f.begin(), f.end() - 1));  // header + mask key only
        EXPECT_TRUE(h.out_bytes().empty());
        EXPECT_EQ(h.pool.contexts_in_use(), 1u);
        h.feed(bytes(f.end() - 1, f.end()));    // first payload byte surfaces the header
        EXPECT_EQ(h.out_bytes(), fail_close(close_code::message_too_big));
        EXPECT_EQ(h.conn.sent_close_code(), close_code::message_too_big);
        EXPECT_EQ(h.pool.contexts_in_use(), 0u);
        h.feed(pattern(5000, true));  // the rest is ignored
        EXPECT_EQ(h.out_bytes(), fail_close(close_code::message_too_big));
        EXPECT_TRUE(h.rec.messages.empty());
    }
    // Fragmented: 600 + 400 fits, 600 + 401 does not.
    bytes a = pattern(600, true);
    bytes b = pattern(400, true);
    bytes c = pattern(401, true);
    expect_outcome(concat({client_frame(op_text, std::span<const uint8_t>(a), nf),
                           client_frame(op_cont, std::span<const uint8_t>(b))}),
                   {{ws_opcode::text, concat({a, b})}}, {}, ws_state::open, cfg);
    expect_outcome(concat({client_frame(op_text, std::span<const uint8_t>(a), nf),
                           client_frame(op_ping, "p"),
                           client_frame(op_cont, std::span<const uint8_t>(c))}),
                   {}, concat({server_frame(op_pong, "p"), fail_close(close_code::message_too_big)}),
                   ws_state::closed, cfg);
}

TEST(ws_conn, close_handshake_from_peer) {
    {
        harness h;
        h.feed(client_frame(op_close, ""));
        EXPECT_EQ(h.out_bytes(), server_frame(op_close, ""));
        EXPECT_EQ(h.conn.state(), ws_state::closed);
        EXPECT_EQ(h.conn.received_close_code(), close_code::no_status);
    }
    for (uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                          3000, 3999, 4000, 4999}) {
        SCOPED_TRACE(code);
        EXPECT_TRUE(is_valid_close_code(code));
        for (std::string_view reason : {"", "bye", "d\xC3\xA9j\xC3\xA0 vu"}) {
            bytes f = client_frame(op_close, std::span<const uint8_t>(close_payload(code, reason)));
            expect_outcome(f, {}, server_close(code, ""), ws_state::closed);
            harness h;
            h.feed(f);
            EXPECT_EQ(h.conn.received_close_code(), code);
            EXPECT_EQ(h.conn.sent_close_code(), code);
        }
    }
}

TEST(ws_conn, input_after_close_is_ignored) {
    bytes stream = concat({client_frame(op_text, "before"), client_frame(op_close, std::span<const uint8_t>(close_payload(1000))),
                           client_frame(op_text, "after"), client_frame(op_ping, "p")});
    expect_outcome(stream, {{ws_opcode::text, to_bytes("before")}}, server_close(1000, ""),
                   ws_state::closed);
    harness h;
    h.feed(stream);
    h.feed(client_frame(op_text, "later"));
    h.feed(client_frame(op_binary, "\x01\x02", frame_opts{.masked = false}));
    EXPECT_EQ(h.rec.messages.size(), 1u);
    EXPECT_EQ(h.out_bytes(), server_close(1000, ""));
    // After a failure too.
    harness g;
    g.feed(concat({client_frame(0x3, ""), client_frame(op_text, "x")}));
    g.feed(client_frame(op_text, "y"));
    EXPECT_TRUE(g.rec.messages.empty());
    EXPECT_EQ(g.out_bytes(), fail_close(close_code::protocol_error));
}

TEST(ws_conn, close_from_our_side) {
    harness h;
    h.conn.close(h.pool, h.out, close_code::going_away, "shutting down");
    EXPECT_EQ(h.out_bytes(), server_close(1001, "shutting down"));
    EXPECT_EQ(h.conn.state(), ws_state::close_sent);
    EXPECT_FALSE(h.conn.should_close_socket());
    EXPECT_EQ(h.conn.sent_close_code(), 1001);
    h.conn.close(h.pool, h.out, 1000);  // no-op
    EXPECT_EQ(h.out_bytes(), server_close(1001, "shutting down"));
    // Messages still in flight are delivered; pings are no longer answered.
    h.feed(concat({client_frame(op_text, "in flight"), client_frame(op_ping, "p")}));
    EXPECT_EQ(h.rec.messages.size(), 1u);
    EXPECT_EQ(h.out_bytes(), server_close(1001, "shutting down"));
    // The peer's close completes the handshake without another close from us.
    h.feed(client_frame(op_close, std::span<const uint8_t>(close_payload(1001))));
    EXPECT_EQ(h.conn.state(), ws_state::closed);
    EXPECT_TRUE(h.conn.should_close_socket());
    EXPECT_EQ(h.conn.received_close_code(), 1001);
    EXPECT_EQ(h.out_bytes(), server_close(1001, "shutting down"));

    // A protocol error after our close: closed, nothing more sent.
    harness g;
    g.conn.close(g.pool, g.out, 1001);
    g.feed(client_frame(op_cont, "x"));
    EXPECT_EQ(g.conn.state(), ws_state::closed);
    EXPECT_EQ(g.out_bytes(), server_close(1001, ""));
    EXPECT_EQ(g.conn.sent_close_code(), 1001);
}

TEST(ws_conn, close_reason_truncated_on_code_point_boundary) {
    std::string reason(121, 'r');
    reason += "\xE2\x82\xAC\xE2\x82\xAC";  // 121 + 6 bytes: the cut at 123 falls inside a €
    harness h;
    h.conn.close(h.pool, h.out, 1000, reason);
    EXPECT_EQ(h.out_bytes(), server_close(1000, std::string(121, 'r')));
}

TEST(ws_conn, write_frame_layout) {
    for (size_t n : {0, 1, 125, 126, 65535, 65536, 100000}) {
        bytes p = pattern(n, false);
        byte_buffer out;
        ws_frame_pool pool;
        ws_conn::write_frame(pool, out, ws_opcode::binary, std::span<const uint8_t>(p));
        EXPECT_EQ(bytes(out.data(), out.data() + out.size()),
                  server_frame(op_binary, std::span<const uint8_t>(p)));
    }
    byte_buffer out;
    ws_frame_pool pool;
    out.append(std::string_view("queued"));
    ws_conn::write_frame(pool, out, ws_opcode::text, to_bytes("hi"));
    ws_conn::write_frame(pool, out, ws_opcode::ping, {});
    EXPECT_EQ(bytes(out.data(), out.data() + out.size()),
              concat({to_bytes("queued"), server_frame(op_text, "hi"), server_frame(op_ping, "")}));
}

TEST(ws_conn, pool_accounting) {
    harness h;
    bytes f = client_frame(op_binary, std::span<const uint8_t>(pattern(300, false)));
    h.feed(f);
    EXPECT_EQ(h.pool.contexts_in_use(), 0u);
    EXPECT_EQ(h.pool.contexts_pooled(), 0u);  // a frame that arrives whole never borrows one
    // Every cut inside a frame keeps one context borrowed; the frame's end returns it.
    for (size_t cut = 1; cut < f.size(); ++cut) {
        h.feed(std::span<const uint8_t>(f.data(), cut));
        ASSERT_EQ(h.pool.contexts_in_use(), 1u) << cut;
        h.feed(std::span<const uint8_t>(f.data() + cut, f.size() - cut));
        ASSERT_EQ(h.pool.contexts_in_use(), 0u) << cut;
    }
    EXPECT_EQ(h.rec.messages.size(), f.size());
    EXPECT_EQ(h.pool.contexts_pooled(), 1u);

    // Between fragments no context is held.
    frame_opts nf;
    nf.fin = false;
    h.feed(client_frame(op_text, "frag", nf));
    EXPECT_EQ(h.pool.contexts_in_use(), 0u);

    // Several connections mid-frame at once; a failure, reset() and the destructor
    // all give the context back.
    {
        ws_conn a;
        ws_conn b;
        ws_conn c;
        a.feed(std::span<const uint8_t>(f.data(), 3), h.pool, h.cfg, h.rec, h.out);
        b.feed(std::span<const uint8_t>(f.data(), 10), h.pool, h.cfg, h.rec, h.out);
        c.feed(std::span<const uint8_t>(f.data(), 1), h.pool, h.cfg, h.rec, h.out);
        EXPECT_EQ(h.pool.contexts_in_use(), 3u);
        bytes unmasked = {0x05, 'a', 'b', 'c', 'd', 'e'};  // c's header goes on unmasked
        c.feed(std::span<const uint8_t>(unmasked), h.pool, h.cfg, h.rec, h.out);
        EXPECT_EQ(c.state(), ws_state::closed);
        EXPECT_EQ(h.pool.contexts_in_use(), 2u);
        a.reset(h.pool);
        EXPECT_EQ(a.state(), ws_state::open);  // fresh again: the slot can serve a new connection
        EXPECT_EQ(h.pool.contexts_in_use(), 1u);
    }
    EXPECT_EQ(h.pool.contexts_in_use(), 0u);

    // A clean reset keeps the connection usable.
    ws_conn d;
    d.feed(std::span<const uint8_t>(client_frame(op_text, "part", nf)), h.pool, h.cfg, h.rec, h.out);
    d.reset(h.pool);
    EXPECT_EQ(d.state(), ws_state::open);
    EXPECT_EQ(h.pool.contexts_in_use(), 0u);
}

TEST(ws_conn, handler_may_close_and_write_during_delivery) {
    struct closer : ws_handler {
        ws_conn* conn = nullptr;
        ws_frame_pool* pool = nullptr;
        byte_buffer* out = nullptr;
        int seen = 0;
        void on_message(ws_opcode op, std::span<const uint8_t> payload) override {
            ++seen;
            ws_conn::write_frame(*pool, *out, op, payload);  // echo
            conn->close(*pool, *out, close_code::policy_violation, "rate");
        }
    };
    ws_frame_pool pool;
    byte_buffer out;
    ws_conn conn;
    closer h;
    h.conn = &conn;
    h.pool = &pool;
    h.out = &out;
    bytes in = concat({client_frame(op_text, "one"), client_frame(op_text, "two"),
                       client_frame(op_close, std::span<const uint8_t>(close_payload(1000)))});
    conn.feed(std::span<const uint8_t>(in), pool, ws_config{}, h, out);
    EXPECT_EQ(h.seen, 2);
    EXPECT_EQ(bytes(out.data(), out.data() + out.size()),
              concat({server_frame(op_text, "one"), server_close(1008, "rate"),
                      server_frame(op_text, "two")}));
    EXPECT_EQ(conn.state(), ws_state::closed);
    EXPECT_EQ(conn.received_close_code(), 1000);
    EXPECT_EQ(pool.contexts_in_use(), 0u);
}

TEST(ws_conn, object_is_small) {
    EXPECT_LE(sizeof(ws_conn), 48u);
}

// The core reuses connection slots: after reset() a connection that ended with
// a close handshake or a failure must behave exactly like a new one.
TEST(ws_conn, reset_after_close_serves_a_new_connection) {
    harness h;
    h.feed(client_frame(op_close, std::span<const uint8_t>(bytes{0x03, 0xe8})));
    ASSERT_EQ(h.conn.state(), ws_state::closed);
    h.conn.reset(h.pool);
    EXPECT_EQ(h.conn.state(), ws_state::open);
    EXPECT_EQ(h.conn.sent_close_code(), 0);
    EXPECT_EQ(h.conn.received_close_code(), 0);
    h.rec.messages.clear();
    h.feed(client_frame(op_text, "again"));
    ASSERT_EQ(h.rec.messages.size(), 1u);
}

// A header announcing 2^63-1 bytes fails with 1009 and no arithmetic overflow (UBSan).
TEST(ws_conn, huge_64bit_length_is_1009) {
    harness h;
    bytes f = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 0x55};
    h.feed(f);
    EXPECT_EQ(h.conn.state(), ws_state::closed);
    EXPECT_EQ(h.conn.sent_close_code(), 1009);
}

}  // namespace
}  // namespace wsgate::protocol::test
