// HTTP/1.1 upgrade request parsing and responses (RFC 6455 section 4.2, RFC 9112).
//
// Two steps over the bytes received so far, both O(head length):
//   1. find_head_end(): memchr for LF inside the first max_header_bytes only, so a
//      client that pipelines frames (or floods) never makes us scan past the limit.
//      Every LF must follow a CR; the head ends at the first CRLF CRLF.
//   2. parse_head(): request line, then one header line at a time, storing views.
// Nothing is allocated except the response string. Each decision depends only on a
// prefix of the byte stream, so it is the same however the bytes were split.
#include "protocol/http_upgrade.h"

#include "protocol/http_tokens.h"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

namespace wsgate::protocol {
namespace {

constexpr std::string_view k_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
constexpr size_t k_accept_len = 28;  // base64 of a 20-byte SHA-1
constexpr std::string_view k_b64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Character classes (RFC 9110 section 5.6.2 tchar; field-value bytes).
enum : uint8_t { c_tchar = 1, c_vchar = 2, c_field = 4, c_b64 = 8 };

constexpr std::array<uint8_t, 256> make_classes() {
    std::array<uint8_t, 256> t{};
    for (int c = 0x21; c <= 0x7e; ++c) {
        t[c] |= c_vchar | c_field;
    }
    for (int c = 0x80; c <= 0xff; ++c) {
        t[c] |= c_field;  // obs-text
    }
    t[' '] |= c_field;
    t['\t'] |= c_field;
    for (char c : std::string_view("!#$%&'*+-.^_`|~0123456789")) {
        t[static_cast<uint8_t>(c)] |= c_tchar;
    }
    for (int c = 'a'; c <= 'z'; ++c) {
        t[c] |= c_tchar;
        t[c - 'a' + 'A'] |= c_tchar;
    }
    for (char c : k_b64) {
        t[static_cast<uint8_t>(c)] |= c_b64;
    }
    return t;
}
constexpr std::array<uint8_t, 256> k_classes = make_classes();

inline bool has_class(char c, uint8_t cls) {
    return (k_classes[static_cast<uint8_t>(c)] & cls) != 0;
}

using http::is_ows;
using http::iequals;
using http::trim_ows;

// Does the comma-separated `list` hold `lower` (case-insensitive)? Empty elements
// ("a,,b") are allowed, as RFC 9110 section 5.6.1 asks of recipients.
bool has_token(std::string_view list, std::string_view lower) {
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        if (comma == std::string_view::npos) {
            comma = list.size();
        }
        if (iequals(trim_ows(list.substr(pos, comma - pos)), lower)) {
            return true;
        }
        pos = comma + 1;
    }
    return false;
}

enum class parse_error : uint8_t {
    none,
    incomplete,
    bad_line_ending,
    bad_request_line,
    bad_header,
    obs_fold,
    duplicate_header,
};

struct head_scan {
    parse_error error;
    size_t end;  // head length including CRLF CRLF when error == none
};

// Look for the end of the head in the first `limit` bytes. Cost: one memchr pass.
head_scan find_head_end(std::string_view in, size_t limit) {
    const size_t n = std::min(in.size(), limit);
    const char* base = in.data();
    size_t pos = 0;
    while (pos < n) {
        const void* hit = std::memchr(base + pos, '\n', n - pos);
        if (hit == nullptr) {
            break;
        }
        const size_t i = static_cast<size_t>(static_cast<const char*>(hit) - base);
        if (i == 0 || base[i - 1] != '\r') {
            return {parse_error::bad_line_ending, 0};
        }
        // base[i - 3] is '\r': the LF at i - 2 passed the check above.
        if (i >= 3 && base[i - 2] == '\n') {
            return {parse_error::none, i + 1};
        }
        pos = i + 1;
    }
    return {parse_error::incomplete, 0};
}

// METHOD SP request-target SP HTTP/1.d
bool parse_request_line(std::string_view line, http_request& out) {
    size_t i = 0;
    while (i < line.size() && has_class(line[i], c_tchar)) {
        ++i;
    }
    if (i == 0 || i >= line.size() || line[i] != ' ') {
        return false;
    }
    out.method = line.substr(0, i);
    const size_t t = ++i;
    while (i < line.size() && has_class(line[i], c_vchar)) {
        ++i;
    }
    if (i == t || i >= line.size() || line[i] != ' ') {
        return false;
    }
    out.target = line.substr(t, i - t);
    if (out.target[0] != '/') {
        return false;  // origin-form only: no absolute-form, no '*'
    }
    const std::string_view version = line.substr(i + 1);
    if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '0' ||
        version[7] > '9') {
        return false;
    }
    out.http_minor = version[7] - '0';
    const size_t q = out.target.find('?');
    if (q == std::string_view::npos) {
        out.path = out.target;
        out.query = {};
    } else {
        out.path = out.target.substr(0, q);
        out.query = out.target.substr(q + 1);
    }
    return true;
}

