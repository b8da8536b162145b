// Tests for upgrade authentication (protocol/auth.h): HS256 JWTs built here with
// OpenSSL HMAC and a local base64url encoder, every malformed shape, time checks
// at the leeway edges, glob patterns, query parameters, the Origin allow-list and
// its precedence over the token, and anonymous development mode.
#include "protocol/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <set>
#include <string>
#include <string_view>

namespace wsgate::protocol {
namespace {

constexpr std::string_view k_secret = "test-secret-0123456789";
constexpr int64_t k_now = 1'700'000'000;
constexpr unsigned k_leeway = 30;
constexpr std::string_view k_hs256 = R"({"alg":"HS256","typ":"JWT"})";
constexpr std::string_view k_b64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string b64url(std::string_view in) {
    std::string out;
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const uint32_t v = (uint32_t{static_cast<uint8_t>(in[i])} << 16) |
                           (uint32_t{static_cast<uint8_t>(in[i + 1])} << 8) |
                           static_cast<uint8_t>(in[i + 2]);
        for (int shift = 18; shift >= 0; shift -= 6) {
            out.push_back(k_b64url_alphabet[(v >> shift) & 63]);
        }
    }
    const size_t rem = in.size() - i;
    if (rem > 0) {
        uint32_t v = uint32_t{static_cast<uint8_t>(in[i])} << 16;
        if (rem == 2) {
            v |= uint32_t{static_cast<uint8_t>(in[i + 1])} << 8;
        }
        out.push_back(k_b64url_alphabet[(v >> 18) & 63]);
        out.push_back(k_b64url_alphabet[(v >> 12) & 63]);
        if (rem == 2) {
            out.push_back(k_b64url_alphabet[(v >> 6) & 63]);
        }
    }
    return out;
}

std::string mac(const EVP_MD* md, std::string_view data, std::string_view key) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    HMAC(md, key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
    return std::string(reinterpret_cast<const char*>(out), len);
}

// header.payload.signature, signed with HS256 (or `md`) over the encoded parts.
std::string make_token(std::string_view header, std::string_view payload,
                       std::string_view secret = k_secret, const EVP_MD* md = EVP_sha256()) {
    std::string input = b64url(header) + "." + b64url(payload);
    return input + "." + b64url(mac(md, input, secret));
}

std::string token_for(std::string_view payload) { return make_token(k_hs256, payload); }

// Header and payload as given (already encoded, possibly broken), correctly signed.
std::string sign_raw(std::string_view header_b64, std::string_view payload_b64) {
    std::string input = std::string(header_b64) + "." + std::string(payload_b64);
    return input + "." + b64url(mac(EVP_sha256(), input, k_secret));
}

auth_failure verify(std::string_view token, jwt_claims& c, int64_t now = k_now,
                    unsigned leeway = k_leeway) {
    return verify_jwt_hs256(token, k_secret, now, leeway, c);
}

auth_failure verify(std::string_view token) {
    jwt_claims c;
    return verify(token, c);
}

std::string with_exp(int64_t exp) {
    return R"({"sub":"u","exp":)" + std::to_string(exp) + "}";
}

std::string with_nbf(int64_t nbf) {
    return R"({"sub":"u","nbf":)" + std::to_string(nbf) + "}";
}

// ---------------------------------------------------------------- verify_jwt_hs256

TEST(JwtVerify, ValidTokenWithAllClaims) {
    const std::string payload =
        R"({"iss":"issuer","sub":"alice","exp":)" + std::to_string(k_now + 60) +
        R"(,"nbf":)" + std::to_string(k_now - 10) +
        R"(,"rooms":["chat:*","game:*:lobby"],"pub":true,"admin":true,"extra":{"x":[1,{"y":null}]}})";
    jwt_claims c;
    ASSERT_EQ(verify(token_for(payload), c), auth_failure::none);
    EXPECT_EQ(c.sub, "alice");
    EXPECT_TRUE(c.has_exp);
    EXPECT_EQ(c.exp, k_now + 60);
    EXPECT_TRUE(c.has_nbf);
    EXPECT_EQ(c.nbf, k_now - 10);
    EXPECT_TRUE(c.has_rooms);
    EXPECT_EQ(c.rooms, (std::vector<std::string>{"chat:*", "game:*:lobby"}));
    EXPECT_TRUE(c.pub);
    EXPECT_TRUE(c.admin);
}

TEST(JwtVerify, MinimalTokenHasDefaults) {
    jwt_claims c;
    c.pub = true;  // must be reset
    ASSERT_EQ(verify(token_for(R"({"sub":"bob"})"), c), auth_failure::none);
    EXPECT_EQ(c.sub, "bob");
    EXPECT_FALSE(c.has_exp);
    EXPECT_FALSE(c.has_nbf);
    EXPECT_FALSE(c.has_rooms);
    EXPECT_TRUE(c.rooms.empty());
    EXPECT_FALSE(c.pub);
    EXPECT_FALSE(c.admin);
}

TEST(JwtVerify, HeaderWithoutTypAndLowerCaseTyp) {
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256"})", R"({"sub":"a"})")), auth_failure::none);
    EXPECT_EQ(verify(make_token(R"({"typ":"jwt","alg":"HS256","kid":"k1"})", R"({"sub":"a"})")),
              auth_failure::none);
}

