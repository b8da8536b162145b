// histogram.cpp — see histogram.h for the bucket layout.
#include "histogram.h"

#include <bit>

namespace wsbench {

unsigned histogram::index_of(uint64_t value) noexcept {
    constexpr uint64_t limit = (uint64_t{1} << max_bits) - 1;
    if (value > limit) {
        value = limit;
    }
    if (value < (uint64_t{2} << sub_bits)) {
        return static_cast<unsigned>(value);
    }
    // Highest set bit m >= sub_bits + 1; keep the top sub_bits + 1 bits.
    const unsigned m = 63u - static_cast<unsigned>(std::countl_zero(value));
    const unsigned shift = m - sub_bits;
    return (shift << sub_bits) + static_cast<unsigned>(value >> shift);
}

uint64_t histogram::lower_bound(unsigned index) noexcept {
    if (index < (2u << sub_bits)) {
        return index;
    }
    const unsigned shift = (index >> sub_bits) - 1;
    const uint64_t top = index - (shift << sub_bits);
    return top << shift;
}

uint64_t histogram::width(unsigned index) noexcept {
    if (index < (2u << sub_bits)) {
        return 1;
    }
    return uint64_t{1} << ((index >> sub_bits) - 1);
}

void histogram::record(uint64_t value) noexcept {
    ++_buckets[index_of(value)];
    ++_count;
    _sum += static_cast<long double>(value);
    if (value < _min) {
        _min = value;
    }
    if (value > _max) {
        _max = value;
    }
}

void histogram::merge(const histogram& other) noexcept {
    for (unsigned i = 0; i < bucket_count; ++i) {
        _buckets[i] += other._buckets[i];
    }
    _count += other._count;
    _sum += other._sum;
    if (other._count != 0 && other._min < _min) {
        _min = other._min;
    }
    if (other._max > _max) {
        _max = other._max;
    }
}

double histogram::mean() const noexcept {
    return _count == 0 ? 0.0 : static_cast<double>(_sum / static_cast<long double>(_count));
}

uint64_t histogram::quantile(double q) const noexcept {
    if (_count == 0) {
        return 0;
    }
    if (q <= 0) {
        return min();
    }
    if (q >= 1) {
        return _max;
    }
    // Rank of the sample at quantile q, 1-based, rounded up (nearest-rank method).
    auto rank = static_cast<uint64_t>(q * static_cast<double>(_count));
    if (static_cast<double>(rank) < q * static_cast<double>(_count)) {
        ++rank;
    }
    if (rank == 0) {
        rank = 1;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < bucket_count; ++i) {
        seen += _buckets[i];
        if (seen >= rank) {
            uint64_t mid = lower_bound(i) + width(i) / 2;
            // Never report outside the exact observed range.
            if (mid < _min) {
                mid = _min;
            }
            if (mid > _max) {
                mid = _max;
            }
            return mid;
        }
    }
    return _max;
}

} // namespace wsbench
