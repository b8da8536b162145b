// Fuzz target for protocol/http_upgrade: process_handshake() on arbitrary bytes.
//
// The input is the byte stream a new connection sends. Checked, for several
// configurations (default; /echo on with a small head limit derived from the input;
// the limit exactly at and one below the parsed head's length):
//   - no crash, no sanitizer report; consumed <= input size;
//   - the status is one of {0 (need_more), 101, 200, 400, 404, 405, 426, 431} and
//     agrees with the action; a separate scan for the head end (CRLF CRLF, bare LF,
//     limit) says need_more / 431 / 400 / head length, and consumed matches it;
//   - 101: the response is exactly the expected one, with Sec-WebSocket-Accept
//     computed here (SHA-1 + base64 of our own) for the parsed key, and the
//     request really satisfies every rule (GET, path, tokens, Host, key, version);
//     200/404/405 agree with the parsed method and path; refusals are well-formed
//     (status line, Connection: close, Content-Length = body length);
//   - split invariance: a decision never changes once made: any prefix decides
//     need_more or exactly the same result, the head alone decides the same as the
//     head plus trailing bytes, and bytes appended after a decided input change
//     nothing. Prefixes are copied to exact-size heap buffers so that ASan sees a
//     read past the bytes received so far.
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "protocol/http_upgrade.h"

namespace wsgate::fuzz {
namespace {

using protocol::endpoint;
using protocol::handshake_action;
using protocol::handshake_config;
using protocol::handshake_result;

// Independent re-statement of the head scan: the head ends at the first CRLF CRLF
// inside the first `limit` bytes; an LF not preceded by CR before that is an error.
struct scan_result {
    enum kind { incomplete, bare_lf, head } k;
    size_t end;
};

scan_result oracle_scan(std::string_view in, size_t limit) {
    size_t n = std::min(in.size(), limit);
    for (size_t i = 0; i < n; ++i) {
        if (in[i] != '\n') {
            continue;
        }
        if (i == 0 || in[i - 1] != '\r') {
            return {scan_result::bare_lf, 0};
        }
        if (i >= 3 && in.substr(i - 3, 4) == "\r\n\r\n") {
            return {scan_result::head, i + 1};
        }
    }
    return {scan_result::incomplete, 0};
}

std::string ref_base64(const uint8_t* p, size_t n) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string s;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; ++i) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            s += a[(acc >> bits) & 63];
        }
    }
    if (bits > 0) {
        s += a[(acc << (6 - bits)) & 63];
    }
    while (s.size() % 4) {
        s += '=';
    }
    return s;
}

std::string ref_accept(std::string_view key) {
    std::string joined(key);
    joined += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t d[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const uint8_t*>(joined.data()), joined.size(), d);
    return ref_base64(d, sizeof(d));
}

