// Shared plumbing for the protocol/ fuzz targets (http_fuzz.cpp, ws_fuzz.cpp).
//
// Each target defines LLVMFuzzerTestOneInput() plus the two hooks below, and is
// linked either with libFuzzer (clang, -DWSGATE_FUZZ=ON) or with fuzz_driver.cpp,
// a plain main() that runs a seed corpus and seeded mutations of it (every
// compiler, every CI build). A broken invariant prints what broke plus a hex dump
// of the input and aborts: libFuzzer then saves the input as crash-*, the driver
// exits non-zero (SIGABRT) and ctest reports the test as failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::fuzz {

using bytes = std::vector<uint8_t>;

// Seed inputs for the driver (and for --write-corpus, to start libFuzzer from).
std::vector<bytes> seed_corpus();
// Tokens the driver's mutator inserts or overwrites with (may be empty).
std::vector<std::string> dictionary();
// Mutations the driver runs by default: about 10 s in a Debug+ASan build on a
// 2-core VM (the targets differ a lot in cost per input).
unsigned long default_iterations();

// The input being run, for the failure dump (set by each target on entry).
inline const uint8_t* g_input = nullptr;
inline size_t g_input_size = 0;
// Set by fail(): the abort that follows is an invariant failure, already reported.
inline bool g_check_failed = false;

inline void set_current_input(const uint8_t* p, size_t n) {
    g_input = p;
    g_input_size = n;
}

// Hex dump, 32 bytes a line, plus one line of C-string escape (paste into a test).
inline void dump_input(FILE* f, const uint8_t* p, size_t n) {
    constexpr size_t max_dump = 16384;
    std::fprintf(f, "---- input: %zu bytes (hex) ----\n", n);
    size_t shown = n < max_dump ? n : max_dump;
    for (size_t i = 0; i < shown; ++i) {
        std::fprintf(f, "%02x%s", p[i], (i % 32 == 31 || i + 1 == shown) ? "\n" : "");
    }
    if (shown < n) {
        std::fprintf(f, "... (%zu more bytes not shown)\n", n - shown);
    }
    std::fprintf(f, "---- end of input ----\n");
    std::fflush(f);
}

[[noreturn]] inline void fail(const char* file, int line, const char* cond,
                              const std::string& msg) {
    std::fprintf(stderr, "\nFUZZ INVARIANT FAILED at %s:%d\n  check: %s\n  %s\n", file, line, cond,
                 msg.c_str());
    if (g_input) {
        dump_input(stderr, g_input, g_input_size);
    }
    g_check_failed = true;
    std::abort();
}

// printf-style message into a std::string (for FUZZ_CHECK's detail).
template <typename... Args>
std::string fmt(const char* f, Args... args) {
    char buf[512];
    int n = std::snprintf(buf, sizeof(buf), f, args...);
    return std::string(buf, n < 0 ? 0 : n < static_cast<int>(sizeof(buf)) ? n : sizeof(buf) - 1);
}
inline std::string fmt(const char* f) {
    return f;
}

inline std::string hex(const uint8_t* p, size_t n, size_t max = 64) {
    std::string s;
    char b[4];
    for (size_t i = 0; i < n && i < max; ++i) {
        std::snprintf(b, sizeof(b), "%02x", p[i]);
        s += b;
    }
    if (n > max) {
        s += "...";
    }
    return s;
}
inline std::string hex(std::string_view v, size_t max = 64) {
    return hex(reinterpret_cast<const uint8_t*>(v.data()), v.size(), max);
}

// Reads the fuzz input front to back; past the end it yields zeros, so every
// input, however short, decodes to something.
struct input_reader {
    const uint8_t* p;
    size_t n;
    size_t pos = 0;

    bool empty() const { return pos >= n; }
    size_t left() const { return pos < n ? n - pos : 0; }
    uint8_t u8() { return pos < n ? p[pos++] : 0; }
    uint16_t u16() {
        uint16_t hi = u8();
        return static_cast<uint16_t>((hi << 8) | u8());
    }
    uint32_t u32() {
        uint32_t hi = u16();
        return (hi << 16) | u16();
    }
};

}  // namespace wsgate::fuzz

// Always on (also in Release): the fuzz targets exist to check these.
#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            ::wsgate::fuzz::fail(__FILE__, __LINE__, #cond, ::wsgate::fuzz::fmt(__VA_ARGS__)); \
        }                                                                                      \
    } while (0)
