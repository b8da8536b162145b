// Presence in Redis (docs/backplane.md, "Presence that heals after SIGKILL"):
// the pieces that need no socket. The core decides *when* to write (first and
// last transitions, the periodic refresh); this file decides *what*: the member
// and record formats, the refcount of (room, user) pairs held by one worker, and
// the Lua script run when a user's last connection on a worker goes.
//
// The unit of presence is the *owner*: one worker of one gateway,
// "<server-id>:<worker>". Owners write their own entries only, so workers of one
// gateway never coordinate (shared-nothing), and a leave on one owner cannot
// remove another's entry.
//
//   room:{id}:members        ZSET  member "<user>\0<owner>", score = wall-clock ms
//                                  of the owner's last refresh; the key PEXPIREs
//                                  after the TTL. Readers take scores > now - TTL.
//   connection:{user}        STRING the seed's JSON {userId, serverId, connectedAt,
//                                  lastActivity}, PX TTL, rewritten by every owner
//                                  holding the user once per refresh period.
//                                  `online` is EXISTS on it (as in the seed).
//   connection:{user}:owners ZSET  owner -> wall-clock ms of its last refresh;
//                                  PX TTL. Lets the last disconnect on one owner
//                                  keep the record while another owner holds the user.
//   server:{sid}:connections SET   user ids with a connection on gateway sid (seed),
//                                  PX TTL, re-added every refresh period.
//   server:{sid}:alive       STRING heartbeat, PX TTL.
//
// A gateway killed with SIGKILL stops refreshing: its room members drop out of
// every read at once after the TTL (scores), are trimmed by the next refresh of
// any live owner in that room (ZREMRANGEBYSCORE), and keys nobody refreshes
// expire. Clock: scores are wall-clock ms of the writing gateway; skew between
// gateways must stay well below the TTL (NTP).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "backplane/room_table.h"  // name_map
#include "protocol/buffer.h"

namespace wsgate::backplane {

// Longest server id: it is part of keys, message ids and owners.
inline constexpr size_t max_server_id_bytes = 64;

// A server id is 1..64 bytes of [A-Za-z0-9._-]. No ':' (it separates the owner's
// worker and the message id's sequence, and an id that is a prefix of another
// followed by ':' would make one gateway drop the other's messages as its own echo),
// no braces (hash tags), nothing a shell or a log would mangle.
[[nodiscard]] bool valid_server_id(std::string_view id);

// "<server-id>:<worker>"
std::string presence_owner(std::string_view server_id, unsigned worker);

// The room:{id}:members member of user held by owner: user '\0' owner.
std::string presence_member(std::string_view user, std::string_view owner);
// The user part of a member (up to its last '\0'; user ids may contain NUL, owners
// cannot). A member without '\0' (written by something else) is taken whole.
std::string_view presence_member_user(std::string_view member);

// 2026-11-29T20:01:02.123Z (JavaScript's Date.toISOString(), as the seed writes).
void append_iso8601_ms(protocol::byte_buffer& out, int64_t unix_ms);

// The seed's connection record:
// {"userId":…,"serverId":…,"connectedAt":"…","lastActivity":"…"}
void append_connection_record(protocol::byte_buffer& out, std::string_view user, std::string_view server_id,
                              int64_t connected_at_ms, int64_t last_activity_ms);

// Run when a user's last connection on an owner goes:
//   KEYS[1] connection:{user}   KEYS[2] connection:{user}:owners
//   ARGV[1] owner   ARGV[2] stale cutoff (ms; scores <= it are dead owners)
//   ARGV[3] "<server-id>:" (this gateway's owners)
// Removes the owner and dead owners; deletes both keys when no live owner is left.
// Returns {deleted (0/1), another owner of this gateway still holds the user (0/1)};
// the caller removes the user from server:{sid}:connections only on 0 (that key
// lives in another slot in cluster mode, so it cannot be touched here).
extern const std::string_view unregister_script;

// How many (room, user) pairs one worker holds and with how many connections each:
// the first connection of a user joining a room adds the member, the last one
// leaving removes it. Single-threaded, no I/O.
class presence_counts {
public:
    // True when (room, user) had no connection before (ZADD now).
    bool add(std::string_view room, std::string_view user);
    // True when that was the last connection (ZREM now). Removing a pair that is
    // not held is a programmer error and aborts.
    bool remove(std::string_view room, std::string_view user);
    size_t size() const { return _pairs.size(); }
    uint32_t count(std::string_view room, std::string_view user) const;

private:
    const std::string& key(std::string_view room, std::string_view user) const;
    name_map<uint32_t> _pairs;  // room '\0' user -> connections
    mutable std::string _key;   // scratch
};

}  // namespace wsgate::backplane