bool ref_valid_key(std::string_view k) {
    if (k.size() != 24 || k.substr(22) != "==") {
        return false;
    }
    for (size_t i = 0; i < 22; ++i) {
        char c = k[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool same_decision(const handshake_result& a, const handshake_result& b) {
    return a.action == b.action && a.status == b.status && a.target == b.target &&
           a.consumed == b.consumed && a.response == b.response && a.reason == b.reason;
}

std::string describe(const handshake_result& r) {
    return fmt("status %d consumed %zu reason '%.*s'", r.status, r.consumed,
               static_cast<int>(r.reason.size()), r.reason.data());
}

// process_handshake on an exact-size heap copy of in[0, n).
handshake_result run_copy(std::string_view in, size_t n, const handshake_config& cfg) {
    std::unique_ptr<char[]> buf(new char[n ? n : 1]);
    if (n) {
        std::memcpy(buf.get(), in.data(), n);
    }
    handshake_result r = protocol::process_handshake(std::string_view(buf.get(), n), cfg);
    // Views into buf die with it: the callers compare decisions only.
    r.request = {};
    return r;
}

bool view_inside(std::string_view v, std::string_view in, size_t end) {
    if (v.data() == nullptr) {
        return true;
    }
    return v.data() >= in.data() && v.data() + v.size() <= in.data() + end;
}

void check_response_shape(const handshake_result& r) {
    std::string_view resp = r.response;
    char code[8];
    auto e = std::to_chars(code, code + sizeof(code), r.status).ptr;
    std::string status_line = "HTTP/1.1 " + std::string(code, e) + " ";
    FUZZ_CHECK(resp.substr(0, status_line.size()) == status_line, "response starts '%s'",
               hex(resp.substr(0, 20)).c_str());
    size_t head_end = resp.find("\r\n\r\n");
    FUZZ_CHECK(head_end != std::string_view::npos, "response has no end of head");
    std::string_view head = resp.substr(0, head_end + 2);
    FUZZ_CHECK(head.find("\r\nConnection: close\r\n") != std::string_view::npos,
               "refusal without Connection: close");
    size_t cl = head.find("\r\nContent-Length: ");
    FUZZ_CHECK(cl != std::string_view::npos, "refusal without Content-Length");
    size_t v = cl + 18;
    size_t len = 0;
    auto res = std::from_chars(head.data() + v, head.data() + head.size(), len);
    FUZZ_CHECK(res.ec == std::errc{} && len == resp.size() - head_end - 4,
               "Content-Length %zu, body %zu", len, resp.size() - head_end - 4);
}

// Everything that must hold for one (input, config) pair; returns the result.
handshake_result check_one(std::string_view in, const handshake_config& cfg) {
    handshake_result r = protocol::process_handshake(in, cfg);
    const uint16_t s = r.status;
    FUZZ_CHECK(
        s == 0 || s == 101 || s == 200 || s == 400 || s == 404 || s == 405 || s == 426 || s == 431,
        "unexpected status %d", s);
    FUZZ_CHECK(r.consumed <= in.size(), "consumed %zu > size %zu", r.consumed, in.size());
    FUZZ_CHECK((s == 0) == (r.action == handshake_action::need_more), "action/status %d", s);
    FUZZ_CHECK((s == 101) == (r.action == handshake_action::upgrade), "action/status %d", s);

    scan_result sc = oracle_scan(in, cfg.max_header_bytes);
    switch (sc.k) {
    case scan_result::incomplete:
        if (in.size() <= cfg.max_header_bytes) {
            FUZZ_CHECK(s == 0 && r.response.empty(), "no head yet but %s", describe(r).c_str());
        } else {
            FUZZ_CHECK(s == 431, "no head in limit %zu but %s", cfg.max_header_bytes,
                       describe(r).c_str());
        }
        FUZZ_CHECK(r.consumed == 0, "consumed %zu without a head", r.consumed);
        break;
    case scan_result::bare_lf:
        FUZZ_CHECK(s == 400 && r.consumed == 0, "bare LF but %s", describe(r).c_str());
        break;
    case scan_result::head:
        FUZZ_CHECK(r.consumed == sc.end, "head ends at %zu but %s", sc.end, describe(r).c_str());
        FUZZ_CHECK(s != 0 && s != 431, "complete head but %s", describe(r).c_str());
        break;
    }
    if (s == 0) {
        return r;
    }
    const protocol::http_request& q = r.request;
    if (r.consumed > 0) {
        for (std::string_view v : {q.method, q.target, q.path, q.query, q.host, q.origin,
                                   q.authorization, q.sec_websocket_key, q.sec_websocket_version,
                                   q.sec_websocket_protocol, q.sec_websocket_extensions}) {
            FUZZ_CHECK(view_inside(v, in, r.consumed), "request view outside the head");
        }
        protocol::http_request q2;
        long pr = protocol::parse_http_request(in.substr(0, r.consumed), q2);
        FUZZ_CHECK(pr == static_cast<long>(r.consumed) || (pr == -1 && s == 400),
                   "parse_http_request %ld vs %s", pr, describe(r).c_str());
    }
    switch (s) {
    case 101: {
        std::string_view key = q.sec_websocket_key;
        FUZZ_CHECK(q.method == "GET", "101 for a non-GET");
        FUZZ_CHECK((q.path == cfg.ws_path && r.target == endpoint::ws) ||
                       (cfg.echo && q.path == "/echo" && r.target == endpoint::echo),
                   "101 for path '%s'", hex(q.path).c_str());
        FUZZ_CHECK(q.upgrade_websocket && q.connection_upgrade && q.http_minor >= 1 &&
                       q.host.data() != nullptr && !q.has_body,
                   "101 for a request missing a rule");
        FUZZ_CHECK(ref_valid_key(key), "101 with key '%s'", hex(key).c_str());
        FUZZ_CHECK(q.sec_websocket_version == "13", "101 with version '%s'",
                   hex(q.sec_websocket_version).c_str());
        std::string want =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
            ref_accept(key) + "\r\n\r\n";
        FUZZ_CHECK(r.response == want, "101 response '%s'", r.response.c_str());
        FUZZ_CHECK(protocol::websocket_accept(key) == ref_accept(key), "websocket_accept");
        break;
    }
    case 200:
        FUZZ_CHECK(q.method == "GET" && q.path == "/healthz" && r.target == endpoint::healthz,
                   "200 for '%s'", hex(q.target).c_str());
        FUZZ_CHECK(r.response.substr(0, 17) == "HTTP/1.1 200 OK\r\n", "200 response");
        break;
    case 405:
        FUZZ_CHECK(q.method != "GET", "405 for GET");
        check_response_shape(r);
        break;
    case 404:
        FUZZ_CHECK(q.method == "GET" && q.path != cfg.ws_path && q.path != "/healthz" &&
                       !(cfg.echo && q.path == "/echo"),
                   "404 for '%s'", hex(q.path).c_str());
        check_response_shape(r);
        break;
    default:
        FUZZ_CHECK(r.target == endpoint::none, "refusal with an endpoint");
        check_response_shape(r);
        break;
    }
    return r;
}

// A decision, once made, is final: prefixes decide need_more or the same; the
// input with bytes appended decides the same.
void check_splits(std::string_view in, const handshake_config& cfg, const handshake_result& r,
                  uint32_t seed) {
    std::mt19937 rng(seed);
    const size_t n = in.size();
    auto check_prefix = [&](size_t len) {
        handshake_result p = run_copy(in, len, cfg);
        if (p.status != 0) {
            FUZZ_CHECK(same_decision(p, r), "prefix %zu of %zu decides %s, whole input %s", len, n,
                       describe(p).c_str(), describe(r).c_str());
        }
        return p.status;
    };
    // A few pseudo-random split points, plus the head boundary.
    for (int i = 0; i < 3 && n > 0; ++i) {
        check_prefix(rng() % (n + 1));
    }
    check_prefix(n);
    if (r.consumed > 0) {
        check_prefix(r.consumed);
        check_prefix(r.consumed - 1);
    }
    if (r.status != 0) {
        // The shortest deciding prefix; the one byte shorter must not decide yet.
        size_t lo = 0;
        size_t hi = n;  // status(hi) != 0
        while (lo + 1 < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (run_copy(in, mid, cfg).status != 0) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        FUZZ_CHECK(check_prefix(hi) != 0, "shortest deciding prefix %zu", hi);
        FUZZ_CHECK(run_copy(in, hi - 1, cfg).status == 0, "prefix %zu decides", hi - 1);
        // Trailing bytes after a decided input (pipelined frames, a second request).
        static constexpr std::string_view tails[] = {
            "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
            "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
            "\r\n\r\n\n\n\r",
        };
        std::string longer(in);
        longer.append(tails[rng() % 3]);
        handshake_result l = run_copy(longer, longer.size(), cfg);
        FUZZ_CHECK(same_decision(l, r), "trailing bytes changed %s into %s", describe(r).c_str(),
                   describe(l).c_str());
    }
}

uint32_t hash_input(std::string_view in) {
    uint32_t h = 2166136261u;
    for (char c : in) {
        h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
    }
    return h;
}

}  // namespace

std::vector<bytes> seed_corpus() {
    const std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    const std::string ver = "Sec-WebSocket-Version: 13\r\n";
    const std::string up = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    const std::string host = "Host: example.com\r\n";
    auto req = [&](std::string line, std::string headers) {
        return line + "\r\n" + headers + "\r\n";
    };
    const std::string good = req("GET /ws HTTP/1.1", host + up + key + ver);
    std::vector<std::string> s = {
        good,
        req("GET /ws?room=a&token=b HTTP/1.1",
            host + up + key + ver + "Origin: http://example.com\r\nAuthorization: Bearer x\r\n" +
                "Sec-WebSocket-Protocol: chat, json\r\n" +
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
        req("GET /echo HTTP/1.1", host + up + key + ver),
        req("GET /healthz HTTP/1.1", host),
        req("get /ws HTTP/1.1", host + up + key + ver),
        req("POST /ws HTTP/1.1", host + up + key + ver + "Content-Length: 5\r\n") + "hello",
        req("GET /nope HTTP/1.1", host + up + key + ver),
        req("GET /ws HTTP/1.0", host + up + key + ver),
        req("GET /ws HTTP/1.1", host + "upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n" +
                                    "sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\n" +
                                    "sec-websocket-version: 13\r\n"),
        req("GET /ws HTTP/1.1", host + up + key + "Sec-WebSocket-Version: 8\r\n"),
        req("GET /ws HTTP/1.1", host + up + key),
        req("GET /ws HTTP/1.1", host + up + ver),
        req("GET /ws HTTP/1.1", up + key + ver),
        req("GET /ws HTTP/1.1", host + host + up + key + ver),
        req("GET /ws HTTP/1.1", host + up + key + key + ver),
        req("GET /ws HTTP/1.1", host + up + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" + ver),
        req("GET /ws HTTP/1.1", host + up + key + ver + "Transfer-Encoding: chunked\r\n"),
        req("GET /ws HTTP/1.1", host + up + key + ver + "Content-Length: 0\r\n"),
        req("GET /ws HTTP/1.1", host + " folded\r\n" + up + key + ver),
        req("GET /ws HTTP/1.1", host + "Bad Header: x\r\n" + up + key + ver),
        req("GET /ws HTTP/1.1", host +
                                    "X-Ctl: a\x01"
                                    "b\r\n" +
                                    up + key + ver),
        req("GET http://example.com/ws HTTP/1.1", host + up + key + ver),
        req("GET  /ws HTTP/1.1", host + up + key + ver),
        req("GET /ws HTTP/2.0", host + up + key + ver),
        req("GET /ws HTTP/1.1", host + "Upgrade: h2c\r\nConnection: Upgrade\r\n" + key + ver),
        req("GET /ws HTTP/1.1", host + "Upgrade: websocket\r\nConnection: close\r\n" + key + ver),
        "GET /ws HTTP/1.1\nHost: x\n\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\n",
        "\r\n\r\n",
        "",
        good + "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        good + good,
        req("GET /ws HTTP/1.1",
            host + up + key + ver + "X-Long: " + std::string(9000, 'a') + "\r\n"),
        req("GET /ws HTTP/1.1",
            host + up + key + ver + "X-Pad: " + std::string(7900, 'b') + "\r\n"),
        req("GET /ws HTTP/1.1", host + "Upgrade:websocket\r\nConnection:\tUpgrade \r\n" + key +
                                    ver + "X-Obs: \x80\xff\r\nHost2:\r\n"),
        req("GET /ws HTTP/1.1", "Host:\r\n" + up + key + ver),
    };
    std::vector<bytes> out;
    for (const std::string& x : s) {
        out.emplace_back(x.begin(), x.end());
    }
    return out;
}

unsigned long default_iterations() {
    return 45000;
}

std::vector<std::string> dictionary() {
    return {"\r\n",
            "\r\n\r\n",
            "\n",
            ": ",
            " ",
            "\t",
            ",",
            "GET ",
            "POST ",
            " HTTP/1.1",
            " HTTP/1.0",
            "/ws",
            "/echo",
            "/healthz",
            "?",
            "Host: ",
            "Upgrade: ",
            "websocket",
            "Connection: ",
            "Upgrade",
            "keep-alive",
            "Sec-WebSocket-Key: ",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: ",
            "13",
            "Sec-WebSocket-Protocol: ",
            "Sec-WebSocket-Extensions: ",
            "Content-Length: ",
            "Transfer-Encoding: ",
            "Origin: ",
            "Authorization: ",
            "=="};
}

}  // namespace wsgate::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace wsgate::fuzz;
    set_current_input(data, size);
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const uint32_t h = hash_input(in);

    handshake_config def;
    handshake_result r0 = check_one(in, def);
    check_splits(in, def, r0, h);

    handshake_config small;
    small.echo = true;
    small.max_header_bytes = 1 + h % 400;
    handshake_result r1 = check_one(in, small);
    check_splits(in, small, r1, h ^ 0x9e3779b9u);

    if (r0.consumed > 0) {
        // The head fits exactly: same decision. One byte less: too large.
        handshake_config exact;
        exact.max_header_bytes = r0.consumed;
        handshake_result r2 = check_one(in, exact);
        FUZZ_CHECK(same_decision(r2, r0), "limit = head length: %s vs %s", describe(r2).c_str(),
                   describe(r0).c_str());
        exact.max_header_bytes = r0.consumed - 1;
        handshake_result r3 = check_one(in, exact);
        FUZZ_CHECK(r3.status == 431, "limit = head length - 1: %s", describe(r3).c_str());
    }
    // Keys of any length and content (the > 64-byte path allocates).
    std::string_view key = in.substr(0, std::min<size_t>(in.size(), 200));
    FUZZ_CHECK(wsgate::protocol::websocket_accept(key) == ref_accept(key), "websocket_accept");
    set_current_input(nullptr, 0);
    return 0;
}