TEST(JwtVerify, EmptyRoomsMeansNone) {
    jwt_claims c;
    ASSERT_EQ(verify(token_for(R"({"sub":"a","rooms":[]})"), c), auth_failure::none);
    EXPECT_TRUE(c.has_rooms);
    EXPECT_TRUE(c.rooms.empty());
}

TEST(JwtVerify, EscapedSubIsUnescaped) {
    jwt_claims c;
    ASSERT_EQ(verify(token_for(R"({"sub":"J\u00fcrgen \"x\""})"), c), auth_failure::none);
    EXPECT_EQ(c.sub, "J\xc3\xbcrgen \"x\"");
}

TEST(JwtVerify, BadSignature) {
    std::string t = token_for(R"({"sub":"a"})");
    const size_t mid = t.rfind('.') + 5;
    t[mid] = t[mid] == 'A' ? 'B' : 'A';
    EXPECT_EQ(verify(t), auth_failure::bad_signature);
}

TEST(JwtVerify, WrongSecret) {
    EXPECT_EQ(verify(make_token(k_hs256, R"({"sub":"a"})", "other-secret")),
              auth_failure::bad_signature);
}

TEST(JwtVerify, EmptySecretNeverVerifies) {
    const std::string t = make_token(k_hs256, R"({"sub":"a"})", "");
    jwt_claims c;
    EXPECT_EQ(verify_jwt_hs256(t, "", k_now, k_leeway, c), auth_failure::bad_signature);
}

TEST(JwtVerify, TamperedPayloadKeepsOldSignature) {
    const std::string good = token_for(R"({"sub":"a"})");
    const std::string evil = token_for(R"({"sub":"a","admin":true})");
    const std::string spliced =
        evil.substr(0, evil.rfind('.')) + good.substr(good.rfind('.'));
    EXPECT_EQ(verify(spliced), auth_failure::bad_signature);
}

TEST(JwtVerify, SignatureOfWrongLength) {
    std::string input = b64url(k_hs256) + "." + b64url(R"({"sub":"a"})");
    const std::string sig = mac(EVP_sha256(), input, k_secret);
    EXPECT_EQ(verify(input + "." + b64url(sig.substr(0, 31))), auth_failure::bad_signature);
    EXPECT_EQ(verify(input + "." + b64url(sig + "x")), auth_failure::bad_signature);
    EXPECT_EQ(verify(input + "."), auth_failure::bad_signature);
}

TEST(JwtVerify, NonCanonicalSignatureEncoding) {
    // 32 bytes = 43 characters; the last one carries 2 unused bits.
    std::string t = token_for(R"({"sub":"a"})");
    const size_t v = k_b64url_alphabet.find(t.back());
    ASSERT_EQ(v & 3, 0u);
    t.back() = k_b64url_alphabet[v | 1];
    EXPECT_EQ(verify(t), auth_failure::malformed);
}

TEST(JwtVerify, ExpiryAtTheLeewayEdges) {
    EXPECT_EQ(verify(token_for(with_exp(k_now + 3600))), auth_failure::none);
    EXPECT_EQ(verify(token_for(with_exp(k_now - 29))), auth_failure::none);  // within leeway
    EXPECT_EQ(verify(token_for(with_exp(k_now - 30))), auth_failure::expired);
    EXPECT_EQ(verify(token_for(with_exp(k_now - 31))), auth_failure::expired);
    EXPECT_EQ(verify(token_for(with_exp(-1))), auth_failure::expired);
    jwt_claims c;
    EXPECT_EQ(verify(token_for(with_exp(k_now)), c, k_now, 0), auth_failure::expired);
    EXPECT_EQ(verify(token_for(with_exp(k_now + 1)), c, k_now, 0), auth_failure::none);
}

TEST(JwtVerify, NumericDateForms) {
    jwt_claims c;
    ASSERT_EQ(verify(token_for(R"({"sub":"u","exp":1700000100.9})"), c), auth_failure::none);
    EXPECT_EQ(c.exp, 1700000100);
    ASSERT_EQ(verify(token_for(R"({"sub":"u","exp":1.8e9})"), c), auth_failure::none);
    EXPECT_EQ(c.exp, 1800000000);
    ASSERT_EQ(verify(token_for(R"({"sub":"u","exp":18446744073709551615})"), c),
              auth_failure::none);
    EXPECT_EQ(c.exp, INT64_MAX);
    ASSERT_EQ(verify(token_for(R"({"sub":"u","exp":1e30})"), c), auth_failure::none);
    EXPECT_EQ(c.exp, INT64_MAX);
    EXPECT_EQ(verify(token_for(R"({"sub":"u","exp":-1e30})")), auth_failure::expired);
    // The clock far from now does not overflow the leeway arithmetic.
    EXPECT_EQ(verify(token_for(with_exp(INT64_MIN)), c, INT64_MIN, k_leeway),
              auth_failure::expired);
    EXPECT_EQ(verify(token_for(with_nbf(INT64_MAX)), c, INT64_MAX, k_leeway), auth_failure::none);
}

TEST(JwtVerify, NotYetValid) {
    EXPECT_EQ(verify(token_for(with_nbf(k_now + 31))), auth_failure::not_yet_valid);
    EXPECT_EQ(verify(token_for(with_nbf(k_now + 30))), auth_failure::none);
    EXPECT_EQ(verify(token_for(with_nbf(k_now - 1000))), auth_failure::none);
}

TEST(JwtVerify, AlgNone) {
    const std::string h = b64url(R"({"alg":"none","typ":"JWT"})");
    const std::string p = b64url(R"({"sub":"a","admin":true})");
    EXPECT_EQ(verify(h + "." + p + "."), auth_failure::bad_alg);  // unsecured JWS form
    const std::string sig = b64url(mac(EVP_sha256(), h + "." + p, k_secret));
    EXPECT_EQ(verify(h + "." + p + "." + sig), auth_failure::bad_alg);
    EXPECT_EQ(verify(h + "." + p), auth_failure::malformed);  // no third segment at all
}

TEST(JwtVerify, OtherAlgorithms) {
    EXPECT_EQ(verify(make_token(R"({"alg":"HS512"})", R"({"sub":"a"})", k_secret, EVP_sha512())),
              auth_failure::bad_alg);
    EXPECT_EQ(verify(make_token(R"({"alg":"hs256"})", R"({"sub":"a"})")), auth_failure::bad_alg);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256 "})", R"({"sub":"a"})")), auth_failure::bad_alg);
    EXPECT_EQ(verify(make_token(R"({"alg":256})", R"({"sub":"a"})")), auth_failure::bad_alg);
    EXPECT_EQ(verify(make_token(R"({"alg":null})", R"({"sub":"a"})")), auth_failure::bad_alg);
}

