// Google Benchmark micro-benchmarks of protocol/ hot paths (SPEC section 7):
// UTF-8 validation, frame parsing + unmasking (whole frames, streamed frames,
// and wslay's parser for frames whose header arrives split), frame writing,
// and the HTTP upgrade.
//
// Run: build/release/bench/micro/wsgate-micro [--benchmark_filter=REGEX]
// Numbers are per call on this machine; compare runs from the same session only.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "protocol/http_upgrade.h"
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

}  // namespace

BENCHMARK_MAIN();
