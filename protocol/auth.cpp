// Upgrade authentication: see auth.h for the rules, their order and the costs.
#include "protocol/auth.h"

#include "protocol/message.h"
#include "protocol/utf8.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>

namespace wsgate::protocol {

namespace {

namespace od = simdjson::ondemand;

constexpr size_t k_hs256_bytes = 32;
// Every decoded segment fits: base64 carries 3 bytes per 4 characters.
constexpr size_t k_max_segment_bytes = k_max_token_bytes / 4 * 3;

// Value of each base64url character (RFC 4648 section 5), -1 for any other byte
// ('=' included: JWS forbids padding).
constexpr std::array<int8_t, 256> make_b64url() {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    constexpr std::string_view alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < alphabet.size(); ++i) {
        t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    }
    return t;
}
constexpr std::array<int8_t, 256> k_b64url = make_b64url();

// Decode unpadded base64url into `out` (room for in.size() / 4 * 3 + 2 bytes).
// Returns the decoded length, or -1 for a byte outside the alphabet, an impossible
// length (4k + 1) or non-zero unused bits in the last character (non-canonical:
// two spellings of the same bytes would both verify otherwise).
long b64url_decode(std::string_view in, char* out) {
    const size_t rem = in.size() % 4;
    if (rem == 1) {
        return -1;
    }
    size_t o = 0;
    size_t i = 0;
    while (i < in.size()) {
        const size_t group = std::min<size_t>(4, in.size() - i);
        uint32_t v = 0;
        for (size_t k = 0; k < group; ++k) {
            const int8_t d = k_b64url[static_cast<uint8_t>(in[i + k])];
            if (d < 0) {
                return -1;
            }
            v = (v << 6) | static_cast<uint32_t>(d);
        }
        i += group;
        if (group == 4) {
            out[o++] = static_cast<char>(v >> 16);
            out[o++] = static_cast<char>(v >> 8);
            out[o++] = static_cast<char>(v);
            continue;
        }
        // 2 characters: 12 bits for 1 byte; 3 characters: 18 bits for 2 bytes.
        const unsigned unused = group == 2 ? 4 : 2;
        if ((v & ((1u << unused) - 1)) != 0) {
            return -1;
        }
        v >>= unused;
        if (group == 3) {
            out[o++] = static_cast<char>(v >> 8);
        }
        out[o++] = static_cast<char>(v);
    }
    return static_cast<long>(o);
}

inline char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
}

bool ascii_iequal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) {
            return false;
        }
    }
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = ascii_lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

bool percent_decode(std::string_view in, std::string& out) {
    out.clear();
    out.reserve(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '+') {
            out.push_back(' ');
        } else if (in[i] != '%') {
            out.push_back(in[i]);
        } else {
            const int hi = i + 2 < in.size() ? hex_value(in[i + 1]) : -1;
            const int lo = hi >= 0 ? hex_value(in[i + 2]) : -1;
            if (lo < 0) {
                out.clear();
                return false;
            }
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        }
    }
    return true;
}

enum class param : uint8_t { absent, ok, bad_escape };

param find_param(std::string_view query, std::string_view name, std::string& out) {
    size_t pos = 0;
    while (pos <= query.size()) {
        size_t amp = query.find('&', pos);
        if (amp == std::string_view::npos) {
            amp = query.size();
        }
        const std::string_view pair = query.substr(pos, amp - pos);
        const size_t eq = pair.find('=');
        if (pair.substr(0, eq) == name) {
            const std::string_view value =
                eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
            return percent_decode(value, out) ? param::ok : param::bad_escape;
        }
        pos = amp + 1;
    }
    return param::absent;
}

bool origin_allowed(std::string_view origin, const std::vector<std::string>& allowed) {
    if (allowed.empty()) {
        return true;
    }
    for (const std::string& entry : allowed) {
        // "*" allows everything, a missing Origin included (like no list at all).
        if (entry == "*") {
            return true;
        }
        if (origin.data() != nullptr && ascii_iequal(origin, entry)) {
            return true;
        }
    }
    return false;
}

