// Redis URL parsing, channel / key names and hash slots: see redis_names.h for
// the naming rules and the brace escape of cluster mode.
#include "backplane/redis_names.h"

#include <arpa/inet.h>  // inet_pton: pure parsing of the IPv6 literal, no socket

#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace wsgate::backplane {

namespace {

// ---- URL helpers ----

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = lower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

// RFC 3986 percent-decoding of one userinfo part. The part itself is never
// echoed in the error: it may be a password.
bool percent_decode(std::string_view in, std::string& out, const char* what, std::string& error) {
    out.clear();
    out.reserve(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out.push_back(in[i]);
            continue;
        }
        int hi = (i + 1 < in.size()) ? hex_value(in[i + 1]) : -1;
        int lo = (i + 2 < in.size()) ? hex_value(in[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            error = std::string("invalid percent-encoding in ") + what + " (expected %XX)";
            return false;
        }
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return true;
}

// Digits only, at most max_digits of them (so the value cannot overflow).
bool parse_decimal(std::string_view s, size_t max_digits, unsigned long& value) {
    if (s.empty() || s.size() > max_digits) {
        return false;
    }
    value = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    return true;
}

// A DNS name or an IPv4 literal: letters, digits, '-', '.', '_' (the last for
// container and service names). Resolution is core/'s business.
bool valid_hostname(std::string_view h) {
    for (char c : h) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return !h.empty();
}

bool parse_port(std::string_view s, uint16_t& port, std::string& error) {
    if (s.empty()) {
        error = "missing port after ':'";
        return false;
    }
    unsigned long v = 0;
    if (!parse_decimal(s, 5, v) || v < 1 || v > 65535) {
        error = "invalid port '" + std::string(s) + "' (expected 1..65535)";
        return false;
    }
    port = static_cast<uint16_t>(v);
    return true;
}

bool parse_host_port(std::string_view hp, redis_endpoint& out, std::string& error) {
    if (hp.empty()) {
        error = "missing host";
        return false;
    }
    std::string_view port_part;
    bool has_port = false;
    if (hp.front() == '[') {
        size_t close = hp.find(']');
        if (close == std::string_view::npos) {
            error = "missing ']' after IPv6 address";
            return false;
        }
        std::string addr(hp.substr(1, close - 1));
        if (addr.empty()) {
            error = "missing host";
            return false;
        }
        unsigned char buf[16];
        if (inet_pton(AF_INET6, addr.c_str(), buf) != 1) {
            error = "invalid IPv6 address '" + addr + "'";
            return false;
        }
        out.host = std::move(addr);
        std::string_view after = hp.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                error = "unexpected '" + std::string(after) + "' after IPv6 address";
                return false;
            }
            has_port = true;
            port_part = after.substr(1);
        }
    } else {
        size_t colon = hp.find(':');
        std::string_view host = hp.substr(0, colon);
        if (colon != std::string_view::npos) {
            if (hp.find(':', colon + 1) != std::string_view::npos) {
                error = "IPv6 address must be in brackets (redis://[::1]:6379)";
                return false;
            }
            has_port = true;
            port_part = hp.substr(colon + 1);
        }
        if (host.empty()) {
            error = "missing host";
            return false;
        }
        if (!valid_hostname(host)) {
            error = "invalid host '" + std::string(host) + "'";
            return false;
        }
        out.host = std::string(host);
    }
    if (has_port) {
        return parse_port(port_part, out.port, error);
    }
    return true;
}

bool parse_userinfo(std::string_view ui, redis_endpoint& out, std::string& error) {
    if (ui.empty()) {
        error = "empty user info before '@'";
        return false;
    }
    size_t colon = ui.find(':');
    if (colon == std::string_view::npos) {
        // redis-cli takes "x@" as a password, redis-py as a user name.
        error = "user info without ':' (write ':PASSWORD@' or 'USER:PASSWORD@')";
        return false;
    }
    if (!percent_decode(ui.substr(0, colon), out.user, "user", error)) {
        return false;
    }
    if (!percent_decode(ui.substr(colon + 1), out.password, "password", error)) {
        return false;
    }
    if (out.password.empty()) {
        error = "empty password";
        return false;
    }
    return true;
}