TEST(JwtVerify, MissingAlg) {
    EXPECT_EQ(verify(make_token(R"({"typ":"JWT"})", R"({"sub":"a"})")), auth_failure::bad_alg);
    EXPECT_EQ(verify(make_token("{}", R"({"sub":"a"})")), auth_failure::bad_alg);
}

TEST(JwtVerify, HeaderRules) {
    const std::string_view p = R"({"sub":"a"})";
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256","typ":"JWS"})", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256","typ":1})", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256","crit":["exp"]})", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256","alg":"HS256"})", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"none","\u0061lg":"HS256"})", p)),
              auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256"} x)", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"({"alg":"HS256")", p)), auth_failure::malformed);
    EXPECT_EQ(verify(make_token(R"(["alg","HS256"])", p)), auth_failure::malformed);
}

TEST(JwtVerify, SegmentCount) {
    const std::string t = token_for(R"({"sub":"a"})");
    EXPECT_EQ(verify(t.substr(0, t.rfind('.'))), auth_failure::malformed);  // 2 segments
    EXPECT_EQ(verify(t + ".AAAA"), auth_failure::malformed);                // 4 segments
    EXPECT_EQ(verify(t + "."), auth_failure::malformed);
    EXPECT_EQ(verify(t.substr(t.find('.'))), auth_failure::malformed);
    EXPECT_EQ(verify(""), auth_failure::malformed);
    EXPECT_EQ(verify(".."), auth_failure::malformed);
    EXPECT_EQ(verify("abc"), auth_failure::malformed);
}

TEST(JwtVerify, BadBase64Characters) {
    const std::string h = b64url(k_hs256);
    const std::string p = b64url(R"({"sub":"a"})");
    for (char bad : std::string_view("+/=!~ \t%")) {
        std::string broken_p = p;
        broken_p[3] = bad;
        EXPECT_EQ(verify(sign_raw(h, broken_p)), auth_failure::malformed) << "char " << int(bad);
        std::string broken_h = h;
        broken_h[3] = bad;
        EXPECT_EQ(verify(sign_raw(broken_h, p)), auth_failure::malformed) << "char " << int(bad);
    }
    std::string t = token_for(R"({"sub":"a"})");
    t[t.rfind('.') + 2] = '+';
    EXPECT_EQ(verify(t), auth_failure::malformed);  // in the signature
    EXPECT_EQ(verify(sign_raw(h, p + std::string(1, '\0'))), auth_failure::malformed);
}

TEST(JwtVerify, PaddingRejected) {
    // A 13-byte payload would need "==" in padded base64.
    const std::string p = b64url(R"({"sub":"abc"})");  // 13 bytes → 18 characters
    ASSERT_EQ(p.size() % 4, 2u);
    EXPECT_EQ(verify(sign_raw(b64url(k_hs256), p)), auth_failure::none);
    EXPECT_EQ(verify(sign_raw(b64url(k_hs256), p + "==")), auth_failure::malformed);
    std::string t = token_for(R"({"sub":"a"})");
    EXPECT_EQ(verify(t + "="), auth_failure::malformed);
    // A length of 4k + 1 characters cannot be base64. 'k' (36 = 0x09 << 2) would
    // decode to a trailing tab, which JSON would accept, if the length were not checked.
    const std::string p12 = b64url(R"({"sub":"ab"})");
    ASSERT_EQ(p12.size() % 4, 0u);
    EXPECT_EQ(verify(sign_raw(b64url(k_hs256), p12)), auth_failure::none);
    EXPECT_EQ(verify(sign_raw(b64url(k_hs256), p12 + "k")), auth_failure::malformed);
}

