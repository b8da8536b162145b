// Fuzz target for protocol/ws_conn: a client byte stream fed in different splits.
//
// Input: [c0][c1][seed: 4 bytes][body]. c0 bit 0 picks the mode: even = the body
// is the raw client stream; odd = structured, the body describes frames
// (ws_fuzz_gen.h). c0 bits 1-3: max_message (1 MiB in 4 of 8, else 125, 4096,
// 65536 or 0); bit 4: the handler echoes each message (write_frame); bit 5:
// small random slices; bits 6-7 both set and c1 bit 7: structured streams may hold
// one frame of 64 KiB or more. c1 bits 0-1 both set: the handler calls close(1000) after
// 1 + (c1 >> 5) % 3 messages; c1 bits 2-3 both set: close() before any input
// (1005, no payload, if bit 4, else 1001). The seed drives the random slicing.
//
// Checked:
//   - differential: the stream fed (a) whole in one feed(), (b) byte by byte,
//     (c) in seeded random slices, (d) in other slices on connection (a) after
//     reset() — all on one pool, so a context given back dirty would show — gives
//     identical message sequences (opcode + payload), identical output bytes,
//     identical state(), sent_close_code() and received_close_code(). (a) takes
//     ws_conn's whole-frame fast path wherever it can, (b) only wslay's.
//   - model: the same outcome as the reference model (ws_fuzz_model.h), and the
//     connection holds a pool context exactly when it is open with an incomplete
//     frame left over.
//   - per delivery: never while state() is closed; text is valid UTF-8 (own
//     checker); size <= max_message; opcode text or binary.
//   - per feed(): nothing delivered and nothing written once closed; state and
//     close codes consistent (open: none sent; close_sent: sent, none received;
//     closed: sent); at most one context held, none once closed.
//   - pool: contexts_in_use() == 0 after reset() of every connection.
//   - utf8_validate() over the raw input, in seeded chunks, agrees with the
//     reference checker after every chunk.
//   - under ASan, the 256 bytes on either side of each feed()'s span are poisoned,
//     so a read outside the bytes handed in is reported.
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "protocol/utf8.h"
#include "protocol/ws_conn.h"
#include "ws_fuzz_gen.h"
#include "ws_fuzz_model.h"

// ASan's manual poisoning, to fence each feed()'s span inside one heap copy.
#if defined(__SANITIZE_ADDRESS__)
#define WSGATE_FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WSGATE_FUZZ_ASAN 1
#endif
#endif

#ifdef WSGATE_FUZZ_ASAN
extern "C" void __asan_poison_memory_region(void const volatile* addr, size_t size);
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
inline void poison(const uint8_t* p, size_t n) {
    __asan_poison_memory_region(p, n);
}
inline void unpoison(const uint8_t* p, size_t n) {
    __asan_unpoison_memory_region(p, n);
}
#else
inline void poison(const uint8_t*, size_t) {}
inline void unpoison(const uint8_t*, size_t) {}
#endif

namespace wsgate::fuzz {
namespace {

using protocol::byte_buffer;
using protocol::ws_conn;
using protocol::ws_frame_pool;
using protocol::ws_opcode;
using protocol::ws_state;
using wsmodel::behavior;
using wsmodel::message;

constexpr size_t structured_cap = 8 * 1024;

struct fuzz_config {
    bool structured = false;
    bool small_slices = false;
    bool big_frames = false;
    uint32_t seed = 0;
    behavior b;
};

fuzz_config decode_config(input_reader& r) {
    static constexpr size_t max_messages[] = {1 << 20, 1 << 20, 1 << 20, 1 << 20,
                                              125,     4096,    65536,   0};
    const uint8_t c0 = r.u8();
    const uint8_t c1 = r.u8();
    fuzz_config c;
    c.structured = c0 & 1;
    c.b.max_message = max_messages[(c0 >> 1) & 7];
    c.b.echo = c0 & 0x10;
    c.small_slices = c0 & 0x20;
    c.big_frames = (c0 & 0xC0) == 0xC0 && (c1 & 0x80);
    if ((c1 & 3) == 3) {
        c.b.close_after = 1 + (c1 >> 5) % 3;
    }
    if ((c1 & 0x0C) == 0x0C) {
        c.b.pre_close = (c1 & 0x10) ? 1005 : 1001;
    }
    c.seed = r.u32();
    return c;
}

wsmodel::state to_model(ws_state s) {
    return s == ws_state::open         ? wsmodel::state::open
           : s == ws_state::close_sent ? wsmodel::state::close_sent
                                       : wsmodel::state::closed;
}

struct recorder : protocol::ws_handler {
    ws_conn* conn = nullptr;
    ws_frame_pool* pool = nullptr;
    byte_buffer* out = nullptr;
    const behavior* b = nullptr;
    std::vector<message> messages;

