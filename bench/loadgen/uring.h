// uring.h — one io_uring plus one provided-buffer ring, for a single thread.
//
// Assumptions: Linux >= 6.1 (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN,
// multishot recv), liburing >= 2.3 (buffer rings are registered with
// io_uring_register_buf_ring; 2.3 has no io_uring_setup_buf_ring). The ring
// must be created, submitted to and reaped on the same thread.
//
// user_data packs {op:8, generation:24, slot:32} so that a CQE for a slot that
// was freed and reused is recognised as stale instead of being applied to the
// new occupant (liburing proxy.h does the same).
//
// Buffers handed out by the kernel (IORING_CQE_F_BUFFER) must be given back
// with recycle(); recycled buffers become visible to the kernel at the next
// publish(), which callers do once per loop turn, before submitting.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>

namespace wsbench {

enum class op_kind : uint8_t {
    none = 0,
    connect,      // IORING_OP_CONNECT
    link_timeout, // timeout linked to a connect; its CQE is ignored
    send,         // IORING_OP_SEND
    recv,         // multishot IORING_OP_RECV with buffer select
    cancel,       // IORING_OP_ASYNC_CANCEL; its CQE is ignored
    accept,       // multishot IORING_OP_ACCEPT (servers)
};

[[nodiscard]] constexpr uint64_t pack_user_data(op_kind op, uint32_t slot, uint32_t gen) noexcept {
    return (static_cast<uint64_t>(op) << 56) | (static_cast<uint64_t>(gen & 0xffffff) << 32) | slot;
}
[[nodiscard]] constexpr op_kind user_data_op(uint64_t ud) noexcept {
    return static_cast<op_kind>(ud >> 56);
}
[[nodiscard]] constexpr uint32_t user_data_slot(uint64_t ud) noexcept {
    return static_cast<uint32_t>(ud);
}
[[nodiscard]] constexpr uint32_t user_data_gen(uint64_t ud) noexcept {
    return static_cast<uint32_t>(ud >> 32) & 0xffffff;
}

struct uring_config {
    unsigned sq_entries = 4096;  // SQ size; the CQ is 4x larger
    unsigned buf_count = 4096;   // provided buffers (power of two, <= 32768)
    unsigned buf_size = 16384;   // bytes per provided buffer
    uint16_t buf_group = 0;      // buffer group id
};

class uring {
public:
    explicit uring(const uring_config& cfg); // throws std::runtime_error
    ~uring();
    uring(const uring&) = delete;
    uring& operator=(const uring&) = delete;

    // A free SQE; submits pending ones first if the SQ is full. Never null.
    [[nodiscard]] io_uring_sqe* sqe();

    // Submits everything and waits for at least one CQE or the timeout.
    // Returns 0, -ETIME or -EINTR; other errors are fatal (std::runtime_error).
    int submit_and_wait(uint64_t timeout_ns);

    // Non-blocking submit (used while draining).
    void submit();

    // Makes sure n SQEs can be taken without an intermediate submit, so a
    // linked pair (connect + link timeout) never straddles two submits.
    void reserve(unsigned n) {
        if (io_uring_sq_space_left(&_ring) < n) {
            submit();
        }
    }

    // Calls f(cqe) for every ready CQE, then marks them seen. Returns the count.
    template <class F>
    unsigned drain(F&& f) {
        unsigned head;
        unsigned n = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&_ring, head, cqe) {
            f(cqe);
            ++n;
        }
        io_uring_cq_advance(&_ring, n);
        return n;
    }

    // Prepares a multishot recv that picks buffers from our group. With
    // `fixed`, `fd` is an index into the registered file table.
    void prep_recv_multishot(int fd, bool fixed, uint64_t user_data);

    // Registered ("fixed") files save the kernel an fget/fput and a file to
    // socket lookup per op, which shows at thousands of sockets. The table is
    // sparse, one entry per connection slot; sockets are still created with
    // socket(2) (setsockopt/bind need a real fd) and installed by index.
    // Returns false if the kernel refused the table (then use plain fds).
    bool enable_fixed_files(unsigned count);
    [[nodiscard]] bool install_fixed(unsigned index, int fd);
    void remove_fixed(unsigned index);

    [[nodiscard]] uint8_t* buffer(uint16_t bid) noexcept {
        return _buf_base + static_cast<size_t>(bid) * _cfg.buf_size;
    }
    [[nodiscard]] unsigned buf_size() const noexcept { return _cfg.buf_size; }

    // Hands a buffer back; visible to the kernel after publish().
    void recycle(uint16_t bid) noexcept {
        io_uring_buf_ring_add(_br, buffer(bid), _cfg.buf_size, bid, _br_mask, _br_pending++);
    }
    void publish() noexcept {
        if (_br_pending != 0) {
            io_uring_buf_ring_advance(_br, _br_pending);
            _br_pending = 0;
        }
    }

    [[nodiscard]] io_uring* raw() noexcept { return &_ring; }

private:
    uring_config _cfg;               // sizes chosen at construction
    io_uring _ring{};                // the ring itself
    io_uring_buf_ring* _br = nullptr; // shared buffer-ring descriptor array (mmap'd)
    size_t _br_bytes = 0;            // size of the _br mapping
    uint8_t* _buf_base = nullptr;    // buf_count * buf_size bytes of payload buffers
    size_t _buf_bytes = 0;           // size of the _buf_base mapping
    int _br_mask = 0;                // io_uring_buf_ring_mask(buf_count)
    int _br_pending = 0;             // buffers added since the last publish()
};

} // namespace wsbench
