#include "core/buf_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace wsgate::core {

int buf_ring::init(io_uring* ring, uint16_t group_id, unsigned count, unsigned size, unsigned padding) {
    if (count == 0 || count > 32768 || (count & (count - 1)) != 0) {
        return -EINVAL;
    }
    _ring = ring;
    _bgid = group_id;
    _count = count;
    _size = size;
    _stride = size + padding;
    _ring_bytes = count * sizeof(io_uring_buf);
    void* r = mmap(nullptr, _ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r == MAP_FAILED) {
        return -errno;
    }
    _br = static_cast<io_uring_buf_ring*>(r);
    _buf_bytes = _stride * count;
    void* b = mmap(nullptr, _buf_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE,
                   -1, 0);
    if (b == MAP_FAILED) {
        return -errno;
    }
    _base = static_cast<uint8_t*>(b);

    io_uring_buf_reg reg;
    std::memset(&reg, 0, sizeof(reg));
    reg.ring_addr = reinterpret_cast<unsigned long>(_br);
    reg.ring_entries = count;
    reg.bgid = group_id;
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret < 0) {
        return ret;
    }
    io_uring_buf_ring_init(_br);
    for (unsigned i = 0; i < count; ++i) {
        recycle(i);
    }
    publish();
    return 0;
}

buf_ring::~buf_ring() {
    if (_ring && _br) {
        io_uring_unregister_buf_ring(_ring, _bgid);
    }
    if (_br) {
        munmap(_br, _ring_bytes);
    }
    if (_base) {
        munmap(_base, _buf_bytes);
    }
}

}  // namespace wsgate::core