TEST(JwtVerify, NonJsonHeader) {
    EXPECT_EQ(verify(make_token("not json", R"({"sub":"a"})")), auth_failure::malformed);
    EXPECT_EQ(verify(make_token("", R"({"sub":"a"})")), auth_failure::malformed);
    EXPECT_EQ(verify(make_token("\xff\xfe", R"({"sub":"a"})")), auth_failure::malformed);
}

TEST(JwtVerify, NonObjectPayload) {
    EXPECT_EQ(verify(token_for(R"(["sub","a"])")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"("a")")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for("42")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for("not json")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a"} {})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a",)")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for("{\"sub\":\"a\xff\"}")), auth_failure::malformed);  // not UTF-8
}

TEST(JwtVerify, SubRules) {
    EXPECT_EQ(verify(token_for(R"({"name":"a"})")), auth_failure::missing_sub);
    EXPECT_EQ(verify(token_for("{}")), auth_failure::missing_sub);
    EXPECT_EQ(verify(token_for(R"({"sub":""})")), auth_failure::missing_sub);
    EXPECT_EQ(verify(token_for(R"({"sub":42})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":null})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":["a"]})")), auth_failure::malformed);
    const std::string max(128, 'x');
    EXPECT_EQ(verify(token_for(R"({"sub":")" + max + "\"}")), auth_failure::none);
    EXPECT_EQ(verify(token_for(R"({"sub":")" + max + "y\"}")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"\ud800"})")), auth_failure::malformed);  // lone surrogate
}

TEST(JwtVerify, ClaimTypes) {
    EXPECT_EQ(verify(token_for(R"({"sub":"a","rooms":"chat:*"})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","rooms":{"r":1}})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","rooms":["ok",1]})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","rooms":[null]})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","pub":"true"})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","pub":1})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","admin":null})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","exp":"1800000000"})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","exp":true})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","nbf":[1]})")), auth_failure::malformed);
    // Types of claims we do not read do not matter.
    EXPECT_EQ(verify(token_for(R"({"sub":"a","iat":"x","aud":[1,2]})")), auth_failure::none);
}

TEST(JwtVerify, DuplicateClaims) {
    EXPECT_EQ(verify(token_for(R"({"sub":"a","sub":"b"})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","s\u0075b":"admin"})")), auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","admin":false,"admin":true})")),
              auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","exp":1,"exp":1800000000})")),
              auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","rooms":[],"rooms":["*"]})")),
              auth_failure::malformed);
    EXPECT_EQ(verify(token_for(R"({"sub":"a","x":1,"x":2})")), auth_failure::none);  // not ours
}

TEST(JwtVerify, TokenSizeCap) {
    // Grow a claim until the token is just under the cap: still accepted.
    std::string pad(5800, 'p');
    std::string t;
    for (;;) {
        t = token_for(R"({"sub":"a","pad":")" + pad + "\"}");
        if (t.size() + 4 > k_max_token_bytes) {
            break;
        }
        pad.append(3, 'p');
    }
    ASSERT_LE(t.size(), k_max_token_bytes);
    EXPECT_EQ(verify(t), auth_failure::none);
    const std::string huge = token_for(R"({"sub":"a","pad":")" + std::string(8000, 'p') + "\"}");
    ASSERT_GT(huge.size(), k_max_token_bytes);
    EXPECT_EQ(verify(huge), auth_failure::malformed);
    EXPECT_EQ(verify(std::string(1 << 20, 'A')), auth_failure::malformed);
}

TEST(JwtVerify, ManyRooms) {
    std::string p = R"({"sub":"a","rooms":[)";
    for (int i = 0; i < 500; ++i) {
        p += (i ? ",\"r" : "\"r") + std::to_string(i) + "\"";
    }
    p += "]}";
    jwt_claims c;
    ASSERT_EQ(verify(token_for(p), c), auth_failure::none);
    ASSERT_EQ(c.rooms.size(), 500u);
    EXPECT_EQ(c.rooms[499], "r499");
}

// ---------------------------------------------------------------- glob_match

TEST(GlobMatch, EmptyPattern) {
    EXPECT_TRUE(glob_match("", ""));
    EXPECT_FALSE(glob_match("", "a"));
}

TEST(GlobMatch, StarAlone) {
    EXPECT_TRUE(glob_match("*", ""));
    EXPECT_TRUE(glob_match("*", "anything:at:all"));
    EXPECT_TRUE(glob_match("**", "x"));
    EXPECT_TRUE(glob_match("***", ""));
}

