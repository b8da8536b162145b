// ws_handshake.h — client side of the RFC 6455 opening handshake.
//
// An independent implementation (the load generator must not share code with
// the gateway it measures): builds the GET/Upgrade request with a random
// Sec-WebSocket-Key, and checks the response: status 101, Upgrade: websocket,
// and Sec-WebSocket-Accept == base64(SHA-1(key + GUID)). SHA-1 and base64 come
// from OpenSSL's libcrypto.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace wsbench {

class rng;

// Base64 of SHA-1 over key + RFC 6455 GUID: 28 characters.
using accept_token = std::array<char, 28>;

struct handshake_request {
    std::string bytes;     // the full HTTP request
    accept_token expected; // what the server must answer
};

[[nodiscard]] handshake_request make_handshake_request(const std::string& host_header,
                                                       const std::string& path, rng& random);

// Header lines ("Name: value\r\n" each) added to every upgrade request from now
// on (set once, before any connection: `--header`).
void set_extra_request_headers(std::string lines);

[[nodiscard]] accept_token compute_accept(const char* key, size_t key_len);

enum class handshake_status {
    incomplete, // need more bytes
    ok,         // 101 with a valid accept; `consumed` bytes belong to the response
    failed,     // any other answer; `error` says why
};

struct handshake_result {
    handshake_status status = handshake_status::incomplete;
    size_t consumed = 0;      // header bytes including the final CRLFCRLF
    const char* error = "";   // static string, set when failed
    int http_status = 0;      // parsed status code, 0 if not parsed
};

// Largest response header we accept before declaring failure.
constexpr size_t max_response_header = 16 * 1024;

[[nodiscard]] handshake_result parse_handshake_response(const uint8_t* data, size_t len,
                                                        const accept_token& expected);

} // namespace wsbench
