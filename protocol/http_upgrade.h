// HTTP/1.1 request parsing and answers for the WebSocket upgrade (RFC 6455 section 4.2).
//
// Sans-I/O: the core accumulates the bytes a new connection sends and calls
// process_handshake() with everything received so far. The result says whether
// more bytes are needed, or which response to send and what happens next.
// Bytes after the request head (a client that pipelines its first frames right
// behind the request) are not part of the request: `consumed` tells where they start.
#pragma once

#include "protocol/deflate.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsgate::protocol {

// Which endpoints exist and how large a request head may be.
struct handshake_config {
    std::string ws_path = "/ws";   // the WebSocket endpoint for clients
    bool echo = false;             // also serve /echo (conformance and benchmarks)
    size_t max_header_bytes = 8192;  // request line + headers; larger → 431
    deflate_config deflate;        // permessage-deflate offers (protocol/deflate.h)
    // Development mode (--demo): GET / serves demo_page (HTML) and GET /wsgate.mjs
    // serves demo_script (the JS client). Empty: both are 404.
    std::string_view demo_page;
    std::string_view demo_script;
};

// What the request asked for, once it parsed.
enum class endpoint : uint8_t {
    none,     // no endpoint (error responses)
    ws,       // WebSocket upgrade on ws_path
    echo,     // WebSocket upgrade on /echo
    healthz,  // GET /healthz
    readyz,   // GET /readyz (the core answers 503 instead while draining)
    metrics,  // GET /metrics (the core writes the response: Prometheus text)
    demo,     // GET / or /wsgate.mjs with --demo (static, answered here)
};

enum class handshake_action : uint8_t {
    need_more,         // request head incomplete and under the limit: read more
    upgrade,           // send `response` (101); the connection is now a WebSocket
    respond_and_close  // send `response`, then close the connection
};

// A parsed request head. Views point into the buffer given to process_handshake()
// and are valid as long as it is. A header that was absent leaves its view
// default-constructed (data() == nullptr); one present with an empty value has a
// non-null data() and size 0. Values are trimmed of surrounding spaces and tabs.
struct http_request {
    std::string_view method;
    std::string_view target;   // as sent: path plus optional ?query
    std::string_view path;     // target without the query
    std::string_view query;    // after '?', without it; empty when none
    std::string_view host;
    std::string_view origin;
    std::string_view authorization;
    std::string_view sec_websocket_key;
    std::string_view sec_websocket_version;
    std::string_view sec_websocket_protocol;
    std::string_view sec_websocket_extensions;  // the first Sec-WebSocket-Extensions header
    std::string_view extension_headers[4];      // every one, up to 4 (more are ignored)
    uint8_t extension_count = 0;
    bool upgrade_websocket = false;   // Upgrade header lists the token "websocket" (case-insensitive)
    bool connection_upgrade = false;  // Connection header lists the token "upgrade" (case-insensitive)
    int http_minor = 1;               // HTTP/1.x
    bool has_body = false;            // Content-Length other than 0, or Transfer-Encoding (refused: 400)
};

struct handshake_result {
    handshake_action action = handshake_action::need_more;
    uint16_t status = 0;       // HTTP status sent (101, 200, 400, 404, 405, 426, 431)
    endpoint target = endpoint::none;
    size_t consumed = 0;       // length of the request head including the final CRLF CRLF
    std::string response;      // full HTTP response bytes to send
    deflate_params deflate;    // upgrades: what permessage-deflate negotiated
    std::string_view reason;   // short text for logs/metrics ("bad key", "version", ...)
    http_request request;      // filled when the head parsed (views into the input)
};

// Parse the request head at the front of `in`; decide and build the response.
// Checks, in this order: head complete (431 if over the limit without one) →
// syntax (400) → method GET (405, with Allow: GET) → path known (404) →
// /healthz (200, "ok") → Upgrade/Connection tokens, HTTP/1.1, Host, key
// (400) → Sec-WebSocket-Version 13 (426 with Sec-WebSocket-Version: 13) → 101.
handshake_result process_handshake(std::string_view in, const handshake_config& cfg);

// Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)).
std::string websocket_accept(std::string_view key);

// Parse just the head (no decisions). Returns bytes consumed (> 0) when complete,
// 0 when incomplete, -1 on a syntax error. A duplicate Host, Sec-WebSocket-Key or
// Sec-WebSocket-Version header is a syntax error (a single view cannot hold both).
long parse_http_request(std::string_view in, http_request& out);

// Reason phrase for a status code ("Not Found"); "Unknown" for codes not listed.
std::string_view http_status_text(uint16_t status);

// A complete response that closes the connection: status line, Content-Type:
// text/plain, Content-Length, Connection: close, `extra_headers` (each line ending
// in CRLF), then the body "<code> <text>: <detail>\n" (": <detail>" left out when
// `detail` is empty). For responses the core decides itself (401, 403, 503).
std::string http_error_response(uint16_t status, std::string_view detail,
                                std::string_view extra_headers = {});

// The 101 response for `key`, with `extra_headers` (each line ending in CRLF, e.g.
// Sec-WebSocket-Protocol or Sec-WebSocket-Extensions) before the final CRLF.
// process_handshake() builds it with no extra headers.
std::string upgrade_response(std::string_view key, std::string_view extra_headers = {});

}  // namespace wsgate::protocol