TEST(GlobMatch, NoStarIsExact) {
    EXPECT_TRUE(glob_match("lobby", "lobby"));
    EXPECT_FALSE(glob_match("lobby", "lobby2"));
    EXPECT_FALSE(glob_match("lobby", "lobb"));
    EXPECT_FALSE(glob_match("lobby", "Lobby"));
    EXPECT_FALSE(glob_match("a", ""));
    EXPECT_FALSE(glob_match("?", "x"));  // only '*' is special
    EXPECT_TRUE(glob_match("?", "?"));
}

TEST(GlobMatch, TrailingStar) {
    EXPECT_TRUE(glob_match("chat:*", "chat:general"));
    EXPECT_TRUE(glob_match("chat:*", "chat:"));
    EXPECT_FALSE(glob_match("chat:*", "chat"));
    EXPECT_FALSE(glob_match("chat:*", "game:chat:x"));
}

TEST(GlobMatch, LeadingStar) {
    EXPECT_TRUE(glob_match("*:lobby", "game:lobby"));
    EXPECT_TRUE(glob_match("*:lobby", ":lobby"));
    EXPECT_TRUE(glob_match("*:lobby", "a:lobby:lobby"));
    EXPECT_FALSE(glob_match("*:lobby", "game:lobby2"));
}

TEST(GlobMatch, InnerAndMultipleStars) {
    EXPECT_TRUE(glob_match("game:*:lobby", "game:42:lobby"));
    EXPECT_TRUE(glob_match("game:*:lobby", "game::lobby"));
    EXPECT_TRUE(glob_match("game:*:lobby", "game:a:b:lobby"));
    EXPECT_FALSE(glob_match("game:*:lobby", "game:42:arena"));
    EXPECT_FALSE(glob_match("game:*:lobby", "game:lobby"));
    EXPECT_TRUE(glob_match("a*b*c", "abc"));
    EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
    EXPECT_TRUE(glob_match("a*b*c", "abcbc"));
    EXPECT_FALSE(glob_match("a*b*c", "acb"));
    EXPECT_TRUE(glob_match("*a*", "bab"));
    EXPECT_TRUE(glob_match("a**b", "ab"));
    EXPECT_FALSE(glob_match("*ab", "aba"));
    EXPECT_TRUE(glob_match("*ab", "aabab"));
}

TEST(GlobMatch, PathologicalIsFast) {
    const std::string s(200000, 'a');
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(glob_match("a*a*a*a*b", s));
    EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", s));
    EXPECT_TRUE(glob_match("a*a*a*a*a", s));
    EXPECT_FALSE(glob_match("*" + std::string(100, 'a') + "b", std::string(20000, 'a')));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    EXPECT_LT(ms, 2000);  // a backtracking recursion would take forever
}

// ---------------------------------------------------------------- query_param

TEST(QueryParam, FindsByName) {
    std::string v;
    ASSERT_TRUE(query_param("a=1&b=2", "a", v));
    EXPECT_EQ(v, "1");
    ASSERT_TRUE(query_param("a=1&b=2", "b", v));
    EXPECT_EQ(v, "2");
    EXPECT_FALSE(query_param("a=1&b=2", "c", v));
    EXPECT_FALSE(query_param("", "a", v));
}

TEST(QueryParam, NamesMatchWhole) {
    std::string v;
    ASSERT_TRUE(query_param("tokenx=1&xtoken=2&token=3", "token", v));
    EXPECT_EQ(v, "3");
    EXPECT_FALSE(query_param("tokenx=1&xtoken=2", "token", v));
    EXPECT_FALSE(query_param("a=token", "token", v));
}

TEST(QueryParam, PercentDecoding) {
    std::string v;
    ASSERT_TRUE(query_param("user=J%C3%BCrgen+X", "user", v));
    EXPECT_EQ(v, "J\xc3\xbcrgen X");
    ASSERT_TRUE(query_param("user=%c3%bc%2B%26%3d", "user", v));
    EXPECT_EQ(v, "\xc3\xbc+&=");
    ASSERT_TRUE(query_param("x=%00", "x", v));
    EXPECT_EQ(v, std::string(1, '\0'));
}

TEST(QueryParam, MalformedEscapes) {
    std::string v = "stale";
    EXPECT_FALSE(query_param("x=%zz", "x", v));
    EXPECT_FALSE(query_param("x=%4", "x", v));
    EXPECT_FALSE(query_param("x=ab%", "x", v));
    EXPECT_FALSE(query_param("x=%g0&y=1", "x", v));
    EXPECT_TRUE(query_param("x=%g0&y=1", "y", v));  // only the value asked for is decoded
    EXPECT_EQ(v, "1");
}

TEST(QueryParam, EmptyAndBareValues) {
    std::string v = "stale";
    ASSERT_TRUE(query_param("flag&x=1", "flag", v));
    EXPECT_EQ(v, "");
    ASSERT_TRUE(query_param("token=", "token", v));
    EXPECT_EQ(v, "");
    ASSERT_TRUE(query_param("a=&b=2", "b", v));
    EXPECT_EQ(v, "2");
}

TEST(QueryParam, FirstOccurrenceWinsAndEqualsInValue) {
    std::string v;
    ASSERT_TRUE(query_param("a=1&a=2", "a", v));
    EXPECT_EQ(v, "1");
    ASSERT_TRUE(query_param("t=a=b&&", "t", v));
    EXPECT_EQ(v, "a=b");
}

