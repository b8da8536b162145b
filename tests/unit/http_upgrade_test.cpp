// Tests for protocol/http_upgrade: the sans-I/O WebSocket upgrade parser.
//
// Every request is fed whole, byte by byte and in random slices (seeded
// std::mt19937), each call seeing an exact-size heap copy so ASan catches a read
// past the bytes received. The first decision must be the same for every split
// and must come exactly when the deciding byte arrives (the end of the head, the
// first byte over the limit, or a bare LF).
#include "protocol/http_upgrade.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace wsgate::protocol {
namespace {

constexpr std::string_view k_key = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view k_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// A request line plus header lines; each edit finds a header by its line prefix.
struct req_builder {
    std::string line = "GET /ws HTTP/1.1";
    std::vector<std::string> headers = {
        "Host: example.com:8080", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + std::string(k_key), "Sec-WebSocket-Version: 13"};

    req_builder& set_line(std::string l) {
        line = std::move(l);
        return *this;
    }
    req_builder& drop(std::string_view prefix) {
        std::erase_if(headers, [&](const std::string& h) { return h.starts_with(prefix); });
        return *this;
    }
    req_builder& replace(std::string_view prefix, std::string h) {
        for (auto& x : headers) {
            if (x.starts_with(prefix)) {
                x = std::move(h);
                return *this;
            }
        }
        ADD_FAILURE() << "no header " << prefix;
        return *this;
    }
    req_builder& add(std::string h) {
        headers.push_back(std::move(h));
        return *this;
    }
    std::string str() const {
        std::string s = line + "\r\n";
        for (const auto& h : headers) {
            s += h + "\r\n";
        }
        return s + "\r\n";
    }
};

std::string valid() {
    return req_builder{}.str();
}

// What the core acts on, detached from the input buffer.
struct decision {
    handshake_action action = handshake_action::need_more;
    uint16_t status = 0;
    endpoint target = endpoint::none;
    size_t consumed = 0;
    std::string response;
    std::string reason;
    bool operator==(const decision&) const = default;
};

std::ostream& operator<<(std::ostream& os, const decision& d) {
    return os << "{action=" << int(d.action) << " status=" << d.status << " target="
              << int(d.target) << " consumed=" << d.consumed << " reason=" << d.reason << "}";
}

// Calls process_handshake on an exact-size heap copy of `in`.
decision decide(std::string_view in, const handshake_config& cfg = {}) {
    std::unique_ptr<char[]> copy(new char[in.size()]);
    if (!in.empty()) {
        std::memcpy(copy.get(), in.data(), in.size());
    }
    handshake_result r = process_handshake(std::string_view(copy.get(), in.size()), cfg);
    return {r.action, r.status, r.target, r.consumed, r.response, std::string(r.reason)};
}

// Feeds `in` in pieces ending at `cuts` (increasing, last == size) the way the core
// does: the buffer grows, and the first decision other than need_more ends the feed.
decision feed(std::string_view in, const std::vector<size_t>& cuts,
              const handshake_config& cfg, size_t& decided_at) {
    for (size_t cut : cuts) {
        decision d = decide(in.substr(0, cut), cfg);
        if (d.action != handshake_action::need_more) {
            decided_at = cut;
            return d;
        }
    }
    decided_at = in.size() + 1;
    return {};
}

// Checks whole / byte-by-byte / random slices agree, and that the decision comes
// exactly once byte `at` (1-based count) has arrived. Returns the whole decision.
decision check_splits(std::string_view in, size_t at, const handshake_config& cfg = {}) {
    const decision whole = decide(in, cfg);
    EXPECT_NE(whole.action, handshake_action::need_more);
    std::vector<size_t> cuts;
    for (size_t p = 0; p <= in.size(); ++p) {
        cuts.push_back(p);
    }
    size_t decided_at = 0;
    EXPECT_EQ(feed(in, cuts, cfg, decided_at), whole) << "byte by byte";
    EXPECT_EQ(decided_at, at) << "byte by byte";
    for (uint32_t seed = 1; seed <= 8; ++seed) {
        std::mt19937 rng(seed);
        std::uniform_int_distribution<size_t> step(1, seed * 8);
        cuts.clear();
        for (size_t p = 0; p < in.size();) {
            p = std::min(in.size(), p + step(rng));
            cuts.push_back(p);
        }
        EXPECT_EQ(feed(in, cuts, cfg, decided_at), whole) << "seed " << seed;
        EXPECT_GE(decided_at, at) << "seed " << seed;
    }
    return whole;
}

// Error responses: status line, Content-Length matching the body, Connection: close.
void expect_well_formed_close(const decision& d) {
    const std::string& r = d.response;
    const std::string status_line = "HTTP/1.1 " + std::to_string(d.status) + " ";
    EXPECT_TRUE(r.starts_with(status_line)) << r;
    EXPECT_NE(r.find("\r\nContent-Type: text/plain\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos) << r;
    const size_t end = r.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos);
    const std::string body = r.substr(end + 4);
    EXPECT_NE(r.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"),
              std::string::npos) << r;
    EXPECT_EQ(d.action, handshake_action::respond_and_close);
}

TEST(HttpUpgrade, AcceptMatchesRfc6455Sample) {
    EXPECT_EQ(websocket_accept(k_key), k_accept);
    // Longer than the stack buffer: the fallback path gives the same kind of value.
    EXPECT_EQ(websocket_accept(std::string(100, 'a')).size(), 28u);
}

TEST(HttpUpgrade, ValidUpgrade) {
    const std::string in = req_builder{}
                               .set_line("GET /ws?token=abc&x=1 HTTP/1.1")
                               .add("Origin: https://app.example")
                               .add("Authorization: Bearer t0k")
                               .add("Sec-WebSocket-Protocol: chat, v1")
                               .add("Sec-WebSocket-Extensions: permessage-deflate")
                               .add("X-Other: whatever")
                               .add("Content-Length: 0")
                               .str();
    const decision d = check_splits(in, in.size());
    EXPECT_EQ(d.action, handshake_action::upgrade);
    EXPECT_EQ(d.status, 101);
    EXPECT_EQ(d.target, endpoint::ws);
    EXPECT_EQ(d.reason, "ok");
    EXPECT_EQ(d.consumed, in.size());
    EXPECT_EQ(d.response,
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");

    const handshake_result r = process_handshake(in, {});
    const http_request& q = r.request;
    EXPECT_EQ(q.method, "GET");
    EXPECT_EQ(q.target, "/ws?token=abc&x=1");
    EXPECT_EQ(q.path, "/ws");
    EXPECT_EQ(q.query, "token=abc&x=1");
    EXPECT_EQ(q.host, "example.com:8080");
    EXPECT_EQ(q.origin, "https://app.example");
    EXPECT_EQ(q.authorization, "Bearer t0k");
    EXPECT_EQ(q.sec_websocket_key, k_key);
    EXPECT_EQ(q.sec_websocket_version, "13");
    EXPECT_EQ(q.sec_websocket_protocol, "chat, v1");
    EXPECT_EQ(q.sec_websocket_extensions, "permessage-deflate");
    EXPECT_TRUE(q.upgrade_websocket);
    EXPECT_TRUE(q.connection_upgrade);
    EXPECT_EQ(q.http_minor, 1);
    // Views point into the input.
    EXPECT_GE(q.host.data(), in.data());
    EXPECT_LT(q.host.data(), in.data() + in.size());
}

TEST(HttpUpgrade, AbsentHeadersHaveNullData) {
    const std::string in = req_builder{}.add("Origin:").str();
    const handshake_result r = process_handshake(in, {});
    EXPECT_EQ(r.request.authorization.data(), nullptr);
    EXPECT_EQ(r.request.sec_websocket_protocol.data(), nullptr);
    EXPECT_NE(r.request.origin.data(), nullptr);  // present, empty
    EXPECT_TRUE(r.request.origin.empty());
    EXPECT_TRUE(r.request.query.empty());
}

TEST(HttpUpgrade, Endpoints) {
    handshake_config cfg;
    std::string in = req_builder{}.set_line("GET /echo HTTP/1.1").str();
    EXPECT_EQ(check_splits(in, in.size(), cfg).status, 404);
    cfg.echo = true;
    decision d = check_splits(in, in.size(), cfg);
    EXPECT_EQ(d.status, 101);
    EXPECT_EQ(d.target, endpoint::echo);

    cfg.ws_path = "/live/socket";
    in = req_builder{}.set_line("GET /live/socket?room=a HTTP/1.1").str();
    d = check_splits(in, in.size(), cfg);
    EXPECT_EQ(d.status, 101);
    EXPECT_EQ(d.target, endpoint::ws);
    in = valid();  // /ws is no longer served
    EXPECT_EQ(decide(in, cfg).status, 404);

    for (const char* path : {"/wsx", "/ws/", "/WS", "/", "/healthz/x", "/echo"}) {
        in = req_builder{}.set_line(std::string("GET ") + path + " HTTP/1.1").str();
        d = check_splits(in, in.size());
        EXPECT_EQ(d.status, 404) << path;
        EXPECT_EQ(d.reason, "not found");
        EXPECT_EQ(d.target, endpoint::none);
        EXPECT_NE(d.response.find("404 Not Found: "), std::string::npos);
        expect_well_formed_close(d);
    }
}

TEST(HttpUpgrade, Healthz) {
    const std::vector<std::string> inputs = {
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "GET /healthz?probe=1 HTTP/1.0\r\n\r\n",
        req_builder{}.set_line("GET /healthz HTTP/1.1").str()};
    for (const auto& in : inputs) {
        const decision d = check_splits(in, in.size());
        EXPECT_EQ(d.status, 200);
        EXPECT_EQ(d.target, endpoint::healthz);
        EXPECT_EQ(d.action, handshake_action::respond_and_close);
        EXPECT_EQ(d.consumed, in.size());
        EXPECT_EQ(d.response,
                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                  "Connection: close\r\n\r\nok\n");
    }
}

TEST(HttpUpgrade, Readyz) {
    // 200 "ready" here; the core answers 503 instead once it is draining.
    const std::string in = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    const decision d = check_splits(in, in.size());
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.target, endpoint::readyz);
    EXPECT_EQ(d.action, handshake_action::respond_and_close);
    EXPECT_EQ(d.response,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
              "Connection: close\r\n\r\nready\n");
}

TEST(HttpUpgrade, MetricsIsLeftToTheCore) {
    const std::string in = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    const decision d = check_splits(in, in.size());
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.target, endpoint::metrics);
    EXPECT_EQ(d.action, handshake_action::respond_and_close);
    EXPECT_EQ(d.response, "");  // the core writes it: it needs every worker's counters
}

TEST(HttpUpgrade, CaseInsensitiveNamesTokensAndLists) {
    const std::vector<std::string> ok = {
        req_builder{}.replace("Host", "hOsT: x").str(),
        req_builder{}.replace("Upgrade", "UPGRADE: WebSocket").str(),
        req_builder{}.replace("Connection", "connection: keep-alive, Upgrade").str(),
        req_builder{}.replace("Connection", "Connection: keep-alive,upgrade").str(),
        req_builder{}.replace("Connection", "Connection: UPGRADE , keep-alive").str(),
        req_builder{}.replace("Upgrade", "Upgrade: websocket, foo").str(),
        req_builder{}.replace("Upgrade", "Upgrade: foo/2,, WEBSOCKET").str(),
        req_builder{}.replace("Sec-WebSocket-Key", "SEC-WEBSOCKET-KEY: " + std::string(k_key)).str(),
        req_builder{}.replace("Sec-WebSocket-Version", "sec-websocket-version: 13").str(),
        // Several lines of a list act as one joined list.
        req_builder{}.replace("Connection", "Connection: keep-alive").add("Connection: Upgrade").str(),
        req_builder{}.replace("Upgrade", "Upgrade: h2c").add("upgrade: websocket").str(),
        // Optional whitespace around values.
        req_builder{}.replace("Host", "Host:   example.com \t").str(),
        req_builder{}.replace("Sec-WebSocket-Key", "Sec-WebSocket-Key:\t" + std::string(k_key) + "\t ").str(),
        req_builder{}.replace("Sec-WebSocket-Version", "Sec-WebSocket-Version:13 ").str(),
    };
    for (const auto& in : ok) {
        const decision d = check_splits(in, in.size());
        EXPECT_EQ(d.status, 101) << in;
        EXPECT_NE(d.response.find(k_accept), std::string::npos);
    }
    const std::string padded = req_builder{}.replace("Host", "Host:   example.com \t").str();
    const handshake_result r = process_handshake(padded, {});
    EXPECT_EQ(r.request.host, "example.com");
}

struct refusal_case {
    std::string name;
    std::string in;
    uint16_t status;
    std::string reason;
    std::string body_part;
};

std::vector<refusal_case> refusal_cases() {
    const std::string key = "Sec-WebSocket-Key";
    return {
        {"short key", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZQ=").str(), 400,
         "bad key", "Sec-WebSocket-Key"},
        {"long key", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZQ===").str(), 400,
         "bad key", ""},
        {"17-byte key", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZXg=").str(), 400,
         "bad key", ""},
        {"unpadded key", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZQ").str(), 400,
         "bad key", ""},
        {"key bad char", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZ!==").str(),
         400, "bad key", ""},
        {"key url-safe", req_builder{}.replace(key, key + ": dGhlIHNhbXBsZSBub25jZ_==").str(),
         400, "bad key", ""},
        {"empty key", req_builder{}.replace(key, key + ":").str(), 400, "bad key", ""},
        {"missing key", req_builder{}.drop(key).str(), 400, "missing key",
         "400 Bad Request: missing Sec-WebSocket-Key\n"},
        {"duplicate key", req_builder{}.add(key + ": " + std::string(k_key)).str(), 400,
         "duplicate header", ""},
        {"missing host", req_builder{}.drop("Host").str(), 400, "missing host", "Host"},
        {"duplicate host", req_builder{}.add("host: other").str(), 400, "duplicate header", ""},
        {"missing upgrade", req_builder{}.drop("Upgrade").str(), 400, "missing upgrade", "Upgrade"},
        {"upgrade no token", req_builder{}.replace("Upgrade", "Upgrade: websockets, h2c").str(),
         400, "missing upgrade", ""},
        {"missing connection", req_builder{}.drop("Connection").str(), 400,
         "missing connection", "Connection"},
        {"connection no token", req_builder{}.replace("Connection", "Connection: upgraded").str(),
         400, "missing connection", ""},
        {"http/1.0", req_builder{}.set_line("GET /ws HTTP/1.0").str(), 400, "http version",
         "HTTP/1.1"},
        {"missing version", req_builder{}.drop("Sec-WebSocket-Version").str(), 400,
         "missing version", "Sec-WebSocket-Version"},
        {"key before version", req_builder{}.drop(key).replace("Sec-WebSocket-V",
         "Sec-WebSocket-Version: 8").str(), 400, "missing key", ""},
        {"http/2.0", req_builder{}.set_line("GET /ws HTTP/2.0").str(), 400, "bad request line",
         "request line"},
        {"http/1.10", req_builder{}.set_line("GET /ws HTTP/1.10").str(), 400, "bad request line", ""},
        {"lowercase http", req_builder{}.set_line("GET /ws http/1.1").str(), 400,
         "bad request line", ""},
        {"no version", req_builder{}.set_line("GET /ws").str(), 400, "bad request line", ""},
        {"no target", req_builder{}.set_line("GET  HTTP/1.1").str(), 400, "bad request line", ""},
        {"double space", req_builder{}.set_line("GET  /ws HTTP/1.1").str(), 400,
         "bad request line", ""},
        {"trailing space", req_builder{}.set_line("GET /ws HTTP/1.1 ").str(), 400,
         "bad request line", ""},
        {"tab separator", req_builder{}.set_line("GET\t/ws HTTP/1.1").str(), 400,
         "bad request line", ""},
        {"absolute form", req_builder{}.set_line("GET http://h/ws HTTP/1.1").str(), 400,
         "bad request line", ""},
        {"asterisk", req_builder{}.set_line("OPTIONS * HTTP/1.1").str(), 400, "bad request line", ""},
        {"empty request line", "\r\n" + valid(), 400, "bad request line", ""},
        {"blank head", "\r\n\r\n", 400, "bad request line", ""},
        {"no colon", req_builder{}.add("X-Broken header").str(), 400, "bad header", "header"},
        {"space before colon", req_builder{}.add("X-Space : v").str(), 400, "bad header", ""},
        {"space before colon host", req_builder{}.replace("Host", "Host : x").str(), 400,
         "bad header", ""},
        {"empty name", req_builder{}.add(": v").str(), 400, "bad header", ""},
        {"ctl in value", req_builder{}.add(std::string("X-Ctl: a\x01z")).str(), 400, "bad header", ""},
        {"nul in value", req_builder{}.add(std::string("X-Nul: a\0z", 10)).str(), 400, "bad header",
         ""},
        {"bare cr in value", req_builder{}.add("X-Cr: a\rb").str(), 400, "bad header", ""},
        {"obs-fold space", req_builder{}.add("X-Long: a").add(" continued").str(), 400, "obs-fold",
         "folded"},
        {"obs-fold tab", req_builder{}.add("X-Long: a").add("\tcontinued").str(), 400, "obs-fold",
         ""},
        {"post", req_builder{}.set_line("POST /ws HTTP/1.1").str(), 405, "method", "GET"},
        {"lowercase get", req_builder{}.set_line("get /ws HTTP/1.1").str(), 405, "method", ""},
        {"head healthz", "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method", ""},
        {"post unknown path", req_builder{}.set_line("POST /nope HTTP/1.1").str(), 405, "method", ""},
        {"content-length body", req_builder{}.add("Content-Length: 5").str(), 400, "request body",
         "no body"},
        {"chunked body", req_builder{}.add("Transfer-Encoding: chunked").str(), 400, "request body", ""},
        {"version 8", req_builder{}.replace("Sec-WebSocket-V", "Sec-WebSocket-Version: 8").str(),
         426, "bad version", "13"},
        {"version list", req_builder{}.replace("Sec-WebSocket-V", "Sec-WebSocket-Version: 13, 8").str(),
         426, "bad version", ""},
        {"version empty", req_builder{}.replace("Sec-WebSocket-V", "Sec-WebSocket-Version:").str(),
         426, "bad version", ""},
    };
}

TEST(HttpUpgrade, Refusals) {
    for (const auto& c : refusal_cases()) {
        SCOPED_TRACE(c.name);
        const decision d = check_splits(c.in, c.in.size());
        EXPECT_EQ(d.status, c.status);
        EXPECT_EQ(d.reason, c.reason);
        EXPECT_EQ(d.target, endpoint::none);
        EXPECT_EQ(d.consumed, c.in.size());
        EXPECT_NE(d.response.find(c.body_part), std::string::npos) << d.response;
        expect_well_formed_close(d);
        if (c.status == 405) {
            EXPECT_NE(d.response.find("\r\nAllow: GET\r\n"), std::string::npos);
        }
        if (c.status == 426) {
            EXPECT_NE(d.response.find("\r\nSec-WebSocket-Version: 13\r\n"), std::string::npos);
            EXPECT_NE(d.response.find("\r\nUpgrade: websocket\r\n"), std::string::npos);
        }
    }
}

TEST(HttpUpgrade, ExactErrorResponse) {
    const decision d = decide(req_builder{}.drop("Sec-WebSocket-Key").str());
    EXPECT_EQ(d.response,
              "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 43\r\n"
              "Connection: close\r\n\r\n400 Bad Request: missing Sec-WebSocket-Key\n");
}

TEST(HttpUpgrade, BareLfRejectedWhenItArrives) {
    const std::string in = "GET /ws HTTP/1.1\nHost: x\r\n\r\n";
    const decision d = check_splits(in, in.find('\n') + 1);
    EXPECT_EQ(d.status, 400);
    EXPECT_EQ(d.reason, "bad line ending");
    expect_well_formed_close(d);
    const std::string lf_only = "GET /ws HTTP/1.1\r\nHost: x\n\n";
    EXPECT_EQ(check_splits(lf_only, lf_only.find("\n\n") + 1).status, 400);
}

TEST(HttpUpgrade, TooLarge) {
    handshake_config cfg;
    const std::string base = valid();
    cfg.max_header_bytes = base.size();
    // A head exactly at the limit is fine.
    EXPECT_EQ(check_splits(base, base.size(), cfg).status, 101);
    // Incomplete and over the limit: 431 on the first byte past it, not before.
    const std::string open_ended = base.substr(0, base.size() - 2) + std::string(100, 'x');
    EXPECT_EQ(decide(open_ended.substr(0, cfg.max_header_bytes), cfg).action,
              handshake_action::need_more);
    decision d = check_splits(open_ended, cfg.max_header_bytes + 1, cfg);
    EXPECT_EQ(d.status, 431);
    EXPECT_EQ(d.reason, "too large");
    expect_well_formed_close(d);
    // Complete, but the head is one byte over the limit.
    const std::string big = req_builder{}.add("X-Pad: a").str();
    cfg.max_header_bytes = big.size() - 1;
    d = check_splits(big, big.size(), cfg);
    EXPECT_EQ(d.status, 431);
    EXPECT_EQ(d.consumed, 0u);
    // Default limit, padding header far over it.
    const std::string huge = req_builder{}.add("X-Pad: " + std::string(10000, 'a')).str();
    d = check_splits(huge, 8193);
    EXPECT_EQ(d.status, 431);
    // Pipelined bytes past a small head do not count towards the limit.
    cfg.max_header_bytes = base.size();
    EXPECT_EQ(decide(base + std::string(50000, '\x82'), cfg).status, 101);
}

TEST(HttpUpgrade, PipelinedBytesLeftAlone) {
    const std::string head = valid();
    // A masked text frame, then bytes that would be errors inside a head.
    const std::string frames = std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11) +
                               "\n\nGET / HTTP/1.0\n\r\n\r\n" + std::string(1, '\0');
    const std::string in = head + frames;
    const decision d = check_splits(in, head.size());
    EXPECT_EQ(d.status, 101);
    EXPECT_EQ(d.consumed, head.size());
    EXPECT_EQ(std::string_view(in).substr(d.consumed), frames);

