// raw_echo_server.cpp — raw TCP io_uring echo server: the ceiling the gateway
// is compared to.
//
// One thread, one ring (SINGLE_ISSUER | DEFER_TASKRUN), SO_REUSEPORT listener
// with a multishot accept, one multishot recv per connection into a
// provided-buffer ring, and one send in flight per connection: bytes received
// while a send is in flight are queued and go out together in the next send
// (coalescing), flushed once per loop turn with a single submit. A connection
// whose peer stops reading has its recv cancelled once 4 MiB are queued and
// re-armed when the queue halves. Sockets are also installed in the ring's
// registered file table (saves an fget per op). Kernel: Linux >= 6.1. No WebSocket, no
// parsing: whatever it costs the gateway beyond this is protocol work.
//
// Usage: raw-echo-server --listen 127.0.0.1:9001 [--cpu C]
#include "loadgen/byte_buffer.h"
#include "loadgen/proc_stats.h"
#include "loadgen/uring.h"

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace wsbench;

constexpr size_t max_queued = 4u << 20; // per-connection backlog before reads pause
constexpr unsigned fixed_table_size = 65536; // slots beyond it use plain fds

volatile std::sig_atomic_t g_stop = 0; // set by SIGINT/SIGTERM; async-signal-safe

struct echo_conn {
    int fd = -1;              // socket, -1 when the slot is free
    uint32_t gen = 0;         // bumped on free (stale CQE detection)
    bool recv_armed = false;  // multishot recv in flight
    bool send_inflight = false; // `sending` handed to the kernel
    bool dirty = false;       // in the flush list
    bool paused = false;      // recv cancelled for backpressure
    bool closing = false;     // ops cancelled; freed when none is left
    bool freeing = false;     // listed in _to_free
    bool fixed = false;       // registered as fixed file #slot; SQEs use the index
    byte_buffer pending;      // received, not yet sent
    byte_buffer sending;      // in-flight send (immutable while in flight)
};

class echo_server {
public:
    echo_server(int listen_fd, const uring_config& cfg) : _lfd(listen_fd), _ring(cfg) {
        _fixed_slots = _ring.enable_fixed_files(fixed_table_size) ? fixed_table_size : 0;
    }

    void run() {
        arm_accept();
        while (g_stop == 0) {
            flush();
            _ring.publish();
            _ring.submit_and_wait(1'000'000'000ull);
            _ring.drain([this](const io_uring_cqe* cqe) { dispatch(cqe); });
            for (const uint32_t slot : _to_free) {
                free_slot(slot);
            }
            _to_free.clear();
        }
    }

private:
    void arm_accept() {
        io_uring_sqe* s = _ring.sqe();
        io_uring_prep_multishot_accept(s, _lfd, nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_sqe_set_data64(s, pack_user_data(op_kind::accept, 0, 0));
    }

    void arm_recv(echo_conn& c, uint32_t slot) {
        _ring.prep_recv_multishot(io_fd(c, slot), c.fixed, pack_user_data(op_kind::recv, slot, c.gen));
        c.recv_armed = true;
    }

    void dispatch(const io_uring_cqe* cqe) {
        const uint64_t ud = cqe->user_data;
        const op_kind op = user_data_op(ud);
        if (op == op_kind::accept) {
            on_accept(cqe);
            return;
        }
        const uint32_t slot = user_data_slot(ud);
        echo_conn* c = slot < _conns.size() ? _conns[slot].get() : nullptr;
        const bool stale = c == nullptr || c->fd < 0 || c->gen != user_data_gen(ud);
        if (op == op_kind::recv) {
            if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
                const auto bid = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                if (!stale && cqe->res > 0 && !c->closing) {
                    c->pending.append(_ring.buffer(bid), static_cast<size_t>(cqe->res));
                    mark_dirty(*c, slot);
                }
                _ring.recycle(bid);
            }
            if (stale) {
                return;
            }
            on_recv(*c, slot, cqe);
        } else if (op == op_kind::send && !stale) {
            on_send(*c, slot, cqe->res);
        }
    }

    void on_accept(const io_uring_cqe* cqe) {
        if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
            arm_accept();
        }
        if (cqe->res < 0) {
            std::fprintf(stderr, "raw-echo-server: accept: %s\n", std::strerror(-cqe->res));
            return;
        }
        const int fd = cqe->res;
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        uint32_t slot;
        if (_free.empty()) {
            slot = static_cast<uint32_t>(_conns.size());
            _conns.push_back(std::make_unique<echo_conn>());
        } else {
            slot = _free.back();
            _free.pop_back();
        }
        echo_conn& c = *_conns[slot];
        c.fd = fd;
        c.fixed = slot < _fixed_slots && _ring.install_fixed(slot, fd);
        arm_recv(c, slot);
    }