// The credentials of "Bearer <token>" (RFC 6750 section 2.1: scheme, 1*SP, token);
// empty for an absent header, another scheme, or no token.
std::string_view bearer_token(std::string_view header) {
    constexpr std::string_view scheme = "bearer";
    if (header.size() < scheme.size() || !ascii_iequal(header.substr(0, scheme.size()), scheme)) {
        return {};
    }
    std::string_view rest = header.substr(scheme.size());
    if (!rest.empty() && rest.front() != ' ') {
        return {};  // "Bearerx ..."
    }
    while (!rest.empty() && rest.front() == ' ') {
        rest.remove_prefix(1);
    }
    return rest;
}

// The iterator stands past the root value: nothing but whitespace followed it.
bool at_end(od::document& doc) {
    const char* rest = nullptr;
    return doc.current_location().get(rest) == simdjson::OUT_OF_BOUNDS;
}

// Header: {"alg":"HS256", "typ":"JWT"?, no "crit", anything else}.
auth_failure check_header(od::parser& parser, const char* buf, size_t n, size_t cap) {
    od::document doc;
    od::object obj;
    if (parser.iterate(buf, n, cap).get(doc) || doc.get_object().get(obj)) {
        return auth_failure::malformed;
    }
    bool seen_alg = false;
    bool seen_typ = false;
    bool alg_ok = false;
    for (auto fr : obj) {
        od::field f;
        std::string_view key;
        if (std::move(fr).get(f) || f.unescaped_key().get(key)) {
            return auth_failure::malformed;
        }
        od::value v = f.value();
        if (key == "alg" || key == "typ") {
            bool& seen = key == "alg" ? seen_alg : seen_typ;
            if (seen) {
                return auth_failure::malformed;
            }
            seen = true;
            od::json_type t;
            std::string_view s;
            if (v.type().get(t)) {
                return auth_failure::malformed;
            }
            const bool is_string = t == od::json_type::string;
            if (is_string && v.get_string().get(s)) {
                return auth_failure::malformed;
            }
            if (key == "alg") {
                alg_ok = is_string && s == "HS256";  // another type: an unknown algorithm
            } else if (!is_string || !ascii_iequal(s, "JWT")) {
                return auth_failure::malformed;
            }
        } else if (key == "crit") {
            return auth_failure::malformed;  // no extension is understood (RFC 7515 4.1.11)
        }
    }
    if (!at_end(doc)) {
        return auth_failure::malformed;
    }
    return alg_ok ? auth_failure::none : auth_failure::bad_alg;
}

// A NumericDate: any JSON number; fractions are floored, out-of-range values saturate.
bool read_numeric_date(od::value& v, int64_t& out) {
    int64_t i = 0;
    if (!v.get_int64().get(i)) {
        out = i;
        return true;
    }
    double d = 0;
    if (v.get_double().get(d) || !std::isfinite(d)) {  // a failed get_int64 did not advance
        return false;
    }
    if (d >= 9223372036854775808.0) {
        out = INT64_MAX;
    } else if (d < -9223372036854775808.0) {
        out = INT64_MIN;
    } else {
        out = static_cast<int64_t>(std::floor(d));
    }
    return true;
}

bool read_string_copy(od::value& v, std::string& out) {
    std::string_view s;
    if (v.get_string().get(s)) {
        return false;
    }
    out.assign(s);
    return true;
}

bool read_rooms(od::value& v, std::vector<std::string>& out) {
    od::array a;
    if (v.get_array().get(a)) {
        return false;
    }
    for (auto er : a) {
        od::value x;
        std::string_view s;
        if (std::move(er).get(x) || x.get_string().get(s)) {
            return false;
        }
        out.emplace_back(s);
    }
    return true;
}

// One bit per claim we read, to catch duplicates.
constexpr unsigned c_sub = 1;
constexpr unsigned c_exp = 2;
constexpr unsigned c_nbf = 4;
constexpr unsigned c_rooms = 8;
constexpr unsigned c_pub = 16;
constexpr unsigned c_admin = 32;

unsigned claim_of(std::string_view key) {
    if (key == "sub") {
        return c_sub;
    }
    if (key == "exp") {
        return c_exp;
    }
    if (key == "nbf") {
        return c_nbf;
    }
    if (key == "rooms") {
        return c_rooms;
    }
    if (key == "pub") {
        return c_pub;
    }
    return key == "admin" ? c_admin : 0;
}