    const std::string h = "GET /healthz HTTP/1.1\r\n\r\n";
    EXPECT_EQ(check_splits(h + "junk\n", h.size()).consumed, h.size());
}

TEST(HttpUpgrade, EveryStrictPrefixNeedsMore) {
    const std::string in = valid();
    for (size_t p = 0; p < in.size(); ++p) {
        const decision d = decide(in.substr(0, p));
        EXPECT_EQ(d.action, handshake_action::need_more) << p;
        EXPECT_EQ(d.status, 0) << p;
        EXPECT_TRUE(d.response.empty()) << p;
    }
}

TEST(HttpUpgrade, ParseHttpRequest) {
    const std::string in = valid() + "tail";
    http_request req;
    EXPECT_EQ(parse_http_request(in, req), static_cast<long>(in.size() - 4));
    EXPECT_EQ(req.path, "/ws");
    EXPECT_EQ(parse_http_request(std::string_view(in).substr(0, 30), req), 0);
    EXPECT_EQ(parse_http_request({}, req), 0);
    EXPECT_EQ(parse_http_request("GET /ws HTTP/1.1\n", req), -1);
    EXPECT_EQ(parse_http_request("GET ws HTTP/1.1\r\n\r\n", req), -1);
    EXPECT_EQ(parse_http_request(req_builder{}.add("Host: y").str(), req), -1);
    // No decisions: a POST without upgrade headers still parses.
    EXPECT_GT(parse_http_request("POST /x?y HTTP/1.0\r\nA: b\r\n\r\n", req), 0);
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.query, "y");
    EXPECT_EQ(req.http_minor, 0);
    EXPECT_EQ(req.host.data(), nullptr);
}

TEST(HttpUpgrade, ResponseHelpers) {
    EXPECT_EQ(http_error_response(401, "bad token", "WWW-Authenticate: Bearer\r\n"),
              "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 28\r\n"
              "Connection: close\r\nWWW-Authenticate: Bearer\r\n\r\n401 Unauthorized: bad token\n");
    EXPECT_EQ(http_error_response(403, ""),
              "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
              "Connection: close\r\n\r\n403 Forbidden\n");
    EXPECT_EQ(upgrade_response(k_key, "Sec-WebSocket-Protocol: chat\r\n"),
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Sec-WebSocket-Protocol: chat\r\n\r\n");
    EXPECT_EQ(http_status_text(431), "Request Header Fields Too Large");
    EXPECT_EQ(http_status_text(599), "Unknown");
}

}  // namespace
}  // namespace wsgate::protocol