    void on_recv(echo_conn& c, uint32_t slot, const io_uring_cqe* cqe) {
        if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
            c.recv_armed = false;
        }
        const int res = cqe->res;
        if (c.closing) {
            maybe_free(c, slot);
            return;
        }
        if (res == -ECANCELED && c.paused) {
            return; // backpressure cancel; re-armed when the queue drains
        }
        if (res == 0 || (res < 0 && res != -ENOBUFS)) {
            start_close(c, slot);
            return;
        }
        if (c.pending.size() + c.sending.size() > max_queued && c.recv_armed && !c.paused) {
            c.paused = true;
            io_uring_sqe* s = _ring.sqe();
            io_uring_prep_cancel64(s, pack_user_data(op_kind::recv, slot, c.gen), 0);
            io_uring_sqe_set_data64(s, pack_user_data(op_kind::cancel, slot, c.gen));
            return;
        }
        if (!c.recv_armed && !c.paused) {
            arm_recv(c, slot);
        }
    }

    void on_send(echo_conn& c, uint32_t slot, int res) {
        c.send_inflight = false;
        if (c.closing) {
            maybe_free(c, slot);
            return;
        }
        if (res < 0) {
            start_close(c, slot);
            return;
        }
        c.sending.consume(static_cast<size_t>(res));
        if (!c.sending.empty() || !c.pending.empty()) {
            mark_dirty(c, slot);
        }
        if (c.paused && !c.recv_armed && c.pending.size() + c.sending.size() < max_queued / 2) {
            c.paused = false;
            arm_recv(c, slot);
        }
    }

    static int io_fd(const echo_conn& c, uint32_t slot) {
        return c.fixed ? static_cast<int>(slot) : c.fd;
    }

    void mark_dirty(echo_conn& c, uint32_t slot) {
        if (!c.dirty) {
            c.dirty = true;
            _dirty.push_back(slot);
        }
    }

    // One send per connection per turn, carrying everything queued so far.
    void flush() {
        for (const uint32_t slot : _dirty) {
            echo_conn& c = *_conns[slot];
            c.dirty = false;
            if (c.fd < 0 || c.closing || c.send_inflight) {
                continue;
            }
            if (c.sending.empty()) {
                c.sending.swap(c.pending);
            }
            if (c.sending.empty()) {
                continue;
            }
            io_uring_sqe* s = _ring.sqe();
            io_uring_prep_send(s, io_fd(c, slot), c.sending.data(), c.sending.size(), MSG_NOSIGNAL);
            s->flags |= c.fixed ? IOSQE_FIXED_FILE : 0;
            io_uring_sqe_set_data64(s, pack_user_data(op_kind::send, slot, c.gen));
            c.send_inflight = true;
        }
        _dirty.clear();
    }

    void start_close(echo_conn& c, uint32_t slot) {
        c.closing = true;
        if (c.recv_armed || c.send_inflight) {
            io_uring_sqe* s = _ring.sqe();
            io_uring_prep_cancel_fd(s, io_fd(c, slot),
                                    IORING_ASYNC_CANCEL_ALL | (c.fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
            io_uring_sqe_set_data64(s, pack_user_data(op_kind::cancel, slot, c.gen));
        }
        maybe_free(c, slot);
    }

    void maybe_free(echo_conn& c, uint32_t slot) {
        if (!c.recv_armed && !c.send_inflight && !c.freeing) {
            c.freeing = true;
            _to_free.push_back(slot); // freed after the CQE batch
        }
    }

    void free_slot(uint32_t slot) {
        echo_conn& c = *_conns[slot];
        if (c.fixed) {
            _ring.remove_fixed(slot); // drop the table's reference, or close() would not close
        }
        close(c.fd);
        c.fd = -1;
        c.gen = (c.gen + 1) & 0xffffff;
        c.recv_armed = c.send_inflight = c.dirty = c.paused = c.closing = c.freeing = c.fixed = false;
        c.pending.release();
        c.sending.release();
        _free.push_back(slot);
    }

    int _lfd;                                      // listening socket
    uring _ring;                                   // the only ring
    std::vector<std::unique_ptr<echo_conn>> _conns; // slab; elements never move
    std::vector<uint32_t> _free;                   // free slots
    std::vector<uint32_t> _dirty;                  // slots to flush this turn
    std::vector<uint32_t> _to_free;                // slots to free after this batch
    unsigned _fixed_slots = 0;                     // registered file table size, 0 if refused
};

int open_listener(const std::string& spec) {
    const auto colon = spec.rfind(':');
    if (colon == std::string::npos) {
        throw std::runtime_error("--listen expects HOST:PORT");
    }
    std::string host = spec.substr(0, colon);
    const int port = std::stoi(spec.substr(colon + 1));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (host.empty() || host == "*") {
        host = "0.0.0.0";
    }
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
        throw std::runtime_error("--listen host must be an IPv4 address");
    }
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
        const int err = errno;
        close(fd);
        throw std::runtime_error("cannot listen on " + spec + ": " + std::strerror(err));
    }
    return fd;
}

void on_signal(int) {
    g_stop = 1;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"raw-echo-server: raw TCP io_uring echo server (benchmark ceiling)"};
    std::string listen_addr = "127.0.0.1:9001";
    int cpu = -1;
    app.add_option("--listen", listen_addr, "HOST:PORT to listen on");
    app.add_option("--cpu", cpu, "pin the server thread to this CPU");
    CLI11_PARSE(app, argc, argv);

    struct sigaction sa {};
    sa.sa_handler = on_signal; // no SA_RESTART: io_uring_enter returns -EINTR
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    try {
        if (cpu >= 0 && !pin_current_thread(cpu)) {
            std::fprintf(stderr, "raw-echo-server: cannot pin to CPU %d\n", cpu);
        }
        raise_nofile_limit(1u << 20);
        const int lfd = open_listener(listen_addr);
        uring_config cfg;
        cfg.buf_count = 4096;
        cfg.buf_size = 16384;
        echo_server server(lfd, cfg);
        std::fprintf(stderr, "raw-echo-server: listening on %s\n", listen_addr.c_str());
        server.run();
        close(lfd);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "raw-echo-server: %s\n", e.what());
        return 1;
    }
    return 0;
}
