// UTF-8 DFA: byte → character class, (state, class) → state. See utf8.h.
//
// Classes split the byte range exactly where Unicode table 3-7 changes what may
// follow, so the automaton accepts precisely the well-formed sequences:
//
//   class  bytes                 meaning
//   0      00..7F                ASCII
//   1      80..8F                continuation (low)
//   2      90..9F                continuation (mid)
//   3      A0..BF                continuation (high)
//   4      C2..DF                lead of 2
//   5      E0                    lead of 3, second byte A0..BF (no overlong)
//   6      E1..EC EE..EF         lead of 3
//   7      ED                    lead of 3, second byte 80..9F (no surrogates)
//   8      F0                    lead of 4, second byte 90..BF (no overlong)
//   9      F1..F3                lead of 4
//   10     F4                    lead of 4, second byte 80..8F (<= U+10FFFF)
//   11     C0 C1 F5..FF          never valid
//
// States are pre-multiplied by 16 so a transition is one add and one load.
#include "protocol/utf8.h"

#include <array>
#include <cstring>

namespace wsgate::protocol {

namespace {

constexpr int n_classes = 16;  // 12 used, padded to a power of two

enum : uint8_t {
    s_accept = 0,    // between code points
    s_reject = 16,   // sticky failure
    s_need1 = 32,    // one continuation byte left (80..BF)
    s_need2 = 48,    // two left, any continuation first
    s_e0 = 64,       // after E0: A0..BF then one more
    s_ed = 80,       // after ED: 80..9F then one more
    s_need3 = 96,    // three left, any continuation first
    s_f0 = 112,      // after F0: 90..BF then two more
    s_f4 = 128,      // after F4: 80..8F then two more
    n_states = 9,
};

static_assert(s_accept == utf8_accept && s_reject == utf8_reject);

constexpr std::array<uint8_t, 256> make_classes() {
    std::array<uint8_t, 256> c{};
    for (int b = 0; b < 256; ++b) {
        uint8_t k = 11;
        if (b <= 0x7F) {
            k = 0;
        } else if (b <= 0x8F) {
            k = 1;
        } else if (b <= 0x9F) {
            k = 2;
        } else if (b <= 0xBF) {
            k = 3;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 4;
        } else if (b == 0xE0) {
            k = 5;
        } else if (b == 0xED) {
            k = 7;
        } else if (b >= 0xE1 && b <= 0xEF) {
            k = 6;
        } else if (b == 0xF0) {
            k = 8;
        } else if (b >= 0xF1 && b <= 0xF3) {
            k = 9;
        } else if (b == 0xF4) {
            k = 10;
        }
        c[b] = k;
    }
    return c;
}

constexpr std::array<uint8_t, n_states * n_classes> make_transitions() {
    std::array<uint8_t, n_states * n_classes> t{};
    for (auto& v : t) {
        v = s_reject;
    }
    auto set = [&t](uint8_t from, int cls, uint8_t to) { t[from + cls] = to; };
    set(s_accept, 0, s_accept);
    set(s_accept, 4, s_need1);
    set(s_accept, 5, s_e0);
    set(s_accept, 6, s_need2);
    set(s_accept, 7, s_ed);
    set(s_accept, 8, s_f0);
    set(s_accept, 9, s_need3);
    set(s_accept, 10, s_f4);
    for (int cls = 1; cls <= 3; ++cls) {
        set(s_need1, cls, s_accept);
        set(s_need2, cls, s_need1);
        set(s_need3, cls, s_need2);
    }
    set(s_e0, 3, s_need1);
    set(s_ed, 1, s_need1);
    set(s_ed, 2, s_need1);
    set(s_f0, 2, s_need2);
    set(s_f0, 3, s_need2);
    set(s_f4, 1, s_need2);
    return t;
}

constexpr std::array<uint8_t, 256> byte_class = make_classes();
constexpr std::array<uint8_t, n_states * n_classes> transition = make_transitions();

constexpr uint64_t high_bits = 0x8080808080808080ull;

inline uint64_t load64(const uint8_t* p) {
    uint64_t w;
    std::memcpy(&w, p, sizeof(w));
    return w;
}

}  // namespace

uint32_t utf8_validate(uint32_t state, const uint8_t* p, size_t n) {
    if (state >= n_states * n_classes) {
        return utf8_reject;  // not a state this validator produced
    }
    size_t i = 0;
    while (i < n) {
        if (state == s_accept) {
            // Between code points: skip pure-ASCII words without touching the tables.
            while (i + 16 <= n && ((load64(p + i) | load64(p + i + 8)) & high_bits) == 0) {
                i += 16;
            }
            while (i + 8 <= n && (load64(p + i) & high_bits) == 0) {
                i += 8;
            }
            while (i < n && p[i] < 0x80) {
                ++i;
            }
            if (i == n) {
                break;
            }
        }
        state = transition[state + byte_class[p[i]]];
        ++i;
        if (state == s_reject) {
            return utf8_reject;
        }
    }
    return state;
}

}  // namespace wsgate::protocol
