// Tests for the incremental UTF-8 validator (protocol/utf8.h): Markus Kuhn style
// vectors fed whole, split at every byte and byte by byte; earliest-reject position
// against a straightforward reference decoder; the ASCII fast path at every alignment.
#include "protocol/utf8.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace wsgate::protocol {
namespace {

using bytes = std::vector<uint8_t>;

bytes b(std::initializer_list<int> v) {
    bytes out;
    for (int x : v) {
        out.push_back(static_cast<uint8_t>(x));
    }
    return out;
}

bytes s(std::string_view v) { return bytes(v.begin(), v.end()); }

enum class verdict { valid, incomplete, invalid };

verdict classify(uint32_t state) {
    if (state == utf8_accept) {
        return verdict::valid;
    }
    return state == utf8_reject ? verdict::invalid : verdict::incomplete;
}

// Reference: index of the first byte at which the input can no longer be valid,
// or -1 (complete and valid) / -2 (valid prefix, ends inside a sequence).
long reference_first_bad(const bytes& v) {
    size_t i = 0;
    while (i < v.size()) {
        uint8_t c = v[i];
        size_t need = 0;
        uint8_t lo = 0x80;
        uint8_t hi = 0xBF;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return static_cast<long>(i);
        }
        for (size_t k = 1; k <= need; ++k) {
            if (i + k >= v.size()) {
                return -2;
            }
            uint8_t d = v[i + k];
            uint8_t l = k == 1 ? lo : 0x80;
            uint8_t h = k == 1 ? hi : 0xBF;
            if (d < l || d > h) {
                return static_cast<long>(i + k);
            }
        }
        i += need + 1;
    }
    return -1;
}

// Feed byte by byte and report where the DFA first rejects (same encoding as above).
long dfa_first_bad(const bytes& v) {
    uint32_t st = utf8_accept;
    for (size_t i = 0; i < v.size(); ++i) {
        st = utf8_validate(st, &v[i], 1);
        if (st == utf8_reject) {
            return static_cast<long>(i);
        }
    }
    return st == utf8_accept ? -1 : -2;
}

verdict whole(const bytes& v) { return classify(utf8_validate(utf8_accept, v.data(), v.size())); }

void expect_every_split(const bytes& v, verdict want) {
    EXPECT_EQ(whole(v), want);
    for (size_t cut = 0; cut <= v.size(); ++cut) {
        uint32_t st = utf8_validate(utf8_accept, v.data(), cut);
        st = utf8_validate(st, v.data() + cut, v.size() - cut);
        EXPECT_EQ(classify(st), want) << "split at " << cut;
    }
    uint32_t st = utf8_accept;
    for (uint8_t c : v) {
        st = utf8_validate(st, &c, 1);
    }
    EXPECT_EQ(classify(st), want) << "byte by byte";
}

TEST(utf8, valid_vectors) {
    std::vector<bytes> valid = {
        {},
        s("hello, world"),
        b({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5}),  // κόσμε
        b({0x00}),                                                       // U+0000
        b({0x7F}),                                                       // U+007F
        b({0xC2, 0x80}),                                                 // U+0080
        b({0xDF, 0xBF}),                                                 // U+07FF
        b({0xE0, 0xA0, 0x80}),                                           // U+0800
        b({0xED, 0x9F, 0xBF}),                                           // U+D7FF
        b({0xEE, 0x80, 0x80}),                                           // U+E000
        b({0xEF, 0xBF, 0xBD}),                                           // U+FFFD
        b({0xEF, 0xBF, 0xBE}),                                           // U+FFFE (noncharacter, legal)
        b({0xEF, 0xBF, 0xBF}),                                           // U+FFFF
        b({0xF0, 0x90, 0x80, 0x80}),                                     // U+10000
        b({0xF3, 0xBF, 0xBF, 0xBF}),                                     // U+FFFFF
        b({0xF4, 0x8F, 0xBF, 0xBF}),                                     // U+10FFFF
        s("Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!!"),
    };
    for (const auto& v : valid) {
        SCOPED_TRACE(::testing::PrintToString(v));
        expect_every_split(v, verdict::valid);
        EXPECT_TRUE(is_valid_utf8(std::span<const uint8_t>(v)));
    }
}

TEST(utf8, invalid_vectors) {
    std::vector<bytes> invalid = {
        b({0x80}), b({0xBF}), b({0x80, 0xBF, 0x80}),                     // lone continuations
        b({0xC2, 0x41}), b({0xE0, 0xA0, 0x41}), b({0xF0, 0x90, 0x80, 0x41}),  // cut short
        b({0xC0, 0xAF}), b({0xC1, 0xBF}), b({0xC0, 0x80}),                // overlong 2
        b({0xE0, 0x80, 0xAF}), b({0xE0, 0x9F, 0xBF}),                    // overlong 3
        b({0xF0, 0x80, 0x80, 0xAF}), b({0xF0, 0x8F, 0xBF, 0xBF}),        // overlong 4
        b({0xF8, 0x88, 0x80, 0x80, 0xAF}), b({0xFC, 0x84, 0x80, 0x80, 0x80, 0xAF}),
        b({0xED, 0xA0, 0x80}), b({0xED, 0xAD, 0xBF}), b({0xED, 0xAE, 0x80}),  // surrogates
        b({0xED, 0xAF, 0xBF}), b({0xED, 0xB0, 0x80}), b({0xED, 0xBE, 0x80}),
        b({0xED, 0xBF, 0xBF}), b({0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80}),
        b({0xF4, 0x90, 0x80, 0x80}), b({0xF5, 0x80, 0x80, 0x80}),        // > U+10FFFF
        b({0xF7, 0xBF, 0xBF, 0xBF}), b({0xFE}), b({0xFF}), b({0xFE, 0xFE, 0xFF, 0xFF}),
        s("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80\x65\x64\x69\x74\x65\x64"),
    };
    for (const auto& v : invalid) {
        SCOPED_TRACE(::testing::PrintToString(v));
        expect_every_split(v, verdict::invalid);
        EXPECT_FALSE(is_valid_utf8(std::span<const uint8_t>(v)));
        EXPECT_EQ(dfa_first_bad(v), reference_first_bad(v));
    }
}