// Payload: types of the claims we read, duplicates, then sub's presence and size.
auth_failure read_claims(od::parser& parser, const char* buf, size_t n, size_t cap,
                         jwt_claims& out) {
    od::document doc;
    od::object obj;
    if (parser.iterate(buf, n, cap).get(doc) || doc.get_object().get(obj)) {
        return auth_failure::malformed;
    }
    unsigned seen = 0;
    for (auto fr : obj) {
        od::field f;
        std::string_view key;
        if (std::move(fr).get(f) || f.unescaped_key().get(key)) {
            return auth_failure::malformed;
        }
        const unsigned bit = claim_of(key);
        if (bit == 0) {
            continue;  // not ours: On-Demand skips it
        }
        if ((seen & bit) != 0) {
            return auth_failure::malformed;
        }
        seen |= bit;
        od::value v = f.value();
        bool ok = false;
        switch (bit) {
        case c_sub:
            ok = read_string_copy(v, out.sub);
            break;
        case c_exp:
            ok = read_numeric_date(v, out.exp);
            out.has_exp = true;
            break;
        case c_nbf:
            ok = read_numeric_date(v, out.nbf);
            out.has_nbf = true;
            break;
        case c_rooms:
            ok = read_rooms(v, out.rooms);
            out.has_rooms = true;
            break;
        case c_pub:
            ok = !v.get_bool().get(out.pub);
            break;
        default:
            ok = !v.get_bool().get(out.admin);
            break;
        }
        if (!ok) {
            return auth_failure::malformed;
        }
    }
    if (!at_end(doc)) {
        return auth_failure::malformed;
    }
    if (out.sub.empty()) {
        return auth_failure::missing_sub;
    }
    if (out.sub.size() > max_name_bytes || !is_valid_utf8(out.sub)) {
        return auth_failure::malformed;
    }
    return auth_failure::none;
}

int64_t saturating_add(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

auth_result refuse(uint16_t status, auth_failure f) {
    auth_result r;
    r.status = status;
    r.failure = f;
    return r;
}

std::string anonymous_id(uint64_t random) {
    constexpr std::string_view digits = "0123456789abcdef";
    std::string id = "anon-";
    for (int shift = 60; shift >= 0; shift -= 4) {
        id.push_back(digits[(random >> shift) & 0xf]);
    }
    return id;
}

}  // namespace

bool identity::may_join(std::string_view room) const {
    if (any_room) {
        return true;
    }
    for (const std::string& pattern : rooms) {
        if (glob_match(pattern, room)) {
            return true;
        }
    }
    return false;
}

std::string_view auth_failure_name(auth_failure f) {
    switch (f) {
    case auth_failure::none:
        return "none";
    case auth_failure::origin_not_allowed:
        return "origin_not_allowed";
    case auth_failure::missing_token:
        return "missing_token";
    case auth_failure::malformed:
        return "malformed";
    case auth_failure::bad_alg:
        return "bad_alg";
    case auth_failure::bad_signature:
        return "bad_signature";
    case auth_failure::expired:
        return "expired";
    case auth_failure::not_yet_valid:
        return "not_yet_valid";
    case auth_failure::missing_sub:
        return "missing_sub";
    case auth_failure::bad_user:
        return "bad_user";
    }
    return "unknown";
}

bool glob_match(std::string_view pattern, std::string_view s) {
    size_t p = 0;
    size_t i = 0;
    size_t star = std::string_view::npos;  // pattern index of the last '*' seen
    size_t resume = 0;                     // where that star's match ends so far
    while (i < s.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = i;
        } else if (p < pattern.size() && pattern[p] == s[i]) {
            ++p;
            ++i;
        } else if (star != std::string_view::npos) {
            // Let the last star swallow one more byte and retry what follows it.
            // Earlier stars never need to move: the last one can absorb anything.
            p = star + 1;
            i = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') {
        ++p;
    }
    return p == pattern.size();
}

bool query_param(std::string_view query, std::string_view name, std::string& out) {
    return find_param(query, name, out) == param::ok;
}

