// A provided-buffer ring: buffers the kernel picks from for multishot recv.
//
// liburing 2.3 has no io_uring_setup_buf_ring, so the ring is mmap'ed here and
// registered with io_uring_register_buf_ring. Every buffer is registered with
// `size` bytes but laid out with `padding` extra bytes behind it, so a complete
// message inside one buffer can later be parsed in place by simdjson.
//
// Buffers go back to the kernel with recycle(); recycled buffers become visible
// with publish(), called once per loop turn (one store-release for the batch).
// The memory is touched at start-up: it is a fixed per-worker cost, not per
// connection, and it is what a loaded worker would touch anyway.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>

namespace wsgate::core {

class buf_ring {
public:
    buf_ring() = default;
    buf_ring(const buf_ring&) = delete;
    buf_ring& operator=(const buf_ring&) = delete;
    ~buf_ring();

    // Returns 0 or -errno. `count` must be a power of two ≤ 32768.
    int init(io_uring* ring, uint16_t group_id, unsigned count, unsigned size, unsigned padding);

    uint16_t group_id() const { return _bgid; }
    uint8_t* buffer(unsigned bid) { return _base + static_cast<size_t>(bid) * _stride; }
    unsigned buffer_size() const { return _size; }

    void recycle(unsigned bid) {
        io_uring_buf_ring_add(_br, buffer(bid), _size, static_cast<unsigned short>(bid),
                              io_uring_buf_ring_mask(_count), _pending++);
    }
    void publish() {
        if (_pending) {
            io_uring_buf_ring_advance(_br, _pending);
            _pending = 0;
        }
    }

private:
    io_uring* _ring = nullptr;
    io_uring_buf_ring* _br = nullptr;  // the shared ring of buffer descriptors
    uint8_t* _base = nullptr;          // the buffers themselves
    size_t _ring_bytes = 0;
    size_t _buf_bytes = 0;
    size_t _stride = 0;                // size + padding
    unsigned _count = 0;
    unsigned _size = 0;
    int _pending = 0;                  // recycled but not yet published
    uint16_t _bgid = 0;
};

}  // namespace wsgate::core