parse_error set_once(std::string_view& field, std::string_view value) {
    if (field.data() != nullptr) {
        return parse_error::duplicate_header;
    }
    field = value;
    return parse_error::none;
}

void set_first(std::string_view& field, std::string_view value) {
    if (field.data() == nullptr) {
        field = value;
    }
}

// Keep the headers the gateway uses; the others are skipped. Names of interest all
// have different lengths, so one length switch plus one compare finds them.
parse_error store_header(std::string_view name, std::string_view value, http_request& out) {
    switch (name.size()) {
    case 4:
        if (iequals(name, "host")) {
            return set_once(out.host, value);
        }
        break;
    case 6:
        if (iequals(name, "origin")) {
            set_first(out.origin, value);
        }
        break;
    case 7:
        if (iequals(name, "upgrade") && has_token(value, "websocket")) {
            out.upgrade_websocket = true;  // several lines act as one joined list
        }
        break;
    case 10:
        if (iequals(name, "connection") && has_token(value, "upgrade")) {
            out.connection_upgrade = true;
        }
        break;
    case 13:
        if (iequals(name, "authorization")) {
            set_first(out.authorization, value);
        }
        break;
    case 14:
        if (iequals(name, "content-length") && trim_ows(value) != "0") {
            out.has_body = true;
        }
        break;
    case 17:
        if (iequals(name, "sec-websocket-key")) {
            return set_once(out.sec_websocket_key, value);
        }
        if (iequals(name, "transfer-encoding")) {
            out.has_body = true;
        }
        break;
    case 21:
        if (iequals(name, "sec-websocket-version")) {
            return set_once(out.sec_websocket_version, value);
        }
        break;
    case 22:
        if (iequals(name, "sec-websocket-protocol")) {
            set_first(out.sec_websocket_protocol, value);
        }
        break;
    case 24:
        if (iequals(name, "sec-websocket-extensions")) {
            set_first(out.sec_websocket_extensions, value);
            if (out.extension_count < std::size(out.extension_headers)) {
                out.extension_headers[out.extension_count++] = value;
            }
        }
        break;
    default:
        break;
    }
    return parse_error::none;
}

// field-name ":" OWS field-value OWS
parse_error parse_header_line(std::string_view line, http_request& out) {
    if (is_ows(line[0])) {
        return parse_error::obs_fold;  // RFC 9112 section 5.2: reject with 400
    }
    size_t i = 0;
    while (i < line.size() && has_class(line[i], c_tchar)) {
        ++i;
    }
    // Also rejects whitespace between the name and ':' (RFC 9112 section 5.1).
    if (i == 0 || i >= line.size() || line[i] != ':') {
        return parse_error::bad_header;
    }
    for (size_t k = i + 1; k < line.size(); ++k) {
        if (!has_class(line[k], c_field)) {
            return parse_error::bad_header;  // CR, NUL, DEL and other controls
        }
    }
    return store_header(line.substr(0, i), trim_ows(line.substr(i + 1)), out);
}