TEST(utf8, truncated_vectors_are_incomplete) {
    std::vector<bytes> truncated = {
        b({0xC2}), b({0xDF}), b({0xE0}), b({0xE0, 0xA0}), b({0xED, 0x9F}), b({0xEF, 0xBF}),
        b({0xF0}), b({0xF0, 0x90}), b({0xF0, 0x90, 0x80}), b({0xF4, 0x8F, 0xBF}),
        s("abc\xE2\x82"),
    };
    for (const auto& v : truncated) {
        SCOPED_TRACE(::testing::PrintToString(v));
        expect_every_split(v, verdict::incomplete);
        EXPECT_FALSE(is_valid_utf8(std::span<const uint8_t>(v)));
    }
}

TEST(utf8, rejects_at_earliest_byte) {
    // The byte that makes the prefix impossible is the one that turns the state to reject.
    EXPECT_EQ(dfa_first_bad(s("abc\xF5")), 3);
    EXPECT_EQ(dfa_first_bad(s("abc\xC0")), 3);
    EXPECT_EQ(dfa_first_bad(s("abc\xED\xA0")), 4);
    EXPECT_EQ(dfa_first_bad(s("abc\xE0\x9F")), 4);
    EXPECT_EQ(dfa_first_bad(s("abc\xF4\x90")), 4);
    // Bytes after the reject are never read: the state stays reject.
    EXPECT_EQ(utf8_validate(utf8_reject, s("abc").data(), 3), utf8_reject);
    EXPECT_EQ(utf8_validate(0x12345u, s("abc").data(), 3), utf8_reject);
}

TEST(utf8, ascii_fast_path_every_position_and_alignment) {
    std::vector<uint8_t> buf(200, 'a');
    for (size_t offset = 0; offset < 8; ++offset) {
        for (size_t len = 0; len + offset <= 80; ++len) {
            const uint8_t* p = buf.data() + offset;
            ASSERT_EQ(utf8_validate(utf8_accept, p, len), utf8_accept);
            for (size_t bad = 0; bad < len; ++bad) {
                buf[offset + bad] = 0xFF;
                ASSERT_EQ(utf8_validate(utf8_accept, p, len), utf8_reject) << offset << " " << len;
                buf[offset + bad] = 0xC3;  // lead byte: incomplete at the end, else invalid
                uint32_t st = utf8_validate(utf8_accept, p, len);
                ASSERT_EQ(classify(st), bad + 1 == len ? verdict::incomplete : verdict::invalid);
                buf[offset + bad] = 'a';
            }
        }
    }
}

TEST(utf8, mixed_long_text) {
    std::string t;
    for (int i = 0; i < 200; ++i) {
        t += "plain ascii run of text ";
        t += "\xE2\x82\xAC";          // €
        t += "\xF0\x9F\x98\x80";      // 😀
        t += "\xD0\x96";              // Ж
    }
    bytes v = s(t);
    EXPECT_TRUE(is_valid_utf8(std::span<const uint8_t>(v)));
    for (size_t cut = 0; cut < v.size(); cut += 7) {
        uint32_t st = utf8_validate(utf8_accept, v.data(), cut);
        ASSERT_NE(st, utf8_reject);
        ASSERT_EQ(utf8_validate(st, v.data() + cut, v.size() - cut), utf8_accept);
    }
    v[v.size() / 2 + 1] = 0xC0;
    EXPECT_FALSE(is_valid_utf8(std::span<const uint8_t>(v)));
}

TEST(utf8, random_against_reference) {
    static const uint8_t interesting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0,
                                          0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC,
                                          0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
        std::mt19937 rng(seed);
        for (int iter = 0; iter < 20000; ++iter) {
            bytes v(rng() % 12);
            for (auto& c : v) {
                c = rng() % 3 == 0 ? static_cast<uint8_t>(rng())
                                   : interesting[rng() % sizeof(interesting)];
            }
            long ref = reference_first_bad(v);
            ASSERT_EQ(dfa_first_bad(v), ref) << ::testing::PrintToString(v);
            verdict want = ref == -1 ? verdict::valid : ref == -2 ? verdict::incomplete
                                                                  : verdict::invalid;
            ASSERT_EQ(whole(v), want) << ::testing::PrintToString(v);
        }
    }
}

TEST(utf8, string_view_overload) {
    EXPECT_TRUE(is_valid_utf8(std::string_view("caf\xC3\xA9")));
    EXPECT_FALSE(is_valid_utf8(std::string_view("caf\xC3")));
}

}  // namespace
}  // namespace wsgate::protocol
