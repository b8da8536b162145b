// Listening sockets: one per worker, all bound to the same address with SO_REUSEPORT,
// so the kernel spreads new connections across workers without a shared accept queue.
#pragma once

#include <cstdint>
#include <string>

namespace wsgate::core {

// Create, bind and listen. Returns the fd, or -errno with `error` describing the failure.
// `port` 0 picks a free port; read it back with bound_port().
int open_listener(const std::string& host, uint16_t port, unsigned backlog, std::string& error);
// The local port a socket is bound to, or 0.
uint16_t bound_port(int fd);

}  // namespace wsgate::core
