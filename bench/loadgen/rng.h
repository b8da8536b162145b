// rng.h — xorshift64* generator for mask keys, handshake keys and filler.
//
// Not cryptographic, on purpose: RFC 6455 asks for unpredictable mask keys to
// protect intermediaries from browser-driven cache poisoning, which a load
// generator on loopback does not need; what it needs is a fresh key per frame
// for a few nanoseconds. Seeded from getrandom(2) per thread.
#pragma once

#include <sys/random.h>

#include <cstdint>

namespace wsbench {

class rng {
public:
    rng() noexcept {
        if (getrandom(&_state, sizeof(_state), 0) != sizeof(_state) || _state == 0) {
            _state = 0x9e3779b97f4a7c15ull;
        }
    }

    [[nodiscard]] uint64_t next() noexcept {
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return _state * 0x2545f4914f6cdd1dull;
    }

    [[nodiscard]] uint32_t next32() noexcept { return static_cast<uint32_t>(next() >> 32); }

private:
    uint64_t _state; // never zero
};

} // namespace wsbench
