// Presence formats and the per-worker (room, user) refcount: see presence.h.
#include "backplane/presence.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "protocol/json_codec.h"

namespace wsgate::backplane {

bool valid_server_id(std::string_view id) {
    if (id.empty() || id.size() > max_server_id_bytes) {
        return false;
    }
    for (char ch : id) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                  ch == '_' || ch == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

std::string presence_owner(std::string_view server_id, unsigned worker) {
    std::string s(server_id);
    s += ':';
    s += std::to_string(worker);
    return s;
}

std::string presence_member(std::string_view user, std::string_view owner) {
    std::string s;
    s.reserve(user.size() + 1 + owner.size());
    s += user;
    s += '\0';
    s += owner;
    return s;
}

std::string_view presence_member_user(std::string_view member) {
    size_t nul = member.rfind('\0');
    return nul == std::string_view::npos ? member : member.substr(0, nul);
}

void append_iso8601_ms(protocol::byte_buffer& out, int64_t unix_ms) {
    time_t secs = static_cast<time_t>(unix_ms / 1000);
    int ms = static_cast<int>(unix_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        --secs;
    }
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                          tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    out.append(buf, static_cast<size_t>(n));
}

void append_connection_record(protocol::byte_buffer& out, std::string_view user, std::string_view server_id,
                              int64_t connected_at_ms, int64_t last_activity_ms) {
    out.append(std::string_view("{\"userId\":"));
    protocol::append_json_string(out, user);
    out.append(std::string_view(",\"serverId\":"));
    protocol::append_json_string(out, server_id);
    out.append(std::string_view(",\"connectedAt\":\""));
    append_iso8601_ms(out, connected_at_ms);
    out.append(std::string_view("\",\"lastActivity\":\""));
    append_iso8601_ms(out, last_activity_ms);
    out.append(std::string_view("\"}"));
}

const std::string_view unregister_script =
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])\n"
    "local rest = redis.call('ZRANGE', KEYS[2], 0, -1)\n"
    "local sibling = 0\n"
    "for _, o in ipairs(rest) do\n"
    "  if string.sub(o, 1, #ARGV[3]) == ARGV[3] then sibling = 1 break end\n"
    "end\n"
    "if #rest == 0 then\n"
    "  redis.call('DEL', KEYS[1], KEYS[2])\n"
    "  return {1, sibling}\n"
    "end\n"
    "return {0, sibling}\n";

const std::string& presence_counts::key(std::string_view room, std::string_view user) const {
    _key.assign(room);
    _key += '\0';
    _key += user;
    return _key;
}

bool presence_counts::add(std::string_view room, std::string_view user) {
    auto [it, inserted] = _pairs.try_emplace(key(room, user), 0u);
    return ++it->second == 1;
}

bool presence_counts::remove(std::string_view room, std::string_view user) {
    auto it = _pairs.find(std::string_view(key(room, user)));
    if (it == _pairs.end() || it->second == 0) {
        std::abort();  // programmer error: removing a pair that is not held
    }
    if (--it->second > 0) {
        return false;
    }
    _pairs.erase(it);
    return true;
}

uint32_t presence_counts::count(std::string_view room, std::string_view user) const {
    auto it = _pairs.find(std::string_view(key(room, user)));
    return it == _pairs.end() ? 0 : it->second;
}

}  // namespace wsgate::backplane