// ---------------------------------------------------------------- authenticate

auth_config jwt_config() {
    auth_config cfg;
    cfg.jwt_secret = std::string(k_secret);
    cfg.leeway_s = k_leeway;
    return cfg;
}

struct request_holder {
    std::string authorization_value;
    std::string query_value;
    http_request req;

    request_holder& bearer(std::string_view token) {
        authorization_value = "Bearer " + std::string(token);
        req.authorization = authorization_value;
        return *this;
    }
    request_holder& authorization(std::string_view v) {
        authorization_value = std::string(v);
        req.authorization = authorization_value;
        return *this;
    }
    request_holder& query(std::string_view q) {
        query_value = std::string(q);
        req.query = query_value;
        return *this;
    }
    request_holder& origin(std::string_view o) {
        req.origin = o;
        return *this;
    }
};

auth_result run(const request_holder& h, const auth_config& cfg, uint64_t rnd = 0) {
    return authenticate(h.req, cfg, k_now, rnd);
}

void expect_refused(const auth_result& r, uint16_t status, auth_failure f) {
    EXPECT_EQ(r.status, status);
    EXPECT_EQ(r.failure, f) << auth_failure_name(r.failure);
    EXPECT_TRUE(r.who.user.empty());
    EXPECT_FALSE(r.who.pub);
    EXPECT_FALSE(r.who.admin);
}

TEST(AuthToken, ValidViaHeader) {
    request_holder h;
    h.bearer(token_for(R"({"sub":"alice","rooms":["chat:*"],"pub":true,"admin":true})"));
    const auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0) << auth_failure_name(r.failure);
    EXPECT_EQ(r.failure, auth_failure::none);
    EXPECT_EQ(r.who.user, "alice");
    EXPECT_FALSE(r.who.any_room);
    EXPECT_EQ(r.who.rooms, std::vector<std::string>{"chat:*"});
    EXPECT_TRUE(r.who.pub);
    EXPECT_TRUE(r.who.admin);
}

TEST(AuthToken, DefaultsWithoutOptionalClaims) {
    request_holder h;
    h.bearer(token_for(R"({"sub":"bob"})"));
    const auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user, "bob");
    EXPECT_TRUE(r.who.any_room);
    EXPECT_FALSE(r.who.pub);
    EXPECT_FALSE(r.who.admin);
}

TEST(AuthToken, SchemeCaseAndSpaces) {
    const std::string t = token_for(R"({"sub":"a"})");
    request_holder h;
    EXPECT_EQ(run(h.authorization("bearer " + t), jwt_config()).status, 0);
    EXPECT_EQ(run(h.authorization("BEARER    " + t), jwt_config()).status, 0);
    expect_refused(run(h.authorization("Bearer" + t), jwt_config()), 401,
                   auth_failure::missing_token);
    expect_refused(run(h.authorization("Bearer"), jwt_config()), 401,
                   auth_failure::missing_token);
    expect_refused(run(h.authorization("Bearer\t" + t), jwt_config()), 401,
                   auth_failure::missing_token);
}

TEST(AuthToken, ValidViaQuery) {
    request_holder h;
    h.query("room=x&token=" + token_for(R"({"sub":"q"})") + "&v=1");
    const auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0) << auth_failure_name(r.failure);
    EXPECT_EQ(r.who.user, "q");
}

TEST(AuthToken, ValidViaPercentEncodedQuery) {
    const std::string t = token_for(R"({"sub":"pe"})");
    std::string enc;
    for (char c : t) {
        static constexpr char hex[] = "0123456789ABCDEF";
        enc += '%';
        enc += hex[static_cast<uint8_t>(c) >> 4];
        enc += hex[static_cast<uint8_t>(c) & 15];
    }
    request_holder h;
    h.query("token=" + enc);
    const auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0) << auth_failure_name(r.failure);
    EXPECT_EQ(r.who.user, "pe");
}

TEST(AuthToken, HeaderWinsOverQuery) {
    const std::string good = token_for(R"({"sub":"header"})");
    const std::string bad = make_token(k_hs256, R"({"sub":"query"})", "wrong");
    request_holder h;
    h.bearer(good).query("token=" + bad);
    auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user, "header");
    h.bearer(bad).query("token=" + good);
    expect_refused(run(h, jwt_config()), 401, auth_failure::bad_signature);
}

TEST(AuthToken, OtherSchemeIsIgnored) {
    request_holder h;
    h.authorization("Basic dXNlcjpwYXNz");
    expect_refused(run(h, jwt_config()), 401, auth_failure::missing_token);
    h.query("token=" + token_for(R"({"sub":"q"})"));
    EXPECT_EQ(run(h, jwt_config()).status, 0);
}

TEST(AuthToken, MissingToken) {
    request_holder h;
    expect_refused(run(h, jwt_config()), 401, auth_failure::missing_token);
    expect_refused(run(h.query("token="), jwt_config()), 401, auth_failure::missing_token);
    expect_refused(run(h.query("user=alice"), jwt_config()), 401, auth_failure::missing_token);
}