// ---- CRC16 ----

constexpr std::array<uint16_t, 256> make_crc16_table() {
    std::array<uint16_t, 256> t{};
    for (unsigned i = 0; i < 256; ++i) {
        uint16_t crc = static_cast<uint16_t>(i << 8);
        for (int b = 0; b < 8; ++b) {
            crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
        }
        t[i] = crc;
    }
    return t;
}

constexpr std::array<uint16_t, 256> crc16_table = make_crc16_table();

// ---- names ----

constexpr std::string_view k_room = "room:";
constexpr std::string_view k_user = "user:";
constexpr std::string_view k_broadcast = "broadcast";

// Cluster mode: ids whose first byte would empty the hash tag ('}') or collide
// with the escape ('%') get one '%' in front (see redis_names.h).
bool needs_escape(std::string_view id) { return !id.empty() && (id.front() == '}' || id.front() == '%'); }

// Ids come validated (protocol names, configured server id); empty is a bug here.
void check_id(std::string_view id) {
    if (id.empty()) {
        std::fprintf(stderr, "wsgate: empty id for a Redis channel or key name\n");
        std::abort();
    }
}

}  // namespace

// ---- URL ----

std::string redis_endpoint::redacted() const {
    std::string s = cluster ? "redis+cluster://" : "redis://";
    if (has_auth()) {
        s += user;
        s += ":***@";
    }
    if (host.find(':') != std::string::npos) {
        s += '[';
        s += host;
        s += ']';
    } else {
        s += host;
    }
    s += ':';
    s += std::to_string(port);
    if (db != 0) {
        s += '/';
        s += std::to_string(db);
    }
    return s;
}

bool parse_redis_url(std::string_view url, redis_endpoint& out, std::string& error) {
    out = redis_endpoint{};
    size_t sep = url.find("://");
    if (sep == std::string_view::npos || sep == 0) {
        error = "missing scheme (expected redis://HOST:PORT or redis+cluster://HOST:PORT)";
        return false;
    }
    std::string_view scheme = url.substr(0, sep);
    if (iequals(scheme, "redis")) {
        out.cluster = false;
    } else if (iequals(scheme, "redis+cluster")) {
        out.cluster = true;
    } else if (iequals(scheme, "rediss") || iequals(scheme, "rediss+cluster")) {
        error = "unsupported scheme '" + std::string(scheme) + "' (TLS is not supported)";
        return false;
    } else {
        error = "unsupported scheme '" + std::string(scheme) + "' (expected redis:// or redis+cluster://)";
        return false;
    }

    std::string_view rest = url.substr(sep + 3);
    // Neither is echoed: a query could carry a password.
    size_t qf = rest.find_first_of("?#");
    if (qf != std::string_view::npos) {
        error = rest[qf] == '?' ? "unsupported query string" : "unsupported fragment";
        return false;
    }
    size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);

    // The last '@' ends the user info, so an unescaped '@' in a password still works.
    size_t at = authority.rfind('@');
    if (at != std::string_view::npos) {
        if (!parse_userinfo(authority.substr(0, at), out, error)) {
            return false;
        }
        authority = authority.substr(at + 1);
    }
    if (!parse_host_port(authority, out, error)) {
        return false;
    }

    if (path.size() > 1) {  // "" and "/" mean database 0
        std::string_view db = path.substr(1);
        unsigned long v = 0;
        if (!parse_decimal(db, 7, v) || v > max_redis_db) {
            error = "invalid database '" + std::string(db) + "' (expected 0.." + std::to_string(max_redis_db) + ")";
            return false;
        }
        out.db = static_cast<unsigned>(v);
    }
    if (out.cluster && out.db != 0) {
        error = "database " + std::to_string(out.db) +
                " not supported with redis+cluster:// (Redis Cluster has only database 0)";
        return false;
    }
    return true;
}

