// Google Benchmark micro-benchmarks of protocol/ hot paths (SPEC section 7):
// UTF-8 validation, frame parsing + unmasking (whole frames, streamed frames,
// and wslay's parser for frames whose header arrives split), frame writing,
// the HTTP upgrade, and the client protocol: envelope decode (JSON via simdjson
// On-Demand, binary) and push encoding.
//
// Run: build/release/bench/micro/wsgate-micro [--benchmark_filter=REGEX]
// Numbers are per call on this machine; compare runs from the same session only.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "protocol/binary_codec.h"
#include "protocol/http_upgrade.h"
#include "protocol/json_codec.h"
#include "protocol/push.h"
#include "protocol/utf8.h"
#include "protocol/ws_conn.h"

namespace {

using namespace wsgate::protocol;

std::vector<uint8_t> text_payload(size_t n, bool multibyte) {
    std::vector<uint8_t> v;
    v.reserve(n + 4);
    std::mt19937 rng(42);
    while (v.size() < n) {
        if (multibyte && rng() % 4 == 0 && v.size() + 3 <= n) {
            const uint8_t euro[] = {0xE2, 0x82, 0xAC};
            v.insert(v.end(), euro, euro + 3);
        } else {
            v.push_back(static_cast<uint8_t>('a' + rng() % 26));
        }
    }
    v.resize(n);
    return v;
}

// A masked client frame, as a browser sends it.
std::vector<uint8_t> client_frame(uint8_t opcode, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> f;
    f.push_back(static_cast<uint8_t>(0x80 | opcode));
    size_t n = payload.size();
    if (n < 126) {
        f.push_back(static_cast<uint8_t>(0x80 | n));
    } else if (n < 65536) {
        f.push_back(0x80 | 126);
        f.push_back(static_cast<uint8_t>(n >> 8));
        f.push_back(static_cast<uint8_t>(n));
    } else {
        f.push_back(0x80 | 127);
        for (int i = 7; i >= 0; --i) {
            f.push_back(static_cast<uint8_t>(n >> (8 * i)));
        }
    }
    const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    f.insert(f.end(), key, key + 4);
    for (size_t i = 0; i < n; ++i) {
        f.push_back(payload[i] ^ key[i & 3]);
    }
    return f;
}

class sink final : public ws_handler {
public:
    void on_message(ws_opcode, std::span<const uint8_t> payload) override {
        bytes += payload.size();
        benchmark::DoNotOptimize(payload.data());
    }
    size_t bytes = 0;
};

void bm_utf8_validate(benchmark::State& state, bool multibyte) {
    auto p = text_payload(static_cast<size_t>(state.range(0)), multibyte);
    for (auto _ : state) {
        benchmark::DoNotOptimize(utf8_validate(utf8_accept, p.data(), p.size()));
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK_CAPTURE(bm_utf8_validate, ascii, false)->Arg(16)->Arg(1024)->Arg(65536);
BENCHMARK_CAPTURE(bm_utf8_validate, multibyte, true)->Arg(16)->Arg(1024)->Arg(65536);

// Feed one masked text frame of state.range(0) bytes, split at `cut(frame size)`
// (0: whole). Where the split falls decides the parser:
//   whole       - complete frame, one chunk (our parser);
//   split_frame - header whole, payload streamed in two chunks (our parser);
//   split_header- header split after its first byte: wslay parses the frame.
template <class Cut>
void bm_feed(benchmark::State& state, Cut cut) {
    auto frame = client_frame(0x1, text_payload(static_cast<size_t>(state.range(0)), false));
    std::span<const uint8_t> all(frame);
    size_t at = cut(frame.size());
    ws_frame_pool pool;
    ws_config cfg;
    ws_conn conn;
    sink h;
    byte_buffer out;
    for (auto _ : state) {
        if (at == 0) {
            conn.feed(all, pool, cfg, h, out);
        } else {
            conn.feed(all.subspan(0, at), pool, cfg, h, out);
            conn.feed(all.subspan(at), pool, cfg, h, out);
        }
        out.clear();
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK_CAPTURE(bm_feed, whole_frame, [](size_t) { return size_t{0}; })->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(bm_feed, split_frame, [](size_t n) { return n / 2; })->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(bm_feed, split_header, [](size_t) { return size_t{1}; })->Arg(16)->Arg(1024)->Arg(16384);

void bm_write_frame(benchmark::State& state) {
    auto payload = text_payload(static_cast<size_t>(state.range(0)), false);
    ws_frame_pool pool;
    byte_buffer out;
    for (auto _ : state) {
        ws_conn::write_frame(pool, out, ws_opcode::text, payload);
        out.clear();
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(bm_write_frame)->Arg(16)->Arg(1024)->Arg(16384);

void bm_handshake(benchmark::State& state) {
    const std::string req =
        "GET /ws?token=abc HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Origin: https://example.com\r\nSec-WebSocket-Version: 13\r\n"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0\r\n"
        "Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    handshake_config cfg;
    for (auto _ : state) {
        auto r = process_handshake(req, cfg);
        benchmark::DoNotOptimize(r.response.data());
    }
}
BENCHMARK(bm_handshake);

// A publish envelope whose data is a JSON string of about `n` bytes.
std::string publish_envelope(size_t n) {
    std::string env = R"({"op":"publish","room":"lobby","id":12345,"data":")";
    env.append(n, 'x');
    env.append(R"("})");
    return env;
}

void bm_json_decode(benchmark::State& state) {
    std::string env = publish_envelope(static_cast<size_t>(state.range(0)));
    json_decoder dec;
    auto span = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(env.data()), env.size());
    for (auto _ : state) {
        decode_result r = dec.decode(span);
        benchmark::DoNotOptimize(r);
        if (!r.ok) {
            state.SkipWithError("decode failed");
            break;
        }
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * env.size()));
}
BENCHMARK(bm_json_decode)->Arg(16)->Arg(1024)->Arg(16384);

void bm_binary_decode(benchmark::State& state) {
    byte_buffer msg;
    std::string data(static_cast<size_t>(state.range(0)), 'x');
    // publish with id: header, id, room, data (docs/protocol.md)
    const uint8_t head[] = {binary::version, 3, binary::flag_has_id, 1, 2, 3, 4, 5, 0};
    msg.append(head, sizeof(head));
    msg.append(std::string_view("lobby"));
    uint32_t n = static_cast<uint32_t>(data.size());
    const uint8_t len[] = {uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
    msg.append(len, 4);
    msg.append(data);
    binary_decoder dec;
    for (auto _ : state) {
        decode_result r = dec.decode(msg.span());
        benchmark::DoNotOptimize(r);
        if (!r.ok) {
            state.SkipWithError("decode failed");
            break;
        }
    }
}
BENCHMARK(bm_binary_decode)->Arg(16)->Arg(1024);

void bm_encode_push(benchmark::State& state) {
    std::string data = "\"";
    data.append(static_cast<size_t>(state.range(0)), 'x');
    data.push_back('"');
    push_fields p;
    p.kind = push_kind::message;
    p.room = "lobby";
    p.from = "user-123";
    p.data = data;
    byte_buffer out;
    for (auto _ : state) {
        out.clear();
        encode_push(out, wire_format::json, p);
        benchmark::DoNotOptimize(out.data());
    }
}
BENCHMARK(bm_encode_push)->Arg(16)->Arg(1024);

}  // namespace

BENCHMARK_MAIN();