TEST(AuthToken, Refusals) {
    request_holder h;
    expect_refused(run(h.query("token=%zz"), jwt_config()), 401, auth_failure::malformed);
    h.query("");
    expect_refused(run(h.bearer("abc.def"), jwt_config()), 401, auth_failure::malformed);
    expect_refused(run(h.bearer(token_for(with_exp(k_now - 100))), jwt_config()), 401,
                   auth_failure::expired);
    expect_refused(run(h.bearer(token_for(with_nbf(k_now + 100))), jwt_config()), 401,
                   auth_failure::not_yet_valid);
    expect_refused(run(h.bearer(token_for(R"({"pub":true})")), jwt_config()), 401,
                   auth_failure::missing_sub);
    expect_refused(run(h.bearer(make_token(R"({"alg":"none"})", R"({"sub":"a"})")),
                       jwt_config()),
                   401, auth_failure::bad_alg);
}

TEST(AuthToken, LeewayFromConfig) {
    request_holder h;
    h.bearer(token_for(with_exp(k_now - 100)));
    auth_config cfg = jwt_config();
    cfg.leeway_s = 101;
    EXPECT_EQ(run(h, cfg).status, 0);
    cfg.leeway_s = 100;
    expect_refused(run(h, cfg), 401, auth_failure::expired);
}

TEST(AuthOrigin, NoListAllowsAnyOrNone) {
    request_holder h;
    h.bearer(token_for(R"({"sub":"a"})"));
    EXPECT_EQ(run(h, jwt_config()).status, 0);
    EXPECT_EQ(run(h.origin("https://anything.example"), jwt_config()).status, 0);
}

TEST(AuthOrigin, AllowedAndNotAllowed) {
    auth_config cfg = jwt_config();
    cfg.allowed_origins = {"https://app.example.com", "http://localhost:3000"};
    request_holder h;
    h.bearer(token_for(R"({"sub":"a"})"));
    EXPECT_EQ(run(h.origin("https://app.example.com"), cfg).status, 0);
    EXPECT_EQ(run(h.origin("http://localhost:3000"), cfg).status, 0);
    expect_refused(run(h.origin("https://evil.example.com"), cfg), 403,
                   auth_failure::origin_not_allowed);
    expect_refused(run(h.origin("https://app.example.com.evil.com"), cfg), 403,
                   auth_failure::origin_not_allowed);
    expect_refused(run(h.origin("https://app.example.co"), cfg), 403,
                   auth_failure::origin_not_allowed);
    expect_refused(run(h.origin("http://app.example.com"), cfg), 403,
                   auth_failure::origin_not_allowed);
    expect_refused(run(h.origin("null"), cfg), 403, auth_failure::origin_not_allowed);
    expect_refused(run(h.origin(""), cfg), 403, auth_failure::origin_not_allowed);
}

TEST(AuthOrigin, CaseInsensitive) {
    auth_config cfg = jwt_config();
    cfg.allowed_origins = {"https://App.Example.com"};
    request_holder h;
    h.bearer(token_for(R"({"sub":"a"})"));
    EXPECT_EQ(run(h.origin("HTTPS://APP.EXAMPLE.COM"), cfg).status, 0);
    EXPECT_EQ(run(h.origin("https://app.example.com"), cfg).status, 0);
}

TEST(AuthOrigin, MissingOriginWithListIsForbidden) {
    auth_config cfg = jwt_config();
    cfg.allowed_origins = {"https://app.example.com"};
    request_holder h;
    h.bearer(token_for(R"({"sub":"a"})"));
    expect_refused(run(h, cfg), 403, auth_failure::origin_not_allowed);
}

TEST(AuthOrigin, StarAllowsAll) {
    auth_config cfg = jwt_config();
    cfg.allowed_origins = {"https://app.example.com", "*"};
    request_holder h;
    h.bearer(token_for(R"({"sub":"a"})"));
    EXPECT_EQ(run(h.origin("https://evil.example.com"), cfg).status, 0);
    EXPECT_EQ(run(h.origin("null"), cfg).status, 0);
    request_holder none;
    none.bearer(token_for(R"({"sub":"a"})"));
    EXPECT_EQ(run(none, cfg).status, 0);
}

TEST(AuthOrigin, ForbiddenBeatsUnauthorized) {
    auth_config cfg = jwt_config();
    cfg.allowed_origins = {"https://app.example.com"};
    request_holder h;
    h.origin("https://evil.example.com");
    expect_refused(run(h, cfg), 403, auth_failure::origin_not_allowed);  // no token
    expect_refused(run(h.bearer("garbage"), cfg), 403, auth_failure::origin_not_allowed);
    expect_refused(run(h.bearer(token_for(R"({"sub":"a"})")), cfg), 403,
                   auth_failure::origin_not_allowed);
    request_holder missing;
    missing.bearer("garbage");
    expect_refused(run(missing, cfg), 403, auth_failure::origin_not_allowed);
    // The same request from an allowed origin reaches the token check.
    expect_refused(run(h.origin("https://app.example.com").bearer("garbage"), cfg), 401,
                   auth_failure::malformed);
}

