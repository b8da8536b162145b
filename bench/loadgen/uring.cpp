// uring.cpp — see uring.h.
#include "uring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace wsbench {

namespace {

[[noreturn]] void fail(const char* what, int err) {
    throw std::runtime_error(std::string(what) + ": " + std::strerror(err < 0 ? -err : err));
}

} // namespace

uring::uring(const uring_config& cfg) : _cfg(cfg) {
    if (cfg.buf_count == 0 || (cfg.buf_count & (cfg.buf_count - 1)) != 0 || cfg.buf_count > 32768) {
        throw std::runtime_error("buffer count must be a power of two <= 32768");
    }
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_CQSIZE;
    p.cq_entries = cfg.sq_entries * 4;
    int rc = io_uring_queue_init_params(cfg.sq_entries, &_ring, &p);
    if (rc < 0) {
        fail("io_uring_queue_init_params (needs Linux >= 6.1)", rc);
    }
    if ((p.features & IORING_FEAT_EXT_ARG) == 0) {
        io_uring_queue_exit(&_ring);
        throw std::runtime_error("kernel lacks IORING_FEAT_EXT_ARG");
    }

    _br_bytes = sizeof(io_uring_buf) * cfg.buf_count;
    void* br = mmap(nullptr, _br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    _buf_bytes = static_cast<size_t>(cfg.buf_count) * cfg.buf_size;
    void* bufs = mmap(nullptr, _buf_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED || bufs == MAP_FAILED) {
        const int err = errno;
        io_uring_queue_exit(&_ring);
        fail("mmap buffer ring", err);
    }
    _br = static_cast<io_uring_buf_ring*>(br);
    _buf_base = static_cast<uint8_t*>(bufs);

    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(_br);
    reg.ring_entries = cfg.buf_count;
    reg.bgid = cfg.buf_group;
    rc = io_uring_register_buf_ring(&_ring, &reg, 0);
    if (rc < 0) {
        munmap(_br, _br_bytes);
        munmap(_buf_base, _buf_bytes);
        io_uring_queue_exit(&_ring);
        fail("io_uring_register_buf_ring", rc);
    }
    io_uring_buf_ring_init(_br);
    _br_mask = io_uring_buf_ring_mask(cfg.buf_count);
    for (unsigned i = 0; i < cfg.buf_count; ++i) {
        recycle(static_cast<uint16_t>(i));
    }
    publish();
}

uring::~uring() {
    // Closing the ring cancels whatever is still in flight; callers drain
    // first so that no send still points into memory they free.
    io_uring_unregister_buf_ring(&_ring, _cfg.buf_group);
    io_uring_queue_exit(&_ring);
    munmap(_br, _br_bytes);
    munmap(_buf_base, _buf_bytes);
}

io_uring_sqe* uring::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&_ring);
    while (s == nullptr) {
        io_uring_submit(&_ring);
        s = io_uring_get_sqe(&_ring);
    }
    return s;
}

void uring::submit() {
    const int rc = io_uring_submit(&_ring);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        fail("io_uring_submit", rc);
    }
}

int uring::submit_and_wait(uint64_t timeout_ns) {
    __kernel_timespec ts{};
    ts.tv_sec = static_cast<long long>(timeout_ns / 1'000'000'000ull);
    ts.tv_nsec = static_cast<long long>(timeout_ns % 1'000'000'000ull);
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(&_ring, &cqe, 1, &ts, nullptr);
    if (rc >= 0 || rc == -ETIME || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
        return rc < 0 ? rc : 0;
    }
    fail("io_uring_submit_and_wait_timeout", rc);
}

bool uring::enable_fixed_files(unsigned count) {
    return io_uring_register_files_sparse(&_ring, count) == 0;
}

bool uring::install_fixed(unsigned index, int fd) {
    return io_uring_register_files_update(&_ring, index, &fd, 1) == 1;
}

void uring::remove_fixed(unsigned index) {
    const int none = -1;
    io_uring_register_files_update(&_ring, index, &none, 1);
}

void uring::prep_recv_multishot(int fd, bool fixed, uint64_t user_data) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT | (fixed ? IOSQE_FIXED_FILE : 0);
    s->buf_group = _cfg.buf_group;
    io_uring_sqe_set_data64(s, user_data);
}

} // namespace wsbench
