// Redis Cluster slot table: see cluster_map.h.
#include "backplane/cluster_map.h"

namespace wsgate::backplane {

uint32_t cluster_map::find_or_add(std::string_view host, uint16_t port) {
    if (host.empty() || host == "?") {
        host = _default_host;
    }
    for (uint32_t i = 0; i < _nodes.size(); ++i) {
        if (_nodes[i].port == port && _nodes[i].host == host) {
            return i;
        }
    }
    _nodes.push_back({std::string(host), port});
    return static_cast<uint32_t>(_nodes.size() - 1);
}

bool cluster_map::load_slots(const redis_value& reply, std::string& error) {
    if (reply.type() != redis_type::array) {
        error = "CLUSTER SLOTS: not an array";
        return false;
    }
    struct range {
        uint32_t start, end;
        std::string_view host;
        uint16_t port;
    };
    std::vector<range> ranges;
    for (size_t i = 0; i < reply.size(); ++i) {
        redis_value e = reply[i];
        if (e.type() != redis_type::array || e.size() < 3 || e[0].type() != redis_type::integer ||
            e[1].type() != redis_type::integer || e[2].type() != redis_type::array || e[2].size() < 2 ||
            e[2][0].type() != redis_type::string || e[2][1].type() != redis_type::integer) {
            error = "CLUSTER SLOTS: malformed entry";
            return false;
        }
        int64_t start = e[0].integer(), end = e[1].integer(), port = e[2][1].integer();
        if (start < 0 || end >= cluster_slots || start > end) {
            error = "CLUSTER SLOTS: slot range out of bounds";
            return false;
        }
        if (port < 1 || port > 65535) {
            error = "CLUSTER SLOTS: bad port";
            return false;
        }
        ranges.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(end), e[2][0].str(),
                          static_cast<uint16_t>(port)});
    }
    std::array<uint32_t, cluster_slots> next;
    next.fill(no_node);
    for (const range& r : ranges) {
        uint32_t node = find_or_add(r.host, r.port);
        for (uint32_t s = r.start; s <= r.end; ++s) {
            next[s] = node;
        }
    }
    if (next != _slot || !_loaded) {
        _slot = next;
        ++_version;
    }
    _loaded = true;
    return true;
}

uint32_t cluster_map::moved(uint16_t slot, std::string_view host, uint16_t port) {
    uint32_t node = find_or_add(host, port);
    if (slot < cluster_slots && _slot[slot] != node) {
        _slot[slot] = node;
        ++_version;
    }
    return node;
}

size_t cluster_map::slots_covered() const {
    size_t n = 0;
    for (uint32_t s : _slot) {
        n += s != no_node;
    }
    return n;
}

}  // namespace wsgate::backplane
