// Redis Cluster topology for one worker: which master owns each of the 16,384
// hash slots. Sans-I/O: loaded from a CLUSTER SLOTS reply and patched by -MOVED
// redirects; the core owns the connections (one subscriber and one command
// connection per master) and asks node_of(key_hash_slot(name)) where to send.
//
// Nodes are identified by "host:port" as the cluster announces them. A node index
// is stable for the life of the map (nodes are never removed; a master that lost
// all its slots simply owns none), so the core can keep a parallel array of
// connections. An empty or "?" host in a reply means "the host you asked"
// (Redis 7 with an unknown endpoint): the default host given at construction.
// Hosts must be IP literals (the core does no DNS on the worker thread); the core
// rejects others when it dials.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "backplane/redis_session.h"  // redis_value

namespace wsgate::backplane {

inline constexpr uint32_t cluster_slots = 16384;

struct cluster_node_addr {
    std::string host;
    uint16_t port = 0;
};

class cluster_map {
public:
    static constexpr uint32_t no_node = UINT32_MAX;

    explicit cluster_map(std::string default_host) : _default_host(std::move(default_host)) { _slot.fill(no_node); }

    // Replaces the slot table with a CLUSTER SLOTS reply:
    //   [[start, end, [host, port, id, ...], replica...], ...]
    // Only masters are used. False (map unchanged) with `error` set when the reply
    // is malformed (a range outside 0..16383 or reversed, a port outside 1..65535).
    [[nodiscard]] bool load_slots(const redis_value& reply, std::string& error);

    // A -MOVED: slot now lives on host:port (empty host: default host). Returns
    // the node index (added if new).
    uint32_t moved(uint16_t slot, std::string_view host, uint16_t port);

    // The master owning slot, or no_node (no map yet, or the slot is unassigned).
    uint32_t node_of(uint16_t slot) const { return _slot[slot]; }
    uint32_t find_or_add(std::string_view host, uint16_t port);
    const std::vector<cluster_node_addr>& nodes() const { return _nodes; }
    bool loaded() const { return _loaded; }
    size_t slots_covered() const;
    // Bumped on every change of the slot table: callers re-route when it moves.
    uint64_t version() const { return _version; }

private:
    std::string _default_host;
    std::vector<cluster_node_addr> _nodes;
    std::array<uint32_t, cluster_slots> _slot;  // 64 KiB per worker
    uint64_t _version = 0;
    bool _loaded = false;
};

}  // namespace wsgate::backplane