// `head` ends with CRLF CRLF and every LF in it follows a CR (find_head_end).
parse_error parse_head(std::string_view head, http_request& out) {
    out = http_request{};
    size_t pos = 0;
    bool first = true;
    for (;;) {
        const size_t lf = head.find('\n', pos);
        const std::string_view line = head.substr(pos, lf - 1 - pos);
        pos = lf + 1;
        if (first) {
            if (!parse_request_line(line, out)) {
                return parse_error::bad_request_line;
            }
            first = false;
            continue;
        }
        if (line.empty()) {
            return parse_error::none;  // the blank line that ends the head
        }
        const parse_error e = parse_header_line(line, out);
        if (e != parse_error::none) {
            return e;
        }
    }
}

// 16 random bytes in base64: 22 alphabet characters and "==". The 4 unused bits
// of the last character are not checked, as common decoders do not check them.
bool valid_key(std::string_view key) {
    if (key.size() != 24 || key[22] != '=' || key[23] != '=') {
        return false;
    }
    for (size_t i = 0; i < 22; ++i) {
        if (!has_class(key[i], c_b64)) {
            return false;
        }
    }
    return true;
}

size_t base64_encode(const unsigned char* in, size_t n, char* out) {
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
        out[o++] = k_b64[(v >> 18) & 63];
        out[o++] = k_b64[(v >> 12) & 63];
        out[o++] = k_b64[(v >> 6) & 63];
        out[o++] = k_b64[v & 63];
    }
    if (i < n) {
        const uint32_t v = (uint32_t{in[i]} << 16) | (i + 1 < n ? uint32_t{in[i + 1]} << 8 : 0);
        out[o++] = k_b64[(v >> 18) & 63];
        out[o++] = k_b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? k_b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

// Writes the 28-character accept value. Keys up to 64 bytes (every valid one) hash
// from a stack buffer; longer ones, only reachable through websocket_accept(), allocate.
void compute_accept(std::string_view key, char* out) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    char buf[64 + k_guid.size()];
    if (key.size() <= 64) {
        std::memcpy(buf, key.data(), key.size());
        std::memcpy(buf + key.size(), k_guid.data(), k_guid.size());
        SHA1(reinterpret_cast<const unsigned char*>(buf), key.size() + k_guid.size(), digest);
    } else {
        std::string joined;
        joined.reserve(key.size() + k_guid.size());
        joined.append(key).append(k_guid);
        SHA1(reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), digest);
    }
    base64_encode(digest, sizeof(digest), out);
}

constexpr std::string_view k_healthz_response =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    "Connection: close\r\n\r\nok\n";

constexpr std::string_view k_readyz_response =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
    "Connection: close\r\n\r\nready\n";

// One refusal: status, short reason for logs/metrics, body detail, extra headers.
struct refusal {
    uint16_t status;
    std::string_view reason;
    std::string_view detail;
    std::string_view extra_headers = {};
};

constexpr refusal k_too_large{431, "too large", "request head too large"};
constexpr refusal k_bad_line_ending{400, "bad line ending", "line not ended by CRLF"};
constexpr refusal k_bad_request_line{400, "bad request line", "malformed request line"};
constexpr refusal k_bad_header{400, "bad header", "malformed header line"};
constexpr refusal k_obs_fold{400, "obs-fold", "folded header line"};
constexpr refusal k_duplicate_header{400, "duplicate header",
                                     "duplicate Host or Sec-WebSocket-* header"};
