// Authentication of the WebSocket upgrade (SPEC section 2): Origin allow-list, then
// an HS256 JWT (or, without a secret, an anonymous development identity).
//
// Sans-I/O: authenticate() looks at an already parsed http_request (views into the
// request head) plus the configuration, the current time and a random value the
// caller supplies, and says whether to upgrade and with which identity. It reads
// only `origin`, `authorization` and `query` of the request. The core turns a
// refusal into http_error_response(status, auth_failure_name(failure)) and closes.
//
// Order of the checks, and what each failure answers:
//   1. Origin (when cfg.allowed_origins is non-empty): the Origin header must equal
//      one entry, ASCII case-insensitive, or an entry is "*". Missing → 403 too.
//      Checked first, so a foreign page learns nothing about tokens (403 beats 401).
//   2a. No secret (development): anonymous. `user` query parameter, percent-decoded,
//      1..max_name_bytes bytes of valid UTF-8 (else 400 bad_user), or generated
//      "anon-" + 16 lowercase hex digits of anon_random. Any room, pub, no admin.
//      Tokens are ignored in this mode.
//   2b. Secret set: token from `Authorization: Bearer <token>` (scheme
//      case-insensitive, one or more spaces), else from the `token` query parameter.
//      A header with another scheme (Basic ...) is ignored; an empty token counts
//      as none. No token → 401 missing_token; any verification failure → 401.
//
// JWT verification (verify_jwt_hs256), each step before the next:
//   - at most k_max_token_bytes, exactly three segments; the header and the
//     signature are base64url (strict alphabet, no '=' padding, canonical: unused
//     trailing bits zero), the header non-empty → else malformed. The payload
//     segment is only decoded after the signature matched (so a forged token with
//     a broken payload is logged as bad_signature, not malformed);
//   - header: a JSON object; "crit" present → malformed; "typ", if present, the
//     string "JWT" (any case) → else malformed; "alg" exactly "HS256" → else bad_alg;
//   - signature: 32 bytes, equal (CRYPTO_memcmp) to HMAC-SHA256(secret,
//     "<header>.<payload>") → else bad_signature. An empty secret never verifies.
//     The payload is not parsed before this point;
//   - payload: a JSON object. sub: string (absent or empty → missing_sub; longer
//     than max_name_bytes or invalid UTF-8 → malformed); exp, nbf: numbers
//     (fractions floored, huge values saturate); rooms: array of strings; pub,
//     admin: booleans. A wrong type → malformed. A claim among these appearing
//     twice (also when spelled with \u escapes) → malformed. Other claims are
//     ignored; On-Demand checks their values only structurally (the payload is
//     signed, so it comes from the issuer).
//   - time: exp <= now - leeway → expired; nbf > now + leeway → not_yet_valid.
//     No exp means no expiry.
// "rooms": [] means the user may join no room; no "rooms" means any room.
//
// Cost: one simdjson On-Demand parser per call (it allocates about the size of the
// larger segment; an upgrade happens once per connection, so no pooling), a stack
// buffer for the decoded segments, and the strings of the resulting identity.
// No exceptions.
#pragma once

#include "protocol/http_upgrade.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::protocol {

// Longer tokens are refused as malformed before any decoding.
inline constexpr size_t k_max_token_bytes = 8192;

struct auth_config {
    std::string jwt_secret;                    // HS256 key; empty: anonymous development mode
    unsigned leeway_s = 30;                    // clock skew allowed on exp and nbf, seconds
    std::vector<std::string> allowed_origins;  // exact origins ("https://app.example.com") or "*"; empty: no check
};

// What a connection may do, decided once at upgrade.
struct identity {
    std::string user;                // token `sub`, or the anonymous user id
    std::vector<std::string> rooms;  // join patterns ('*' globs); used when !any_room
    bool any_room = true;            // no `rooms` claim (or anonymous): every room may be joined
    bool pub = false;                // may publish to rooms it joined
    bool admin = false;              // may broadcast to everyone

    // any_room, or `room` matches one of `rooms` (glob_match). Cost: O(patterns).
    bool may_join(std::string_view room) const;
};

enum class auth_failure : uint8_t {
    none,                // allowed
    origin_not_allowed,  // 403: Origin missing or not in the allow-list
    missing_token,       // 401: no Bearer header token and no `token` parameter
    malformed,           // 401: encoding, JSON, claim types, sizes, duplicate claims, crit, typ
    bad_alg,             // 401: header alg is not exactly "HS256" (none, HS512, absent ...)
    bad_signature,       // 401: signature is not HMAC-SHA256 of the token with the secret
    expired,             // 401: exp <= now - leeway
    not_yet_valid,       // 401: nbf > now + leeway
    missing_sub,         // 401: no `sub` claim, or an empty one
    bad_user,            // 400: anonymous `user` parameter empty, too long, bad escape or not UTF-8
};

// Stable snake_case name ("bad_signature"), for logs, metrics and response bodies.
std::string_view auth_failure_name(auth_failure f);

struct auth_result {
    uint16_t status = 0;                        // 0: allowed; else 400, 401 or 403
    auth_failure failure = auth_failure::none;  // why, when status != 0
    identity who;                               // filled when allowed
};

// Decide the upgrade. now_s: Unix time in seconds. anon_random: any 64-bit random
// value, used only to generate an anonymous id.
auth_result authenticate(const http_request& req, const auth_config& cfg, int64_t now_s,
                         uint64_t anon_random);

// Claims read from a verified token. Other claims are not kept.
struct jwt_claims {
    std::string sub;                 // user id, 1..max_name_bytes bytes of UTF-8
    bool has_exp = false;            // exp claim present
    int64_t exp = 0;                 // NumericDate, seconds
    bool has_nbf = false;            // nbf claim present
    int64_t nbf = 0;                 // NumericDate, seconds
    bool has_rooms = false;          // rooms claim present (possibly empty)
    std::vector<std::string> rooms;  // join patterns
    bool pub = false;                // absent: false
    bool admin = false;              // absent: false
};

// Verify an HS256 compact JWT and read its claims (see the header comment for the
// rules and their order). `out` is complete only when none is returned.
auth_failure verify_jwt_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                              unsigned leeway_s, jwt_claims& out);

// Does `s` match `pattern`, where '*' matches any run of bytes (also none) and every
// other byte matches itself? Iterative, backtracking only to the last star:
// O(|pattern| * |s|) worst case, no recursion, no allocation.
bool glob_match(std::string_view pattern, std::string_view s);

// Find parameter `name` in a raw query string ("a=1&b%20=2&flag") and percent-decode
// its value ('+' → space) into `out`. Names are compared raw (not decoded); the first
// occurrence wins; "flag" without '=' has an empty value. Returns false when absent
// or when the value holds a malformed %XX escape.
bool query_param(std::string_view query, std::string_view name, std::string& out);

}  // namespace wsgate::protocol