// ---- hash slots ----

uint16_t crc16_xmodem(const void* data, size_t len) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint16_t crc = 0;
    for (size_t i = 0; i < len; ++i) {
        crc = static_cast<uint16_t>((crc << 8) ^ crc16_table[((crc >> 8) ^ p[i]) & 0xff]);
    }
    return crc;
}

uint16_t key_hash_slot(std::string_view key) {
    size_t open = key.find('{');
    if (open != std::string_view::npos) {
        size_t close = key.find('}', open + 1);
        if (close != std::string_view::npos && close != open + 1) {
            return crc16_xmodem(key.data() + open + 1, close - open - 1) & (redis_slot_count - 1);
        }
    }
    return crc16_xmodem(key.data(), key.size()) & (redis_slot_count - 1);
}

// ---- names ----

bool redis_names::check_prefix(std::string_view prefix, bool cluster, std::string& error) {
    if (cluster && prefix.find_first_of("{}") != std::string_view::npos) {
        error = "key prefix '" + std::string(prefix) +
                "' contains '{' or '}', which would break hash tags in Redis Cluster mode";
        return false;
    }
    return true;
}

redis_names::redis_names(std::string prefix, bool cluster) : _prefix(std::move(prefix)), _cluster(cluster) {
    std::string error;
    if (!check_prefix(_prefix, _cluster, error)) {
        throw std::invalid_argument(error);
    }
}

std::string redis_names::make(std::string_view kind, std::string_view id, std::string_view suffix) const {
    check_id(id);
    std::string s;
    s.reserve(_prefix.size() + kind.size() + id.size() + suffix.size() + 3);
    s += _prefix;
    s += kind;
    if (_cluster) {
        s += '{';
        if (needs_escape(id)) {
            s += '%';
        }
        s += id;
        s += '}';
    } else {
        s += id;
    }
    s += suffix;
    return s;
}

std::string redis_names::broadcast_channel() const { return _prefix + std::string(k_broadcast); }

std::string redis_names::room_channel(std::string_view room) const { return make(k_room, room, {}); }

std::string redis_names::user_channel(std::string_view user) const { return make(k_user, user, {}); }

std::string redis_names::room_members_key(std::string_view room) const { return make(k_room, room, ":members"); }

std::string redis_names::connection_key(std::string_view user) const { return make("connection:", user, {}); }

std::string redis_names::connection_owners_key(std::string_view user) const {
    return make("connection:", user, ":owners");
}

std::string redis_names::server_connections_key(std::string_view server) const {
    return make("server:", server, ":connections");
}

std::string redis_names::server_alive_key(std::string_view server) const { return make("server:", server, ":alive"); }

channel_ref redis_names::parse_channel(std::string_view channel) const {
    if (!channel.starts_with(_prefix)) {
        return {};
    }
    std::string_view rest = channel.substr(_prefix.size());
    if (rest == k_broadcast) {
        return {channel_kind::broadcast, {}};
    }
    channel_kind kind;
    if (rest.starts_with(k_room)) {
        kind = channel_kind::room;
    } else if (rest.starts_with(k_user)) {
        kind = channel_kind::user;
    } else {
        return {};
    }
    std::string_view body = rest.substr(k_room.size());  // "room:" and "user:" have one length
    if (!_cluster) {
        return body.empty() ? channel_ref{} : channel_ref{kind, body};
    }
    // "{" tagged "}", tagged non-empty; undo the leading-'%' escape.
    if (body.size() < 3 || body.front() != '{' || body.back() != '}') {
        return {};
    }
    std::string_view tagged = body.substr(1, body.size() - 2);
    if (tagged.front() == '%') {
        tagged.remove_prefix(1);
        if (!needs_escape(tagged)) {  // "%" alone or "%x": never written by make()
            return {};
        }
    } else if (tagged.front() == '}') {  // would be an empty tag: never written by make()
        return {};
    }
    return {kind, tagged};
}

}  // namespace wsgate::backplane
