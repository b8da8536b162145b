// permessage-deflate (RFC 7692): negotiation of every parameter, and the
// inflate/deflate directions (protocol/deflate.h).
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "protocol/deflate.h"
#include "protocol/ws_conn.h"
#include "tests/unit/ws_test_frames.h"

using namespace wsgate::protocol;

namespace {

constexpr uint8_t op_text_c = 0x1;
constexpr uint8_t op_binary_c = 0x2;

std::string negotiate(std::vector<std::string_view> headers, const deflate_config& cfg, deflate_params& p) {
    return negotiate_permessage_deflate(headers, cfg, p);
}

deflate_config enabled(bool takeover = false, uint8_t client_bits = 15) {
    deflate_config c;
    c.enabled = true;
    c.client_context_takeover = takeover;
    c.client_window_bits = client_bits;
    return c;
}

// A client-side compressor as browsers run it: one raw deflate stream, each
// message sync-flushed and its 00 00 ff ff removed; `takeover` keeps the window.
class client_deflater {
public:
    explicit client_deflater(int bits = 15, bool takeover = true) : _takeover(takeover) {
        deflateInit2(&_z, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY);
    }
    ~client_deflater() { deflateEnd(&_z); }
    std::vector<uint8_t> message(std::string_view s, int flush = Z_SYNC_FLUSH) {
        if (!_takeover) {
            deflateReset(&_z);
        }
        std::vector<uint8_t> out(deflateBound(&_z, s.size()) + 64);
        _z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
        _z.avail_in = static_cast<uInt>(s.size());
        _z.next_out = out.data();
        _z.avail_out = static_cast<uInt>(out.size());
        deflate(&_z, flush);
        out.resize(out.size() - _z.avail_out);
        if (out.size() >= 4 && std::memcmp(out.data() + out.size() - 4, "\x00\x00\xff\xff", 4) == 0) {
            out.resize(out.size() - 4);
        }
        if (flush == Z_FINISH) {
            deflateReset(&_z);
        }
        return out;
    }

private:
    z_stream _z{};
    bool _takeover;
};

std::string text(const byte_buffer& b) { return std::string(b.view()); }

std::string compressible(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    static const char* words[] = {"room", "lobby", "user", "message", "hello", "{\"type\":", "data", "42,"};
    std::string s;
    while (s.size() < n) {
        s += words[rng() % 8];
        s += ' ';
    }
    s.resize(n);
    return s;
}

}  // namespace

// --- negotiation -----------------------------------------------------------

TEST(DeflateNegotiation, DisabledDeclinesEverything) {
    deflate_params p;
    EXPECT_EQ(negotiate({"permessage-deflate"}, deflate_config{}, p), "");
    EXPECT_FALSE(p.on);
}

