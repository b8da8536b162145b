// clock.h — monotonic time for the load generator.
//
// Every timestamp in the benchmark (send stamps carried in payloads, phase
// deadlines, histogram samples) is CLOCK_MONOTONIC nanoseconds. clock_gettime
// goes through the vDSO (~20 ns), cheap enough to call once per sent message.
#pragma once

#include <cstdint>
#include <ctime>

namespace wsbench {

[[nodiscard]] inline uint64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint64_t ns_per_s = 1'000'000'000ull;
constexpr uint64_t ns_per_ms = 1'000'000ull;

[[nodiscard]] constexpr uint64_t seconds_to_ns(double s) noexcept {
    return s <= 0 ? 0 : static_cast<uint64_t>(s * 1e9);
}

} // namespace wsbench