    void on_message(ws_opcode op, std::span<const uint8_t> payload) override {
        FUZZ_CHECK(conn->state() != ws_state::closed, "message delivered after close (%zu bytes)",
                   payload.size());
        FUZZ_CHECK(op == ws_opcode::text || op == ws_opcode::binary, "delivered opcode %d",
                   static_cast<int>(op));
        FUZZ_CHECK(payload.size() <= std::min<size_t>(b->max_message, size_t{1} << 30),
                   "message of %zu bytes, max_message %zu", payload.size(), b->max_message);
        if (op == ws_opcode::text) {
            FUZZ_CHECK(wsmodel::utf8_ok(payload.data(), payload.size()),
                       "invalid UTF-8 text delivered: %s",
                       hex(payload.data(), payload.size()).c_str());
        }
        messages.push_back({static_cast<uint8_t>(op), bytes(payload.begin(), payload.end())});
        if (b->echo) {
            ws_conn::write_frame(*pool, *out, op, payload);
        }
        if (b->close_after && messages.size() == b->close_after) {
            conn->close(*pool, *out, protocol::close_code::normal, wsmodel::handler_close_reason);
        }
    }
};

struct run_result {
    std::vector<message> messages;
    bytes out;
    wsmodel::state st;
    uint16_t sent;
    uint16_t recv;
    size_t held;  // pool contexts the connection holds at the end
};

enum class split { whole, bytewise, random };

const char* split_name(split s) {
    return s == split::whole ? "whole" : s == split::bytewise ? "bytewise" : "random";
}

void check_state(const ws_conn& c, const char* mode) {
    switch (c.state()) {
    case ws_state::open:
        FUZZ_CHECK(c.sent_close_code() == 0 && c.received_close_code() == 0,
                   "%s: open with close codes %d/%d", mode, c.sent_close_code(),
                   c.received_close_code());
        break;
    case ws_state::close_sent:
        FUZZ_CHECK(c.sent_close_code() != 0 && c.received_close_code() == 0,
                   "%s: close_sent with codes %d/%d", mode, c.sent_close_code(),
                   c.received_close_code());
        break;
    case ws_state::closed:
        FUZZ_CHECK(c.sent_close_code() != 0, "%s: closed without sending a close", mode);
        break;
    }
}

run_result run(ws_conn& conn, ws_frame_pool& pool, const bytes& stream, const fuzz_config& cfg,
               split how, uint32_t seed) {
    const char* mode = split_name(how);
    byte_buffer out;
    recorder rec;
    rec.conn = &conn;
    rec.pool = &pool;
    rec.out = &out;
    rec.b = &cfg.b;
    protocol::ws_config wcfg;
    wcfg.max_message = cfg.b.max_message;
    const size_t base = pool.contexts_in_use();
    if (cfg.b.pre_close) {
        conn.close(pool, out, cfg.b.pre_close,
                   cfg.b.pre_close == 1005 ? std::string_view{} : wsmodel::pre_close_reason);
    }
    // An exact-size heap copy of the stream; around each feed the bytes just before
    // and after its span are poisoned, so ASan sees a read outside the span.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[stream.size() ? stream.size() : 1]);
    if (!stream.empty()) {
        std::memcpy(copy.get(), stream.data(), stream.size());
    }
    auto feed = [&](size_t off, size_t n) {
        const bool was_closed = conn.state() == ws_state::closed;
        const size_t out_before = out.size();
        const size_t msgs_before = rec.messages.size();
        const size_t lo = off - std::min<size_t>(off, 256);
        const size_t hi = std::min(stream.size(), off + n + 256);
        poison(copy.get() + lo, off - lo);
        poison(copy.get() + off + n, hi - off - n);
        conn.feed(std::span<const uint8_t>(copy.get() + off, n), pool, wcfg, rec, out);
        unpoison(copy.get() + lo, hi - lo);
        if (was_closed) {
            FUZZ_CHECK(out.size() == out_before && rec.messages.size() == msgs_before,
                       "%s: output or messages after close (feed at %zu)", mode, off);
        }
        check_state(conn, mode);
        const size_t held = pool.contexts_in_use() - base;
        FUZZ_CHECK(held <= 1, "%s: %zu contexts held", mode, held);
        FUZZ_CHECK(held == 0 || conn.state() != ws_state::closed,
                   "%s: closed but holds a context (feed at %zu)", mode, off);
    };
    if (how == split::whole) {
        feed(0, stream.size());
    } else {
        std::mt19937 rng(seed);
        const uint32_t big = cfg.small_slices ? 300 : 12000;
        size_t i = 0;
        while (i < stream.size()) {
            size_t n = 1;
            if (how == split::random) {
                n = rng() % 2 ? 1 + rng() % 8 : 1 + rng() % big;
            }
            n = std::min(n, stream.size() - i);
            feed(i, n);
            i += n;
        }
    }
    return {std::move(rec.messages),    bytes(out.data(), out.data() + out.size()),
            to_model(conn.state()),     conn.sent_close_code(),
            conn.received_close_code(), pool.contexts_in_use() - base};
}

std::string describe(const char* name, const std::vector<message>& msgs, const bytes& out,
                     wsmodel::state st, uint16_t sent, uint16_t recv) {
    std::string s = fmt("  %-9s state %d sent %d recv %d, %zu messages, out %zu bytes: %s\n", name,
                        static_cast<int>(st), sent, recv, msgs.size(), out.size(),
                        hex(out.data(), out.size(), 48).c_str());
    for (size_t i = 0; i < msgs.size() && i < 8; ++i) {
        s += fmt("    msg %zu: op %d, %zu bytes: %s\n", i, msgs[i].opcode, msgs[i].payload.size(),
                 hex(msgs[i].payload.data(), msgs[i].payload.size(), 24).c_str());
    }
    return s;
}

bool same(const run_result& a, const wsmodel::outcome& m) {
    return a.messages == m.messages && a.out == m.out && a.st == m.st && a.sent == m.sent &&
           a.recv == m.recv;
}

void check_utf8(const uint8_t* p, size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    uint32_t st = protocol::utf8_accept;
    wsmodel::utf8_ref ref;
    size_t i = 0;
    while (i < n) {
        size_t k = std::min<size_t>(n - i, 1 + rng() % 16);
        st = protocol::utf8_validate(st, p + i, k);
        ref.feed(p + i, k);
        i += k;
        const int lib = st == protocol::utf8_accept ? 0 : st == protocol::utf8_reject ? 2 : 1;
        const int want = ref.bad ? 2 : ref.need == 0 ? 0 : 1;
        FUZZ_CHECK(lib == want, "utf8_validate state %u after %zu bytes, reference %d", st, i,
                   want);
        if (ref.bad) {
            break;
        }
    }
    FUZZ_CHECK(protocol::is_valid_utf8(std::span<const uint8_t>(p, n)) == wsmodel::utf8_ok(p, n),
               "is_valid_utf8 disagrees with the reference");
}

}  // namespace

std::vector<bytes> seed_corpus() {
    using wsgen::append_frame;
    using wsgen::frame_opts;
    std::vector<bytes> seeds;
    auto raw = [&](uint8_t c0, uint8_t c1, const bytes& stream) {
        bytes s = {c0, c1, 0, 0, 0x12, 0x34};
        s.insert(s.end(), stream.begin(), stream.end());
        seeds.push_back(std::move(s));
    };
    auto pat = [](size_t n) {
        bytes b(n);
        for (size_t i = 0; i < n; ++i) {
            b[i] = static_cast<uint8_t>(i * 31 + 7);
        }
        return b;
    };
    frame_opts nf;
    nf.fin = false;
    const std::string kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";  // κόσμε
    {
        bytes s;
        append_frame(s, 1, "Hello");
        append_frame(s, 2, pat(256));
        append_frame(s, 1, "");
        append_frame(s, 9, "ping");
        append_frame(s, 10, "unsolicited");
        append_frame(s, 1, kosme);
        raw(0x00, 0, s);
        raw(0x10, 0, s);  // echo
        raw(0x10, 2, s);  // echo, close after 2 messages
        raw(0x00, 4, s);  // closed by us first
        raw(0x06, 0, s);  // max_message 125
    }
    {
        bytes s;  // fragmented text with control frames in between, split code points
        append_frame(s, 1, kosme.substr(0, 3), nf);
        append_frame(s, 9, "p");
        append_frame(s, 0, kosme.substr(3, 4), nf);
        append_frame(s, 0, "", nf);
        append_frame(s, 10, "");
        append_frame(s, 0, kosme.substr(7));
        append_frame(s, 2, pat(10), nf);
        append_frame(s, 0, pat(3));
        append_frame(s, 8,
                     "\x03\xe8"
                     "bye");
        append_frame(s, 1, "after close");
        raw(0x00, 0, s);
        raw(0x20, 1, s);
    }
    {
        bytes s;  // length encodings and the fast path / wslay boundaries
        append_frame(s, 1, std::string(126, 'a'));
        append_frame(s, 2, pat(4096));
        append_frame(s, 2, pat(65535));
        append_frame(s, 2, pat(65536));
        append_frame(s, 2, pat(70000));
        raw(0x00, 0, s);
        raw(0x0e, 0, s);  // max_message 65536
    }
    // Edge UTF-8 and close frames, one stream each.
    for (std::string_view t :
         {std::string_view("\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
                           "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"),
          std::string_view("\xed\xa0\x80"), std::string_view("\xf4\x90\x80\x80"),
          std::string_view("\xc0\x80"), std::string_view("\xce\xba\xe1\xbd"),
          std::string_view("\xff")}) {
        bytes s;
        append_frame(s, 1, t);
        raw(0x00, 0, s);
        bytes c;
        std::string body = "\x03\xe8" + std::string(t);
        append_frame(c, 8, body);
        raw(0x00, 0, c);
    }
    for (std::string_view body :
         {std::string_view(""), std::string_view("\x03"), std::string_view("\x03\xed"),
          std::string_view("\x03\xee"), std::string_view("\x0f\xa0"),
          std::string_view("\x13\x87"
                           "bye")}) {
        bytes s;
        append_frame(s, 8, body);
        raw(0x00, 0, s);
    }
    {
        // Protocol errors.
        frame_opts rsv;
        rsv.rsv = 4;
        frame_opts unmasked;
        unmasked.masked = false;
        frame_opts wide;
        wide.len_bytes = 2;
        frame_opts huge;
        huge.declared = 1ull << 63;
        frame_opts big;
        big.declared = 1ull << 40;
        const std::pair<uint8_t, frame_opts> bad[] = {{1, rsv}, {1, unmasked}, {1, wide}, {3, {}},
                                                      {0, {}},  {9, nf},       {2, huge}, {2, big}};
        for (const auto& [op, o] : bad) {
            bytes s;
            append_frame(s, 1, "ok");
            append_frame(s, op, "xyz", o);
            raw(0x00, 0, s);
        }
        bytes s;
        append_frame(s, 1, "a", nf);
        append_frame(s, 1, "b");
        raw(0x00, 0, s);
        bytes p;
        append_frame(p, 9, std::string(126, 'p'));
        raw(0x00, 0, p);
    }
    // Structured: random descriptions over every configuration.
    std::mt19937 rng(20240611);
    for (int i = 0; i < 48; ++i) {
        bytes s = {static_cast<uint8_t>((rng() & 0xfe) | 1), static_cast<uint8_t>(rng())};
        size_t n = 4 + rng() % 400;
        for (size_t k = 0; k < n; ++k) {
            s.push_back(static_cast<uint8_t>(rng()));
        }
        seeds.push_back(std::move(s));
    }
    // Structured, hand-made: fragmented text around a ping, binary, close. Each
    // frame: descriptor, variation, length byte, then up to 8 payload-source bytes.
    seeds.push_back({0x01, 0x00, 0, 0, 0, 7,                            // structured
                     0x38, 0x81, 40, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82,  // text
                     0x24, 0x80, 3, 'p', 'i', 'n', 'g', '!',            // ping "ping!"
                     0x30, 0x80, 30, 0x84, 0x84, 0x84, 0x84, 0x84, 0x84, 0x84, 0x84,  // cont
                     0x31, 0x82, 20, 0, 1, 2, 3, 4, 5, 6, 7,            // binary, 20 bytes
                     0x56, 0x80, 12, 0, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86, 0x86});
    return seeds;
}

unsigned long default_iterations() {
    return 2800;
}

std::vector<std::string> dictionary() {
    return {"\x81\x85",
            "\x01\x80",
            "\x80\x80",
            "\x82\xfe\x01\x00",
            "\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00",
            "\x88\x82",
            "\x88\x80",
            "\x89\x80",
            "\x8a\x80",
            "\x03\xe8",
            "\xed\xa0\x80",
            "\xf4\x90\x80\x80",
            "\xc0\x80",
            "\xe0\xa0\x80",
            "\xf0\x90\x80\x80"};
}

}  // namespace wsgate::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace wsgate::fuzz;
    set_current_input(data, size);
    input_reader r{data, size};
    const fuzz_config cfg = decode_config(r);
    const bytes stream = cfg.structured ? wsgen::build_structured(r, structured_cap, cfg.big_frames)
                                        : bytes(data + r.pos, data + size);
    check_utf8(data, size, cfg.seed);

    const wsmodel::outcome want = wsmodel::run_model(stream, cfg.b);
    ws_frame_pool pool;
    run_result res[4];
    {
        ws_conn a, b, c;
        res[0] = run(a, pool, stream, cfg, split::whole, 0);
        res[1] = run(b, pool, stream, cfg, split::bytewise, 0);
        res[2] = run(c, pool, stream, cfg, split::random, cfg.seed);
        a.reset(pool);
        FUZZ_CHECK(
            a.state() == ws_state::open && a.sent_close_code() == 0 && a.received_close_code() == 0,
            "reset() did not restore a fresh connection");
        res[3] = run(a, pool, stream, cfg, split::random, cfg.seed ^ 0x5bd1e995u);
        a.reset(pool);
        b.reset(pool);
        c.reset(pool);
        FUZZ_CHECK(pool.contexts_in_use() == 0, "%zu contexts in use after reset()",
                   pool.contexts_in_use());
    }
    static const char* names[] = {"whole", "bytewise", "random", "reused"};
    bool all_same = true;
    for (const run_result& x : res) {
        all_same = all_same && same(x, want);
    }
    if (!all_same) {
        std::string d =
            fmt("stream of %zu bytes (%s), max_message %zu, echo %d, close_after %u, "
                "pre_close %d; outcomes differ:\n",
                stream.size(), cfg.structured ? "structured" : "raw", cfg.b.max_message, cfg.b.echo,
                cfg.b.close_after, cfg.b.pre_close);
        d += describe("model", want.messages, want.out, want.st, want.sent, want.recv);
        for (int i = 0; i < 4; ++i) {
            d += describe(names[i], res[i].messages, res[i].out, res[i].st, res[i].sent,
                          res[i].recv);
        }
        d += "  stream: " + hex(stream.data(), stream.size(), 256) + "\n";
        std::fputs(d.c_str(), stderr);
        FUZZ_CHECK(all_same, "feeding splits / model disagree (see above)");
    }
    const size_t want_held = want.st != wsmodel::state::closed && want.leftover > 0 ? 1 : 0;
    for (int i = 0; i < 4; ++i) {
        FUZZ_CHECK(res[i].held == want_held, "%s: holds %zu contexts, want %zu (leftover %zu)",
                   names[i], res[i].held, want_held, want.leftover);
    }
    set_current_input(nullptr, 0);
    return 0;
}