TEST(DeflateNegotiation, PlainOfferGetsBothNoContextTakeovers) {
    deflate_params p;
    EXPECT_EQ(negotiate({"permessage-deflate"}, enabled(), p),
              "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    EXPECT_TRUE(p.on);
    EXPECT_TRUE(p.compress_out);
    EXPECT_FALSE(p.client_takeover);
}

TEST(DeflateNegotiation, BrowserOfferWithValuelessClientMaxWindowBits) {
    deflate_params p;
    // What Chrome, Firefox, python3-websockets and Node ws send by default.
    EXPECT_EQ(negotiate({"permessage-deflate; client_max_window_bits"}, enabled(), p),
              "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    EXPECT_FALSE(p.client_takeover);
}

TEST(DeflateNegotiation, ClientContextTakeoverWhenAllowed) {
    deflate_params p;
    // Allowed and asked for, with client_max_window_bits offered: we cap the client's window.
    EXPECT_EQ(negotiate({"permessage-deflate; client_max_window_bits"}, enabled(true, 10), p),
              "permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
    EXPECT_TRUE(p.client_takeover);
    EXPECT_EQ(p.client_window_bits, 10);
    // The client's own cap wins when smaller; quoted values are accepted.
    EXPECT_EQ(negotiate({"permessage-deflate; client_max_window_bits=\"9\""}, enabled(true, 12), p),
              "permessage-deflate; server_no_context_takeover; client_max_window_bits=9");
    EXPECT_EQ(p.client_window_bits, 9);
    // Not offered: never answered (RFC 7692 7.1.2.2), the window stays 15.
    EXPECT_EQ(negotiate({"permessage-deflate"}, enabled(true, 10), p),
              "permessage-deflate; server_no_context_takeover");
    EXPECT_TRUE(p.client_takeover);
    EXPECT_EQ(p.client_window_bits, 15);
    // The client gives its context up itself: echoed, no per-connection inflater.
    EXPECT_EQ(negotiate({"permessage-deflate; client_no_context_takeover; client_max_window_bits"}, enabled(true),
                        p),
              "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    EXPECT_FALSE(p.client_takeover);
}

TEST(DeflateNegotiation, ServerMaxWindowBitsIsAnsweredAndLimitsOutboundCompression) {
    deflate_params p;
    EXPECT_EQ(negotiate({"permessage-deflate; server_max_window_bits=15"}, enabled(), p),
              "permessage-deflate; server_no_context_takeover; server_max_window_bits=15; client_no_context_takeover");
    EXPECT_TRUE(p.compress_out);
    EXPECT_EQ(negotiate({"permessage-deflate; server_max_window_bits=10; server_no_context_takeover"}, enabled(), p),
              "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover");
    EXPECT_TRUE(p.on);
    EXPECT_FALSE(p.compress_out) << "shared frames use a 15-bit window: this client gets them uncompressed";
    // 8 bits (which zlib cannot produce) is fine too: we never compress for that client.
    EXPECT_NE(negotiate({"permessage-deflate; server_max_window_bits=8"}, enabled(), p).find(
                  "; server_max_window_bits=8;"),
              std::string::npos);
    EXPECT_FALSE(p.compress_out);
}

TEST(DeflateNegotiation, InvalidOffersAreDeclinedAndTheNextOneTried) {
    deflate_params p;
    const char* bad[] = {
        "permessage-deflate; server_max_window_bits",          // value required
        "permessage-deflate; server_max_window_bits=16",       // out of range
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=08",       // leading zero
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",    // takes no value
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",  // repeated
        "permessage-deflate; mystery",                        // unknown parameter
    };
    for (const char* b : bad) {
        EXPECT_EQ(negotiate({b}, enabled(), p), "") << b;
        EXPECT_FALSE(p.on) << b;
        std::string two = std::string(b) + ", permessage-deflate; client_max_window_bits";
        EXPECT_EQ(negotiate({two}, enabled(), p),
                  "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            << two;
    }
}

TEST(DeflateNegotiation, SeveralHeadersOtherExtensionsAndCase) {
    deflate_params p;
    EXPECT_EQ(negotiate({"x-webkit-deflate-frame", "foo; bar=1, PerMessage-Deflate ; Client_Max_Window_Bits"},
                        enabled(), p),
              "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    EXPECT_TRUE(p.on);
    EXPECT_EQ(negotiate({"x-webkit-deflate-frame", "foo"}, enabled(), p), "");
    EXPECT_EQ(negotiate({}, enabled(), p), "");
    // A comma inside a quoted value does not split the offer.
    EXPECT_EQ(negotiate({"foo; a=\"x,y\", permessage-deflate"}, enabled(), p).substr(0, 18), "permessage-deflate");
}

// --- inflate / deflate -------------------------------------------------------

TEST(Deflate, RoundTripAtManySizes) {
    deflater d(6, 15);
    inflater in;
    for (size_t n : {1u, 2u, 100u, 255u, 256u, 1000u, 4096u, 65535u, 65536u, 300000u}) {
        std::string s = compressible(n, static_cast<uint32_t>(n));
        byte_buffer z, out;
        bool compressed = d.message({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, z);
        if (n >= 100) {
            ASSERT_TRUE(compressed) << n;
            EXPECT_LT(z.size(), n);
        }
        if (compressed) {
            ASSERT_EQ(in.message(z.span(), 1 << 20, out), inflate_result::ok) << n;
            EXPECT_EQ(text(out), s) << n;
        }
    }
}

TEST(Deflate, IncompressibleIsLeftAlone) {
    deflater d(6, 15);
    std::mt19937 rng(7);
    std::string s(64, '\0');
    for (char& ch : s) {
        ch = static_cast<char>(rng());
    }
    byte_buffer z;
    EXPECT_FALSE(d.message({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, z));
}

TEST(Deflate, BrowserMessagesInflate) {
    client_deflater c(15, false);
    inflater in;
    for (int i = 0; i < 5; ++i) {
        std::string s = compressible(500 + i * 100, i);
        auto z = c.message(s);
        byte_buffer out;
        ASSERT_EQ(in.message(z, 1 << 20, out), inflate_result::ok);
        EXPECT_EQ(text(out), s);
    }
}

TEST(Deflate, BombIsStoppedAtTheLimit) {
    client_deflater c(15, false);
    std::string zeros(10 << 20, '\0');  // 10 MiB of zeros: about 10 KiB compressed
    auto z = c.message(zeros);
    EXPECT_LT(z.size(), 20000u);
    inflater in;
    byte_buffer out;
    EXPECT_EQ(in.message(z, 1 << 20, out), inflate_result::too_big);
    EXPECT_LE(out.size(), (1u << 20) + 1) << "never more than limit + 1 bytes produced";
    EXPECT_LE(out.capacity(), 2u << 20) << "memory bounded by the limit, not by the bomb";
    // The same inflater is fine for the next message.
    auto ok = c.message("hello");
    ASSERT_EQ(in.message(ok, 1 << 20, out), inflate_result::ok);
    EXPECT_EQ(text(out), "hello");
}

TEST(Deflate, LimitIsExact) {
    client_deflater c(15, false);
    std::string s(1000, 'a');
    auto z = c.message(s);
    inflater in;
    byte_buffer out;
    EXPECT_EQ(in.message(z, 1000, out), inflate_result::ok);
    EXPECT_EQ(out.size(), 1000u);
    EXPECT_EQ(in.message(z, 999, out), inflate_result::too_big);
}

TEST(Deflate, CorruptInputIsReported) {
    inflater in;
    byte_buffer out;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    EXPECT_EQ(in.message(junk, 1 << 20, out), inflate_result::corrupt);
    client_deflater c(15, false);
    auto ok = c.message("still works");
    ASSERT_EQ(in.message(ok, 1 << 20, out), inflate_result::ok);
    EXPECT_EQ(text(out), "still works");
}

TEST(Deflate, FinalBlockMessagesInflate) {
    // RFC 7692 7.2.3.4: a sender may end messages with BFINAL blocks.
    client_deflater c(15, false);
    inflater in;
    for (int i = 0; i < 3; ++i) {
        std::string s = compressible(800, 100 + i);
        auto z = c.message(s, Z_FINISH);
        byte_buffer out;
        ASSERT_EQ(in.message(z, 1 << 20, out), inflate_result::ok);
        EXPECT_EQ(text(out), s);
    }
}

TEST(Deflate, ContextTakeoverNeedsItsOwnInflater) {
    client_deflater c(10, true);  // the window carries over between messages
    std::string first = compressible(2000, 1);
    std::string second = first.substr(0, 900) + "!";  // refers back into the first message
    auto z1 = c.message(first);
    auto z2 = c.message(second);
    inflater own(10, true);
    byte_buffer out;
    ASSERT_EQ(own.message(z1, 1 << 20, out), inflate_result::ok);
    EXPECT_EQ(text(out), first);
    ASSERT_EQ(own.message(z2, 1 << 20, out), inflate_result::ok);
    EXPECT_EQ(text(out), second);
    // A shared one-shot inflater cannot decode the second message alone.
    inflater shared;
    byte_buffer out2;
    inflate_result r = shared.message(z2, 1 << 20, out2);
    EXPECT_TRUE(r == inflate_result::corrupt || text(out2) != second);
}

// --- compressed messages through ws_conn -------------------------------------

namespace wsgate::protocol::test {
namespace {

bytes compress_client(std::string_view s) {
    client_deflater c(15, false);
    return c.message(s);
}

// Feed in every split mode with the extension on; expect these messages and output.
void expect_compressed(const bytes& stream, const std::vector<message>& msgs, uint16_t fail_code = 0,
                       size_t max_message = 1 << 20) {
    for (const auto& m : all_modes()) {
        SCOPED_TRACE(m.name());
        harness h;
        h.cfg.max_message = max_message;
        inflater inf;
        h.inflate = &inf;
        h.conn.enable_deflate();
        h.feed(stream, m);
        ASSERT_EQ(h.rec.messages.size(), msgs.size());
        for (size_t i = 0; i < msgs.size(); ++i) {
            ASSERT_EQ(h.rec.messages[i], msgs[i]) << "message " << i;
        }
        EXPECT_EQ(h.conn.sent_close_code(), fail_code);
        if (fail_code) {
            EXPECT_EQ(h.out_bytes(), fail_close(fail_code));
        }
        EXPECT_EQ(h.pool.contexts_in_use(), 0u);
    }
}

TEST(DeflateWs, CompressedTextAndBinaryAtManySizes) {
    for (size_t n : {1u, 125u, 126u, 1000u, 65536u, 200000u}) {
        std::string s = compressible(n, static_cast<uint32_t>(n) + 3);
        bytes z = compress_client(s);
        frame_opts rsv1;
        rsv1.rsv = 4;
        bytes stream = concat({client_frame(op_text_c, z, rsv1), client_frame(op_binary_c, z, rsv1),
                               client_frame(op_text_c, "plain", {})});
        expect_compressed(stream, {{ws_opcode::text, to_bytes(s)}, {ws_opcode::binary, to_bytes(s)},
                                   {ws_opcode::text, to_bytes("plain")}});
    }
}

TEST(DeflateWs, FragmentedWithRsv1OnTheFirstFrameOnly) {
    std::string s = compressible(30000, 9);
    bytes z = compress_client(s);
    frame_opts first;
    first.rsv = 4;
    first.fin = false;
    frame_opts mid;
    mid.fin = false;
    size_t a = z.size() / 3, b = 2 * z.size() / 3;
    bytes stream = concat({client_frame(op_text_c, std::span(z).subspan(0, a), first),
                           client_frame(0x9, "ping", {}),  // a control frame in between
                           client_frame(0x0, std::span(z).subspan(a, b - a), mid),
                           client_frame(0x0, std::span(z).subspan(b), {})});
    expect_compressed(stream, {{ws_opcode::text, to_bytes(s)}});
}

TEST(DeflateWs, Rsv1OnAContinuationIs1002) {
    bytes z = compress_client(compressible(3000, 2));
    frame_opts first;
    first.rsv = 4;
    first.fin = false;
    frame_opts last;
    last.rsv = 4;
    size_t a = z.size() / 2;
    bytes stream = concat({client_frame(op_text_c, std::span(z).subspan(0, a), first),
                           client_frame(0x0, std::span(z).subspan(a), last)});
    expect_compressed(stream, {}, close_code::protocol_error);
}

TEST(DeflateWs, Rsv1WithoutTheExtensionIs1002) {
    bytes z = compress_client("hello");
    frame_opts rsv1;
    rsv1.rsv = 4;
    harness h;
    h.feed(client_frame(op_text_c, z, rsv1));
    EXPECT_EQ(h.conn.sent_close_code(), close_code::protocol_error);
    EXPECT_TRUE(h.rec.messages.empty());
}

TEST(DeflateWs, BombIs1009BeforeMemoryGrows) {
    std::string zeros(8 << 20, '\0');
    bytes z = compress_client(zeros);  // ~8 KiB on the wire
    frame_opts rsv1;
    rsv1.rsv = 4;
    expect_compressed(client_frame(op_binary_c, z, rsv1), {}, close_code::message_too_big, 64 << 10);
}

TEST(DeflateWs, InvalidUtf8AfterInflateIs1007AndCorruptIs1007) {
    frame_opts rsv1;
    rsv1.rsv = 4;
    expect_compressed(client_frame(op_text_c, compress_client("ok \xff\xfe bad"), rsv1), {},
                      close_code::invalid_payload);
    const uint8_t junk[] = {0xff, 0xee, 0xdd, 0x01, 0x02};
    expect_compressed(client_frame(op_binary_c, std::span<const uint8_t>(junk), rsv1), {},
                      close_code::invalid_payload);
}

}  // namespace
}  // namespace wsgate::protocol::test