TEST(AuthAnonymous, GeneratedId) {
    request_holder h;
    const auth_result r = run(h, auth_config{}, 0x0123456789abcdefULL);
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.failure, auth_failure::none);
    EXPECT_EQ(r.who.user, "anon-0123456789abcdef");
    EXPECT_TRUE(r.who.any_room);
    EXPECT_TRUE(r.who.pub);
    EXPECT_FALSE(r.who.admin);
    EXPECT_EQ(run(h, auth_config{}, 0).who.user, "anon-0000000000000000");
    EXPECT_EQ(run(h, auth_config{}, ~0ULL).who.user, "anon-ffffffffffffffff");
}

TEST(AuthAnonymous, UserFromQuery) {
    request_holder h;
    auth_result r = run(h.query("user=alice"), auth_config{});
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user, "alice");
    EXPECT_TRUE(r.who.pub);
    EXPECT_FALSE(r.who.admin);
    r = run(h.query("x=1&user=J%C3%BCrgen+M"), auth_config{});
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user, "J\xc3\xbcrgen M");
    r = run(h.query("user=" + std::string(128, 'u')), auth_config{});
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user.size(), 128u);
}

TEST(AuthAnonymous, BadUser) {
    request_holder h;
    expect_refused(run(h.query("user="), auth_config{}), 400, auth_failure::bad_user);
    expect_refused(run(h.query("user"), auth_config{}), 400, auth_failure::bad_user);
    expect_refused(run(h.query("user=" + std::string(129, 'u')), auth_config{}), 400,
                   auth_failure::bad_user);
    expect_refused(run(h.query("user=%FF"), auth_config{}), 400, auth_failure::bad_user);
    expect_refused(run(h.query("user=%C3"), auth_config{}), 400, auth_failure::bad_user);
    expect_refused(run(h.query("user=%zz"), auth_config{}), 400, auth_failure::bad_user);
}

TEST(AuthAnonymous, TokensIgnoredOriginStillChecked) {
    request_holder h;
    h.bearer("garbage").query("token=garbage");
    auth_result r = run(h, auth_config{}, 1);
    ASSERT_EQ(r.status, 0);
    EXPECT_EQ(r.who.user, "anon-0000000000000001");
    auth_config cfg;
    cfg.allowed_origins = {"https://app.example.com"};
    expect_refused(run(h.origin("https://evil.example.com"), cfg), 403,
                   auth_failure::origin_not_allowed);
    expect_refused(run(h.query("user="), cfg), 403, auth_failure::origin_not_allowed);
}

TEST(AuthIdentity, MayJoin) {
    identity any;
    EXPECT_TRUE(any.may_join("anything"));
    identity some;
    some.any_room = false;
    some.rooms = {"chat:*", "game:*:lobby", "lobby"};
    EXPECT_TRUE(some.may_join("chat:general"));
    EXPECT_TRUE(some.may_join("game:7:lobby"));
    EXPECT_TRUE(some.may_join("lobby"));
    EXPECT_FALSE(some.may_join("game:7:arena"));
    EXPECT_FALSE(some.may_join("lobby2"));
    EXPECT_FALSE(some.may_join("chat"));
    identity none;
    none.any_room = false;
    EXPECT_FALSE(none.may_join("lobby"));
    EXPECT_FALSE(none.may_join(""));
}

TEST(AuthIdentity, FromEmptyRoomsClaimJoinsNothing) {
    request_holder h;
    h.bearer(token_for(R"({"sub":"a","rooms":[]})"));
    const auth_result r = run(h, jwt_config());
    ASSERT_EQ(r.status, 0);
    EXPECT_FALSE(r.who.any_room);
    EXPECT_FALSE(r.who.may_join("lobby"));
}

TEST(AuthFailureName, StableAndDistinct) {
    EXPECT_EQ(auth_failure_name(auth_failure::none), "none");
    EXPECT_EQ(auth_failure_name(auth_failure::origin_not_allowed), "origin_not_allowed");
    EXPECT_EQ(auth_failure_name(auth_failure::missing_token), "missing_token");
    EXPECT_EQ(auth_failure_name(auth_failure::malformed), "malformed");
    EXPECT_EQ(auth_failure_name(auth_failure::bad_alg), "bad_alg");
    EXPECT_EQ(auth_failure_name(auth_failure::bad_signature), "bad_signature");
    EXPECT_EQ(auth_failure_name(auth_failure::expired), "expired");
    EXPECT_EQ(auth_failure_name(auth_failure::not_yet_valid), "not_yet_valid");
    EXPECT_EQ(auth_failure_name(auth_failure::missing_sub), "missing_sub");
    EXPECT_EQ(auth_failure_name(auth_failure::bad_user), "bad_user");
    std::set<std::string_view> names;
    for (int i = 0; i <= static_cast<int>(auth_failure::bad_user); ++i) {
        names.insert(auth_failure_name(static_cast<auth_failure>(i)));
    }
    EXPECT_EQ(names.size(), static_cast<size_t>(auth_failure::bad_user) + 1);
}

}  // namespace
}  // namespace wsgate::protocol