constexpr refusal k_method{405, "method", "only GET is allowed", "Allow: GET\r\n"};
constexpr refusal k_not_found{404, "not found", "no such endpoint"};
constexpr refusal k_no_upgrade{400, "missing upgrade", "Upgrade header lacks websocket"};
constexpr refusal k_no_connection{400, "missing connection", "Connection header lacks upgrade"};
constexpr refusal k_http_version{400, "http version", "WebSocket needs HTTP/1.1"};
constexpr refusal k_no_host{400, "missing host", "missing Host"};
constexpr refusal k_no_key{400, "missing key", "missing Sec-WebSocket-Key"};
constexpr refusal k_body{400, "request body", "an upgrade request carries no body"};
constexpr refusal k_bad_key{400, "bad key", "Sec-WebSocket-Key is not 16 bytes of base64"};
constexpr refusal k_no_version{400, "missing version", "missing Sec-WebSocket-Version"};
constexpr refusal k_bad_version{426, "bad version", "Sec-WebSocket-Version must be 13",
                                "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"};

handshake_result& refuse(handshake_result& r, const refusal& f) {
    r.action = handshake_action::respond_and_close;
    r.status = f.status;
    r.target = endpoint::none;
    r.reason = f.reason;
    r.response = http_error_response(f.status, f.detail, f.extra_headers);
    return r;
}

const refusal& refusal_for(parse_error e) {
    switch (e) {
    case parse_error::bad_line_ending:
        return k_bad_line_ending;
    case parse_error::bad_header:
        return k_bad_header;
    case parse_error::obs_fold:
        return k_obs_fold;
    case parse_error::duplicate_header:
        return k_duplicate_header;
    default:
        return k_bad_request_line;
    }
}

}  // namespace

