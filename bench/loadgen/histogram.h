// histogram.h — log-linear latency histogram (HdrHistogram-like, fixed precision).
//
// Values (nanoseconds) below 256 get one bucket each; above that every power
// of two is split into 128 linear sub-buckets, so a bucket is at most 1/128
// (0.78 %) of its value wide. Reported percentiles are bucket midpoints, which
// keeps the error under 0.4 %. Range: up to 2^44 ns (~4.9 h); larger values
// are clamped into the last bucket. Cost: 37 KiB per histogram and one
// count-leading-zeros per sample; merging is a bucket-wise add, so each
// thread records into its own instance without sharing.
#pragma once

#include <array>
#include <cstdint>

namespace wsbench {

class histogram {
public:
    static constexpr unsigned sub_bits = 7;                       // 128 sub-buckets per octave
    static constexpr unsigned max_bits = 44;                      // values < 2^44 ns
    static constexpr unsigned bucket_count = (max_bits - sub_bits + 1) << sub_bits;

    void record(uint64_t value) noexcept;
    void merge(const histogram& other) noexcept;

    // Value at quantile q in [0, 1] (bucket midpoint); 0 when empty.
    [[nodiscard]] uint64_t quantile(double q) const noexcept;
    [[nodiscard]] uint64_t count() const noexcept { return _count; }
    [[nodiscard]] uint64_t min() const noexcept { return _count == 0 ? 0 : _min; }
    [[nodiscard]] uint64_t max() const noexcept { return _max; }
    [[nodiscard]] double mean() const noexcept;

    // Exposed for tests: bucket index of a value and the value range of a bucket.
    [[nodiscard]] static unsigned index_of(uint64_t value) noexcept;
    [[nodiscard]] static uint64_t lower_bound(unsigned index) noexcept;
    [[nodiscard]] static uint64_t width(unsigned index) noexcept;

private:
    std::array<uint64_t, bucket_count> _buckets{}; // sample count per bucket
    uint64_t _count = 0;                           // total samples
    uint64_t _min = UINT64_MAX;                    // exact smallest sample
    uint64_t _max = 0;                             // exact largest sample
    long double _sum = 0;                          // exact sum, for the mean
};

} // namespace wsbench