auth_failure verify_jwt_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                              unsigned leeway_s, jwt_claims& out) {
    out = jwt_claims{};
    if (token.size() > k_max_token_bytes) {
        return auth_failure::malformed;
    }
    const size_t dot1 = token.find('.');
    const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
        return auth_failure::malformed;
    }
    const std::string_view header_b64 = token.substr(0, dot1);
    const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string_view signature_b64 = token.substr(dot2 + 1);
    if (header_b64.empty() || payload_b64.empty()) {
        return auth_failure::malformed;
    }

    // One buffer for each decoded segment in turn, with simdjson's padding behind it.
    char buf[k_max_segment_bytes + simdjson::SIMDJSON_PADDING];
    od::parser parser;
    long n = b64url_decode(header_b64, buf);
    if (n < 0) {
        return auth_failure::malformed;
    }
    std::memset(buf + n, 0, simdjson::SIMDJSON_PADDING);
    auth_failure f = check_header(parser, buf, static_cast<size_t>(n), sizeof(buf));
    if (f != auth_failure::none) {
        return f;
    }

    n = b64url_decode(signature_b64, buf);
    if (n < 0) {
        return auth_failure::malformed;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (static_cast<size_t>(n) != k_hs256_bytes || secret.empty() || secret.size() > INT_MAX ||
        HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(token.data()), dot2, mac, &mac_len) ==
            nullptr ||
        mac_len != k_hs256_bytes || CRYPTO_memcmp(mac, buf, k_hs256_bytes) != 0) {
        return auth_failure::bad_signature;
    }

    // Signed by the holder of the secret: only now is the payload parsed.
    n = b64url_decode(payload_b64, buf);
    if (n < 0) {
        return auth_failure::malformed;
    }
    std::memset(buf + n, 0, simdjson::SIMDJSON_PADDING);
    f = read_claims(parser, buf, static_cast<size_t>(n), sizeof(buf), out);
    if (f != auth_failure::none) {
        return f;
    }
    const int64_t leeway = static_cast<int64_t>(leeway_s);
    if (out.has_exp && out.exp <= saturating_add(now_s, -leeway)) {
        return auth_failure::expired;
    }
    if (out.has_nbf && out.nbf > saturating_add(now_s, leeway)) {
        return auth_failure::not_yet_valid;
    }
    return auth_failure::none;
}

auth_result authenticate(const http_request& req, const auth_config& cfg, int64_t now_s,
                         uint64_t anon_random) {
    if (!origin_allowed(req.origin, cfg.allowed_origins)) {
        return refuse(403, auth_failure::origin_not_allowed);
    }
    auth_result r;
    identity& who = r.who;
    if (cfg.jwt_secret.empty()) {
        switch (find_param(req.query, "user", who.user)) {
        case param::absent:
            who.user = anonymous_id(anon_random);
            break;
        case param::bad_escape:
            return refuse(400, auth_failure::bad_user);
        case param::ok:
            if (who.user.empty() || who.user.size() > max_name_bytes ||
                !is_valid_utf8(who.user)) {
                return refuse(400, auth_failure::bad_user);
            }
            break;
        }
        who.any_room = true;
        who.pub = true;
        who.admin = false;
        return r;
    }

    std::string_view token = bearer_token(req.authorization);
    std::string from_query;
    if (token.empty()) {
        switch (find_param(req.query, "token", from_query)) {
        case param::absent:
            break;
        case param::bad_escape:
            return refuse(401, auth_failure::malformed);
        case param::ok:
            token = from_query;
            break;
        }
    }
    if (token.empty()) {
        return refuse(401, auth_failure::missing_token);
    }
    jwt_claims claims;
    const auth_failure f = verify_jwt_hs256(token, cfg.jwt_secret, now_s, cfg.leeway_s, claims);
    if (f != auth_failure::none) {
        return refuse(401, f);
    }
    who.user = std::move(claims.sub);
    who.any_room = !claims.has_rooms;
    who.rooms = std::move(claims.rooms);
    who.pub = claims.pub;
    who.admin = claims.admin;
    return r;
}

}  // namespace wsgate::protocol
