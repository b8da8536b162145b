// Redis addressing for the backplane: the --redis URL, the channel and key names of
// the contract (SPEC.md section 4, seed article's Redis sections), and Redis
// Cluster hash slots.
//
// Pure functions and one immutable value class; no sockets, no core/ includes
// (sans-I/O like the rest of backplane/). redis_names is built once per worker at
// startup and then only read, so it may also be shared read-only across cores.
//
// Names. Non-cluster mode uses the seed's names verbatim under the key prefix P
// (default empty):
//   channels  P "broadcast"   P "room:" id             P "user:" id
//   keys      P "room:" id ":members"   P "connection:" user
//             P "server:" sid ":connections"   P "server:" sid ":alive"
// Cluster mode wraps the id in a hash tag so that what belongs together lands in
// one hash slot (hence on one node): P "room:{lobby}" and P "room:{lobby}:members";
// P "user:{bob}" and P "connection:{bob}"; P "server:{s1}:connections" and
// P "server:{s1}:alive". "broadcast" is a single channel and has no tag.
//
// Ids with braces (room and user names are any 1..128 bytes of UTF-8). Redis
// hashes the text between the FIRST '{' and the first '}' after it, unless that
// text is empty, in which case it hashes the whole name. Since the prefix may not
// contain braces in cluster mode and the fixed parts ("room:", "user:", ...) have
// none, the first '{' is always the one we put before the id, so the hashed text is
// the id up to its first '}' (or the whole id):
//  - an id containing '{' or a '}' after its first byte ("a}b"): the tag is cut
//    short ("a"), but identically in the channel and in the key of that id, so they
//    still share a slot. Ids "a}b" and "a}c" share a slot too; harmless.
//  - an id STARTING with '}' would give an empty tag ("room:{}x}"), so Redis would
//    hash the channel and the key whole, into different slots. To prevent that, in
//    cluster mode an id that starts with '}' or '%' is written with one extra '%'
//    in front: "}x" -> "room:{%}x}", "%x" -> "room:{%%x}". Every other id is written
//    verbatim. The map is injective (the decoder strips exactly one leading '%'),
//    and the decoded id is a substring of the channel name, so parse_channel()
//    never allocates. Cost accepted: every id starting with '}' hashes as "%", i.e.
//    all such rooms and users share one slot (names are not secret and CRC16 is
//    unkeyed, so anyone can already aim many names at one slot).
//    A backend publishing to such a room must apply the same rule; non-cluster
//    names never change.
//
// Channels and keys live in separate namespaces in Redis, so the room channel
// "room:x:members" (room "x:members") does not collide with the key of room "x".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsgate::backplane {

// ---- URL ----

// Largest database index accepted in a URL. Redis' own limit is the server's
// `databases` setting (16 by default); this only rejects absurd values early.
inline constexpr unsigned max_redis_db = (1u << 20) - 1;

// Where and how to reach Redis, from --redis.
struct redis_endpoint {
    std::string host;      // hostname, IPv4, or IPv6 without brackets ("::1")
    uint16_t port = 6379;  // 1..65535; 6379 when the URL has none
    std::string user;      // ACL user (AUTH user password); empty: AUTH password only
    std::string password;  // percent-decoded; empty: no AUTH at all
    unsigned db = 0;       // SELECT db after connecting when non-zero; always 0 in cluster mode
    bool cluster = false;  // redis+cluster://: host:port is a seed node of a Redis Cluster

    bool has_auth() const { return !password.empty(); }
    // The URL back, for logs, with the password replaced by "***".
    std::string redacted() const;
};

// Parses redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] and
// redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][/]. Schemes are case-insensitive.
// USER and PASSWORD are percent-decoded (write '@', ':', '/', '%' as %40 %3A %2F %25).
// HOST is a name, an IPv4 address or a bracketed IPv6 address ("[::1]"). A trailing
// '/' is allowed. Rejected, with a specific message in `error`: other schemes
// (rediss:// TLS included), userinfo without ':' (redis-cli reads "x@" as a password,
// redis-py as a user: ambiguous), an empty password, a bad percent escape, a
// missing or malformed host, a port outside 1..65535, a database that is not a
// number 0..max_redis_db, a non-zero database with redis+cluster:// (a cluster has
// only database 0), a query string or a fragment. On failure `out` is unspecified.
// Startup-time code: allocates freely.
[[nodiscard]] bool parse_redis_url(std::string_view url, redis_endpoint& out, std::string& error);

// ---- hash slots ----

inline constexpr uint16_t redis_slot_count = 16384;

// Redis' CRC16 (CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor).
// CRC16("123456789") == 0x31C3. Table-driven.
uint16_t crc16_xmodem(const void* data, size_t len);

// The Redis Cluster hash slot of a key or of a sharded channel: CRC16 of the hash
// tag (the text between the first '{' and the first '}' after it, if non-empty),
// else of the whole name, modulo 16384.
uint16_t key_hash_slot(std::string_view key);

// ---- names ----

enum class channel_kind : uint8_t {
    unknown,    // not a channel of ours (other prefix, other name, empty id, bad escape)
    broadcast,  // P "broadcast": every local connection
    room,       // P "room:" id: the local members of room id
    user,       // P "user:" id: the local connections of user id
};

// A channel name decoded by redis_names::parse_channel().
struct channel_ref {
    channel_kind kind = channel_kind::unknown;
    std::string_view id;  // room or user id, a view into the parsed name; empty for broadcast/unknown
};

class redis_names {
public:
    // Throws std::invalid_argument when check_prefix() fails (a configuration error).
    redis_names(std::string prefix, bool cluster);

    // In cluster mode the prefix may not contain '{' or '}': a tag in the prefix
    // would put every key in one slot (no sharding at all), and an unbalanced '{'
    // would make the tag of "user:{bob}" differ from that of "connection:{bob}".
    // Non-cluster mode accepts any prefix.
    [[nodiscard]] static bool check_prefix(std::string_view prefix, bool cluster, std::string& error);

    const std::string& prefix() const { return _prefix; }
    bool cluster() const { return _cluster; }

    // Channels (SUBSCRIBE / PUBLISH, or SSUBSCRIBE / SPUBLISH in cluster mode).
    std::string broadcast_channel() const;
    std::string room_channel(std::string_view room) const;
    std::string user_channel(std::string_view user) const;

    // Presence keys.
    std::string room_members_key(std::string_view room) const;         // set of user ids
    std::string connection_key(std::string_view user) const;           // TTL'd JSON record
    std::string connection_owners_key(std::string_view user) const;    // zset of owners holding user
    std::string server_connections_key(std::string_view server) const;  // set of user ids
    // Heartbeat of a gateway (a key with a TTL, refreshed while it runs): when it
    // expires the server was killed, and peers may heal its presence entries.
    std::string server_alive_key(std::string_view server) const;

    // The inverse of the channel builders, for routing a message pushed by Redis:
    // (room, id), (user, id), (broadcast, "") or (unknown, ""). Never allocates;
    // id is a view into `channel`.
    channel_ref parse_channel(std::string_view channel) const;

private:
    // P kind {tagged} suffix (cluster) or P kind id suffix.
    std::string make(std::string_view kind, std::string_view id, std::string_view suffix) const;

    std::string _prefix;  // prepended to every channel and key
    bool _cluster;        // hash-tag ids (see the header comment)
};

}  // namespace wsgate::backplane
