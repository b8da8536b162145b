// scenario_common.cpp — setup shared by the scenarios.
#include "scenarios.h"

#include "clock.h"

namespace wsbench {

loop_config make_loop_config(const common_options& opt, const target& dest,
                             unsigned max_connections, size_t message_size) {
    loop_config cfg;
    cfg.dest = &dest;
    cfg.sources = parse_source_addrs(opt.source_addrs);
    cfg.max_connections = max_connections == 0 ? 1 : max_connections;
    cfg.connect_concurrency = opt.connect_concurrency == 0 ? 1 : opt.connect_concurrency;
    cfg.connect_timeout_ns = seconds_to_ns(opt.connect_timeout_s);
    cfg.fixed_files = !opt.no_fixed_files;
    // Provided buffers: big enough that a message usually lands in one, but
    // capped at 32 MiB per thread. Many small completions between two loop
    // turns are what drains the ring, so the count matters more than the size.
    unsigned buf_size = 4096;
    while (buf_size < message_size + 14 && buf_size < 65536) {
        buf_size *= 2;
    }
    unsigned buf_count = 4096;
    while (buf_count > 256 && static_cast<uint64_t>(buf_count) * buf_size > (32u << 20)) {
        buf_count /= 2;
    }
    cfg.ring.buf_size = buf_size;
    cfg.ring.buf_count = buf_count;
    cfg.ring.sq_entries = 4096;
    return cfg;
}

} // namespace wsbench