std::string_view http_status_text(uint16_t status) {
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

std::string http_error_response(uint16_t status, std::string_view detail,
                                std::string_view extra_headers) {
    const std::string_view text = http_status_text(status);
    char code_buf[8];
    const auto code_end = std::to_chars(code_buf, code_buf + sizeof(code_buf), status).ptr;
    const std::string_view code(code_buf, static_cast<size_t>(code_end - code_buf));
    const size_t body_len =
        code.size() + 1 + text.size() + (detail.empty() ? 0 : 2 + detail.size()) + 1;
    char len_buf[24];
    const auto len_end = std::to_chars(len_buf, len_buf + sizeof(len_buf), body_len).ptr;
    const std::string_view len(len_buf, static_cast<size_t>(len_end - len_buf));

    constexpr std::string_view h1 = "HTTP/1.1 ";
    constexpr std::string_view h2 = "\r\nContent-Type: text/plain\r\nContent-Length: ";
    constexpr std::string_view h3 = "\r\nConnection: close\r\n";
    std::string out;
    out.reserve(h1.size() + code.size() + 1 + text.size() + h2.size() + len.size() + h3.size() +
                extra_headers.size() + 2 + body_len);
    out.append(h1).append(code).append(1, ' ').append(text);
    out.append(h2).append(len).append(h3).append(extra_headers).append("\r\n");
    out.append(code).append(1, ' ').append(text);
    if (!detail.empty()) {
        out.append(": ").append(detail);
    }
    out.append(1, '\n');
    return out;
}

std::string upgrade_response(std::string_view key, std::string_view extra_headers) {
    constexpr std::string_view head =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: ";
    char accept[k_accept_len];
    compute_accept(key, accept);
    std::string out;
    out.reserve(head.size() + k_accept_len + 2 + extra_headers.size() + 2);
    out.append(head).append(accept, k_accept_len).append("\r\n");
    out.append(extra_headers).append("\r\n");
    return out;
}

std::string websocket_accept(std::string_view key) {
    char accept[k_accept_len];
    compute_accept(key, accept);
    return std::string(accept, k_accept_len);
}

long parse_http_request(std::string_view in, http_request& out) {
    const head_scan s = find_head_end(in, in.size());
    if (s.error == parse_error::incomplete) {
        return 0;
    }
    if (s.error != parse_error::none ||
        parse_head(in.substr(0, s.end), out) != parse_error::none) {
        return -1;
    }
    return static_cast<long>(s.end);
}

handshake_result process_handshake(std::string_view in, const handshake_config& cfg) {
    handshake_result r;
    // Scanning only max_header_bytes makes "no head yet" and "head longer than the
    // limit" the same case: 431 once more than the limit has arrived.
    const head_scan s = find_head_end(in, cfg.max_header_bytes);
    if (s.error == parse_error::incomplete) {
        if (in.size() > cfg.max_header_bytes) {
            return refuse(r, k_too_large);
        }
        return r;  // need_more
    }
    if (s.error != parse_error::none) {
        return refuse(r, refusal_for(s.error));
    }
    r.consumed = s.end;
    const parse_error e = parse_head(in.substr(0, s.end), r.request);
    if (e != parse_error::none) {
        return refuse(r, refusal_for(e));
    }
    const http_request& req = r.request;
    if (req.method != "GET") {
        return refuse(r, k_method);
    }
    endpoint target = endpoint::none;
    if (req.path == cfg.ws_path) {
        target = endpoint::ws;
    } else if (cfg.echo && req.path == "/echo") {
        target = endpoint::echo;
    } else if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/metrics") {
        // Plain GETs answered 200 and closed (the core turns /readyz into 503 while
        // draining and writes the /metrics response, which needs every worker's counters).
        r.action = handshake_action::respond_and_close;
        r.status = 200;
        if (req.path == "/metrics") {
            r.target = endpoint::metrics;
            r.reason = "metrics";
            return r;
        }
        bool ready = req.path == "/readyz";
        r.target = ready ? endpoint::readyz : endpoint::healthz;
        r.reason = ready ? "readyz" : "healthz";
        r.response.assign(ready ? k_readyz_response : k_healthz_response);
        return r;
    } else if (!cfg.demo_page.empty() && (req.path == "/" || req.path == "/index.html" || req.path == "/wsgate.mjs")) {
        bool page = req.path != "/wsgate.mjs";
        std::string_view body = page ? cfg.demo_page : cfg.demo_script;
        r.action = handshake_action::respond_and_close;
        r.status = 200;
        r.target = endpoint::demo;
        r.reason = "demo";
        r.response = "HTTP/1.1 200 OK\r\nContent-Type: ";
        r.response += page ? "text/html; charset=utf-8" : "text/javascript; charset=utf-8";
        r.response += "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
                      "Content-Security-Policy: default-src 'self'; script-src 'self' 'unsafe-inline'; "
                      "style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:\r\n"
                      "Connection: close\r\n\r\n";
        r.response += body;
        return r;
    } else {
        return refuse(r, k_not_found);
    }
    if (!req.upgrade_websocket) {
        return refuse(r, k_no_upgrade);
    }
    if (!req.connection_upgrade) {
        return refuse(r, k_no_connection);
    }
    if (req.http_minor < 1) {
        return refuse(r, k_http_version);  // RFC 6455: HTTP/1.1 or higher
    }
    if (req.host.data() == nullptr) {
        return refuse(r, k_no_host);
    }
    if (req.has_body) {
        // Its bytes would otherwise be taken for the client's first WebSocket frames.
        return refuse(r, k_body);
    }
    if (req.sec_websocket_key.data() == nullptr) {
        return refuse(r, k_no_key);
    }
    if (!valid_key(req.sec_websocket_key)) {
        return refuse(r, k_bad_key);
    }
    if (req.sec_websocket_version.data() == nullptr) {
        return refuse(r, k_no_version);
    }
    if (req.sec_websocket_version != "13") {
        return refuse(r, k_bad_version);
    }
    r.action = handshake_action::upgrade;
    r.status = 101;
    r.target = target;
    r.reason = "ok";
    std::string ext = negotiate_permessage_deflate(
        std::span<const std::string_view>(req.extension_headers, req.extension_count), cfg.deflate, r.deflate);
    if (ext.empty()) {
        r.response = upgrade_response(req.sec_websocket_key);
    } else {
        r.response = upgrade_response(req.sec_websocket_key, "Sec-WebSocket-Extensions: " + ext + "\r\n");
    }
    return r;
}

}  // namespace wsgate::protocol
