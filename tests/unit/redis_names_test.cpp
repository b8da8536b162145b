// Unit tests for backplane/redis_names: the --redis URL (every accepted form and
// every error), the seed's channel / key names in both modes with and without a
// prefix, channel -> (kind, id) round trips, Redis' published CRC16 / hash-slot
// vectors, and the cluster same-slot property over exhaustive brace-heavy ids plus
// seeded random ones. Pure: no Redis server needed.
#include "backplane/redis_names.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace wsgate::backplane;

// ---- URL ----

redis_endpoint parse_ok(std::string_view url) {
    redis_endpoint ep;
    std::string error;
    EXPECT_TRUE(parse_redis_url(url, ep, error)) << url << ": " << error;
    EXPECT_TRUE(error.empty()) << url;
    return ep;
}

std::string parse_error(std::string_view url) {
    redis_endpoint ep;
    std::string error;
    EXPECT_FALSE(parse_redis_url(url, ep, error)) << url;
    EXPECT_FALSE(error.empty()) << url;
    return error;
}

TEST(RedisUrl, HostPortDb) {
    redis_endpoint ep = parse_ok("redis://localhost:6380/2");
    EXPECT_EQ(ep.host, "localhost");
    EXPECT_EQ(ep.port, 6380);
    EXPECT_EQ(ep.db, 2u);
    EXPECT_FALSE(ep.cluster);
    EXPECT_FALSE(ep.has_auth());
    EXPECT_EQ(ep.user, "");
    EXPECT_EQ(ep.password, "");
}

TEST(RedisUrl, Defaults) {
    redis_endpoint ep = parse_ok("redis://redis.internal");
    EXPECT_EQ(ep.host, "redis.internal");
    EXPECT_EQ(ep.port, 6379);
    EXPECT_EQ(ep.db, 0u);
    ep = parse_ok("redis://10.0.0.7/");  // trailing slash
    EXPECT_EQ(ep.host, "10.0.0.7");
    EXPECT_EQ(ep.port, 6379);
    EXPECT_EQ(ep.db, 0u);
    ep = parse_ok("redis://h:1/");
    EXPECT_EQ(ep.port, 1);
    ep = parse_ok("redis://h:65535/0");
    EXPECT_EQ(ep.port, 65535);
    EXPECT_EQ(ep.db, 0u);
    ep = parse_ok("redis://redis_1:6379");  // container names carry '_'
    EXPECT_EQ(ep.host, "redis_1");
}

TEST(RedisUrl, SchemeCaseInsensitive) {
    EXPECT_FALSE(parse_ok("REDIS://h").cluster);
    EXPECT_TRUE(parse_ok("Redis+Cluster://h:7000").cluster);
}

TEST(RedisUrl, Cluster) {
    redis_endpoint ep = parse_ok("redis+cluster://node-1:7000");
    EXPECT_TRUE(ep.cluster);
    EXPECT_EQ(ep.host, "node-1");
    EXPECT_EQ(ep.port, 7000);
    EXPECT_EQ(ep.db, 0u);
    EXPECT_TRUE(parse_ok("redis+cluster://node-1:7000/").cluster);
    EXPECT_TRUE(parse_ok("redis+cluster://node-1:7000/0").cluster);  // the only database a cluster has
}

TEST(RedisUrl, Ipv6) {
    redis_endpoint ep = parse_ok("redis://[::1]:6390/3");
    EXPECT_EQ(ep.host, "::1");
    EXPECT_EQ(ep.port, 6390);
    EXPECT_EQ(ep.db, 3u);
    ep = parse_ok("redis+cluster://[2001:db8::7]");
    EXPECT_EQ(ep.host, "2001:db8::7");
    EXPECT_EQ(ep.port, 6379);
    ep = parse_ok("redis://[::ffff:10.0.0.1]:1");
    EXPECT_EQ(ep.host, "::ffff:10.0.0.1");
}

TEST(RedisUrl, Auth) {
    redis_endpoint ep = parse_ok("redis://:s3cret@h");
    EXPECT_EQ(ep.user, "");
    EXPECT_EQ(ep.password, "s3cret");
    EXPECT_TRUE(ep.has_auth());
    ep = parse_ok("redis://alice:pw@h:6380/1");
    EXPECT_EQ(ep.user, "alice");
    EXPECT_EQ(ep.password, "pw");
    EXPECT_EQ(ep.host, "h");
    EXPECT_EQ(ep.port, 6380);
    EXPECT_EQ(ep.db, 1u);
    ep = parse_ok("redis+cluster://alice:pw@[::1]:7000");
    EXPECT_EQ(ep.user, "alice");
    EXPECT_EQ(ep.host, "::1");
    EXPECT_TRUE(ep.cluster);
}

TEST(RedisUrl, AuthPercentDecoding) {
    redis_endpoint ep = parse_ok("redis://us%3Aer:p%40ss%2Fw%3a%25rd%20@h");
    EXPECT_EQ(ep.user, "us:er");
    EXPECT_EQ(ep.password, "p@ss/w:%rd ");
    // The password may contain ':' unescaped (only the first ':' splits)...
    ep = parse_ok("redis://u:a:b@h");
    EXPECT_EQ(ep.user, "u");
    EXPECT_EQ(ep.password, "a:b");
    // ...and '@' too: the last '@' ends the user info.
    ep = parse_ok("redis://:p@ss@h:1");
    EXPECT_EQ(ep.password, "p@ss");
    EXPECT_EQ(ep.host, "h");
    EXPECT_EQ(ep.port, 1);
}

TEST(RedisUrl, Redacted) {
    EXPECT_EQ(parse_ok("redis://alice:pw@h:6380/1").redacted(), "redis://alice:***@h:6380/1");
    EXPECT_EQ(parse_ok("redis://:pw@h").redacted(), "redis://:***@h:6379");
    EXPECT_EQ(parse_ok("redis+cluster://[::1]:7000").redacted(), "redis+cluster://[::1]:7000");
    EXPECT_EQ(parse_ok("redis://h/0").redacted(), "redis://h:6379");
}

TEST(RedisUrl, ResetsOutput) {
    redis_endpoint ep;
    ep.user = "stale";
    ep.db = 9;
    ep.cluster = true;
    std::string error;
    ASSERT_TRUE(parse_redis_url("redis://h", ep, error));
    EXPECT_EQ(ep.user, "");
    EXPECT_EQ(ep.db, 0u);
    EXPECT_FALSE(ep.cluster);
}

TEST(RedisUrl, SchemeErrors) {
    EXPECT_EQ(parse_error(""), "missing scheme (expected redis://HOST:PORT or redis+cluster://HOST:PORT)");
    EXPECT_EQ(parse_error("localhost:6379"), parse_error(""));
    EXPECT_EQ(parse_error("://h"), parse_error(""));
    EXPECT_EQ(parse_error("http://h"), "unsupported scheme 'http' (expected redis:// or redis+cluster://)");
    EXPECT_EQ(parse_error("rediss://h"), "unsupported scheme 'rediss' (TLS is not supported)");
    EXPECT_EQ(parse_error("rediss+cluster://h"), "unsupported scheme 'rediss+cluster' (TLS is not supported)");
    EXPECT_EQ(parse_error("redis-cluster://h"),
              "unsupported scheme 'redis-cluster' (expected redis:// or redis+cluster://)");
}

TEST(RedisUrl, HostErrors) {
    EXPECT_EQ(parse_error("redis://"), "missing host");
    EXPECT_EQ(parse_error("redis:///1"), "missing host");
    EXPECT_EQ(parse_error("redis://:6379"), "missing host");
    EXPECT_EQ(parse_error("redis://:pw@"), "missing host");
    EXPECT_EQ(parse_error("redis://[]:1"), "missing host");
    EXPECT_EQ(parse_error("redis://bad host"), "invalid host 'bad host'");
    EXPECT_EQ(parse_error("redis://h%41"), "invalid host 'h%41'");
    EXPECT_EQ(parse_error("redis://::1"), "IPv6 address must be in brackets (redis://[::1]:6379)");
    EXPECT_EQ(parse_error("redis://::1:6379"), "IPv6 address must be in brackets (redis://[::1]:6379)");
    EXPECT_EQ(parse_error("redis://[::1"), "missing ']' after IPv6 address");
    EXPECT_EQ(parse_error("redis://[::g]"), "invalid IPv6 address '::g'");
    EXPECT_EQ(parse_error("redis://[localhost]"), "invalid IPv6 address 'localhost'");
    EXPECT_EQ(parse_error("redis://[::1]x"), "unexpected 'x' after IPv6 address");
    EXPECT_EQ(parse_error("redis://[::1]6379"), "unexpected '6379' after IPv6 address");
}

TEST(RedisUrl, PortErrors) {
    EXPECT_EQ(parse_error("redis://h:"), "missing port after ':'");
    EXPECT_EQ(parse_error("redis://h:/1"), "missing port after ':'");
    EXPECT_EQ(parse_error("redis://[::1]:"), "missing port after ':'");
    EXPECT_EQ(parse_error("redis://h:99999"), "invalid port '99999' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:65536"), "invalid port '65536' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:0"), "invalid port '0' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:-1"), "invalid port '-1' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:+80"), "invalid port '+80' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:63 79"), "invalid port '63 79' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:http"), "invalid port 'http' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://h:000006379"), "invalid port '000006379' (expected 1..65535)");
    EXPECT_EQ(parse_error("redis://[::1]:70000"), "invalid port '70000' (expected 1..65535)");
}

TEST(RedisUrl, DatabaseErrors) {
    EXPECT_EQ(parse_error("redis://h/x"), "invalid database 'x' (expected 0..1048575)");
    EXPECT_EQ(parse_error("redis://h/-1"), "invalid database '-1' (expected 0..1048575)");
    EXPECT_EQ(parse_error("redis://h/1048576"), "invalid database '1048576' (expected 0..1048575)");
    EXPECT_EQ(parse_error("redis://h/99999999999"), "invalid database '99999999999' (expected 0..1048575)");
    EXPECT_EQ(parse_error("redis://h/1/"), "invalid database '1/' (expected 0..1048575)");
    EXPECT_EQ(parse_error("redis://h//"), "invalid database '/' (expected 0..1048575)");
    EXPECT_EQ(parse_ok("redis://h/1048575").db, 1048575u);
    EXPECT_EQ(parse_error("redis+cluster://h:7000/3"),
              "database 3 not supported with redis+cluster:// (Redis Cluster has only database 0)");
}

TEST(RedisUrl, AuthErrors) {
    EXPECT_EQ(parse_error("redis://alice@h"), "user info without ':' (write ':PASSWORD@' or 'USER:PASSWORD@')");
    EXPECT_EQ(parse_error("redis://@h"), "empty user info before '@'");
    EXPECT_EQ(parse_error("redis://alice:@h"), "empty password");
    EXPECT_EQ(parse_error("redis://:@h"), "empty password");
    EXPECT_EQ(parse_error("redis://:pw%4@h"), "invalid percent-encoding in password (expected %XX)");
    EXPECT_EQ(parse_error("redis://:pw%@h"), "invalid percent-encoding in password (expected %XX)");
    EXPECT_EQ(parse_error("redis://:%zz@h"), "invalid percent-encoding in password (expected %XX)");
    EXPECT_EQ(parse_error("redis://a%g1:pw@h"), "invalid percent-encoding in user (expected %XX)");
    // An unescaped '/' ends the authority, so the rest is no longer user info.
    EXPECT_EQ(parse_error("redis://:a/b@h"), "missing host");
}

TEST(RedisUrl, QueryAndFragmentErrors) {
    // The error never echoes them: a query could carry a password.
    EXPECT_EQ(parse_error("redis://h:6379?password=x"), "unsupported query string");
    EXPECT_EQ(parse_error("redis://h/0?timeout=1"), "unsupported query string");
    EXPECT_EQ(parse_error("redis://h?"), "unsupported query string");
    EXPECT_EQ(parse_error("redis://h#frag"), "unsupported fragment");
    EXPECT_EQ(parse_error("redis://h/1#x?y"), "unsupported fragment");
}

// ---- hash slots ----

uint16_t crc(std::string_view s) { return crc16_xmodem(s.data(), s.size()); }

TEST(RedisSlot, Crc16Vectors) {
    EXPECT_EQ(crc("123456789"), 0x31C3);  // Redis crc16.c test vector (CRC-16/XMODEM check)
    EXPECT_EQ(crc(""), 0);
    EXPECT_EQ(crc16_xmodem(nullptr, 0), 0);
    EXPECT_EQ(crc("A"), 0x58E5);  // CRC-16/XMODEM("A")
}

TEST(RedisSlot, KeySlotVectors) {
    // Values as printed by CLUSTER KEYSLOT (redis.io cluster spec / command docs).
    EXPECT_EQ(key_hash_slot("foo"), 12182);
    EXPECT_EQ(key_hash_slot("bar"), 5061);
    EXPECT_EQ(key_hash_slot("somekey"), 11058);
    EXPECT_EQ(key_hash_slot("123456789"), 0x31C3 & 16383);
    EXPECT_EQ(key_hash_slot("{user1000}.following"), key_hash_slot("{user1000}.followers"));
    EXPECT_EQ(key_hash_slot("{user1000}.following"), key_hash_slot("user1000"));
    // Checked once against redis-server 7.0 (cluster-enabled) CLUSTER KEYSLOT.
    EXPECT_EQ(key_hash_slot("123456789"), 12739);
    EXPECT_EQ(key_hash_slot("{user1000}.following"), 3443);
    EXPECT_EQ(key_hash_slot("foo{}{bar}"), 8363);
    EXPECT_EQ(key_hash_slot("foo{{bar}}zap"), 4015);
    EXPECT_EQ(key_hash_slot("foo{bar}{zap}"), 5061);
    EXPECT_EQ(key_hash_slot("room:{%}x}"), 13511);
    EXPECT_EQ(key_hash_slot("room:{%}x}:members"), 13511);
    EXPECT_EQ(key_hash_slot("room:{a}b}"), 15495);
}

TEST(RedisSlot, HashTagRule) {
    EXPECT_EQ(key_hash_slot("foo{}{bar}"), crc("foo{}{bar}") & 16383);  // empty first tag: whole key
    EXPECT_EQ(key_hash_slot("foo{{bar}}zap"), crc("{bar") & 16383);    // first '{', first '}' after it
    EXPECT_EQ(key_hash_slot("foo{bar}{zap}"), crc("bar") & 16383);     // only the first tag counts
    EXPECT_EQ(key_hash_slot("foo{bar"), crc("foo{bar") & 16383);       // unterminated: whole key
    EXPECT_EQ(key_hash_slot("foo}bar{"), crc("foo}bar{") & 16383);     // '}' before '{' does not close
    EXPECT_EQ(key_hash_slot("}{x}"), crc("x") & 16383);
    EXPECT_EQ(key_hash_slot("{}"), crc("{}") & 16383);
    EXPECT_EQ(key_hash_slot(""), 0);
    EXPECT_LT(key_hash_slot("anything at all"), redis_slot_count);
}

// Bit-at-a-time reference (independent of the table) over random input.
uint16_t crc_reference(std::string_view s) {
    uint16_t c = 0;
    for (unsigned char b : s) {
        c ^= static_cast<uint16_t>(b << 8);
        for (int i = 0; i < 8; ++i) {
            c = (c & 0x8000) ? static_cast<uint16_t>((c << 1) ^ 0x1021) : static_cast<uint16_t>(c << 1);
        }
    }
    return c;
}

TEST(RedisSlot, TableMatchesBitwise) {
    std::mt19937 rng(12345);
    for (int n = 0; n < 2000; ++n) {
        std::string s(rng() % 64, '\0');
        for (char& c : s) {
            c = static_cast<char>(rng() & 0xff);
        }
        ASSERT_EQ(crc(s), crc_reference(s)) << n;
    }
}

// ---- names ----

TEST(RedisNames, SeedNamesNoPrefix) {
    redis_names n("", false);
    EXPECT_EQ(n.broadcast_channel(), "broadcast");
    EXPECT_EQ(n.room_channel("lobby"), "room:lobby");
    EXPECT_EQ(n.user_channel("bob"), "user:bob");
    EXPECT_EQ(n.room_members_key("lobby"), "room:lobby:members");
    EXPECT_EQ(n.connection_key("bob"), "connection:bob");
    EXPECT_EQ(n.connection_owners_key("bob"), "connection:bob:owners");
    EXPECT_EQ(n.server_connections_key("gw-1"), "server:gw-1:connections");
    EXPECT_EQ(n.server_alive_key("gw-1"), "server:gw-1:alive");
    // Braces and '%' are plain bytes outside cluster mode.
    EXPECT_EQ(n.room_channel("}x{"), "room:}x{");
    EXPECT_EQ(n.user_channel("%41"), "user:%41");
    EXPECT_FALSE(n.cluster());
    EXPECT_EQ(n.prefix(), "");
}

TEST(RedisNames, SeedNamesWithPrefix) {
    redis_names n("app1:", false);
    EXPECT_EQ(n.broadcast_channel(), "app1:broadcast");
    EXPECT_EQ(n.room_channel("lobby"), "app1:room:lobby");
    EXPECT_EQ(n.user_channel("bob"), "app1:user:bob");
    EXPECT_EQ(n.room_members_key("lobby"), "app1:room:lobby:members");
    EXPECT_EQ(n.connection_key("bob"), "app1:connection:bob");
    EXPECT_EQ(n.server_connections_key("gw-1"), "app1:server:gw-1:connections");
    EXPECT_EQ(n.server_alive_key("gw-1"), "app1:server:gw-1:alive");
    // Any prefix outside cluster mode, braces included.
    redis_names b("{x}", false);
    EXPECT_EQ(b.room_channel("r"), "{x}room:r");
}

TEST(RedisNames, ClusterNames) {
    redis_names n("", true);
    EXPECT_TRUE(n.cluster());
    EXPECT_EQ(n.broadcast_channel(), "broadcast");
    EXPECT_EQ(n.room_channel("lobby"), "room:{lobby}");
    EXPECT_EQ(n.room_members_key("lobby"), "room:{lobby}:members");
    EXPECT_EQ(n.user_channel("bob"), "user:{bob}");
    EXPECT_EQ(n.connection_key("bob"), "connection:{bob}");
    EXPECT_EQ(n.connection_owners_key("bob"), "connection:{bob}:owners");
    EXPECT_EQ(n.server_connections_key("gw-1"), "server:{gw-1}:connections");
    EXPECT_EQ(n.server_alive_key("gw-1"), "server:{gw-1}:alive");

    redis_names p("app1:", true);
    EXPECT_EQ(p.broadcast_channel(), "app1:broadcast");
    EXPECT_EQ(p.room_channel("lobby"), "app1:room:{lobby}");
    EXPECT_EQ(p.room_members_key("lobby"), "app1:room:{lobby}:members");
    EXPECT_EQ(p.user_channel("bob"), "app1:user:{bob}");
    EXPECT_EQ(p.connection_key("bob"), "app1:connection:{bob}");
    EXPECT_EQ(p.server_connections_key("gw-1"), "app1:server:{gw-1}:connections");
    EXPECT_EQ(p.server_alive_key("gw-1"), "app1:server:{gw-1}:alive");

    EXPECT_EQ(key_hash_slot(n.room_channel("lobby")), key_hash_slot("lobby"));
    EXPECT_EQ(key_hash_slot(p.room_members_key("lobby")), key_hash_slot("lobby"));
}

TEST(RedisNames, ClusterBraceIds) {
    redis_names n("", true);
    // '{' inside, or '}' after the first byte: verbatim; the tag is cut short the
    // same way in the channel and in the key.
    EXPECT_EQ(n.room_channel("a{b"), "room:{a{b}");
    EXPECT_EQ(n.room_channel("a}b"), "room:{a}b}");
    EXPECT_EQ(n.room_members_key("a}b"), "room:{a}b}:members");
    EXPECT_EQ(key_hash_slot(n.room_channel("a}b")), key_hash_slot("a"));
    EXPECT_EQ(key_hash_slot(n.room_members_key("a}b")), key_hash_slot("a"));
    // A leading '}' (empty tag) or '%' (the escape) gets one '%' in front.
    EXPECT_EQ(n.room_channel("}x"), "room:{%}x}");
    EXPECT_EQ(n.room_members_key("}x"), "room:{%}x}:members");
    EXPECT_EQ(n.user_channel("}"), "user:{%}}");
    EXPECT_EQ(n.connection_key("}"), "connection:{%}}");
    EXPECT_EQ(n.room_channel("%"), "room:{%%}");
    EXPECT_EQ(n.room_channel("%}"), "room:{%%}}");
    EXPECT_EQ(n.room_channel("50%off"), "room:{50%off}");  // '%' elsewhere: verbatim
    EXPECT_EQ(key_hash_slot(n.room_channel("}x")), key_hash_slot("%"));
    EXPECT_EQ(key_hash_slot(n.room_members_key("}x")), key_hash_slot("%"));
}

TEST(RedisNames, PrefixCheck) {
    std::string error;
    EXPECT_TRUE(redis_names::check_prefix("", true, error));
    EXPECT_TRUE(redis_names::check_prefix("app:", true, error));
    EXPECT_TRUE(redis_names::check_prefix("{app}:", false, error));
    EXPECT_TRUE(error.empty());
    EXPECT_FALSE(redis_names::check_prefix("{app}:", true, error));
    EXPECT_EQ(error, "key prefix '{app}:' contains '{' or '}', which would break hash tags in Redis Cluster mode");
    EXPECT_FALSE(redis_names::check_prefix("a{", true, error));
    EXPECT_FALSE(redis_names::check_prefix("a}", true, error));
    EXPECT_THROW(redis_names("x{", true), std::invalid_argument);
    EXPECT_NO_THROW(redis_names("x{", false));
}

TEST(RedisNamesDeathTest, EmptyIdAborts) {
    redis_names n("", true);
    EXPECT_DEATH((void)n.room_channel(""), "empty id");
    EXPECT_DEATH((void)n.server_alive_key(""), "empty id");
}

// ---- parse_channel ----

void expect_ref(const redis_names& n, std::string_view channel, channel_kind kind, std::string_view id) {
    channel_ref r = n.parse_channel(channel);
    EXPECT_EQ(r.kind, kind) << channel;
    EXPECT_EQ(r.id, id) << channel;
}

TEST(RedisNames, ParseNoPrefix) {
    redis_names n("", false);
    expect_ref(n, "broadcast", channel_kind::broadcast, "");
    expect_ref(n, "room:lobby", channel_kind::room, "lobby");
    expect_ref(n, "user:bob", channel_kind::user, "bob");
    expect_ref(n, "room:a:members", channel_kind::room, "a:members");  // a room named "a:members"
    expect_ref(n, "room:{x}", channel_kind::room, "{x}");
    expect_ref(n, "room:", channel_kind::unknown, "");
    expect_ref(n, "user:", channel_kind::unknown, "");
    expect_ref(n, "", channel_kind::unknown, "");
    expect_ref(n, "broadcast2", channel_kind::unknown, "");
    expect_ref(n, "Broadcast", channel_kind::unknown, "");
    expect_ref(n, "rooms:x", channel_kind::unknown, "");
    expect_ref(n, "connection:bob", channel_kind::unknown, "");
    expect_ref(n, "xroom:a", channel_kind::unknown, "");
}

TEST(RedisNames, ParseWithPrefix) {
    redis_names n("app1:", false);
    expect_ref(n, "app1:broadcast", channel_kind::broadcast, "");
    expect_ref(n, "app1:room:lobby", channel_kind::room, "lobby");
    expect_ref(n, "app1:user:bob", channel_kind::user, "bob");
    expect_ref(n, "broadcast", channel_kind::unknown, "");
    expect_ref(n, "room:lobby", channel_kind::unknown, "");
    expect_ref(n, "app2:room:lobby", channel_kind::unknown, "");
    expect_ref(n, "app1:", channel_kind::unknown, "");
    expect_ref(n, "app1", channel_kind::unknown, "");
}

TEST(RedisNames, ParseCluster) {
    redis_names n("app1:", true);
    expect_ref(n, "app1:broadcast", channel_kind::broadcast, "");
    expect_ref(n, "app1:room:{lobby}", channel_kind::room, "lobby");
    expect_ref(n, "app1:user:{bob}", channel_kind::user, "bob");
    expect_ref(n, "app1:room:{a}b}", channel_kind::room, "a}b");
    expect_ref(n, "app1:room:{a{b}", channel_kind::room, "a{b");
    expect_ref(n, "app1:room:{%}x}", channel_kind::room, "}x");
    expect_ref(n, "app1:room:{%%}", channel_kind::room, "%");
    expect_ref(n, "app1:user:{%}}", channel_kind::user, "}");
    // Not written by the builders.
    expect_ref(n, "app1:room:lobby", channel_kind::unknown, "");    // untagged
    expect_ref(n, "app1:room:{lobby", channel_kind::unknown, "");   // unterminated
    expect_ref(n, "app1:room:lobby}", channel_kind::unknown, "");
    expect_ref(n, "app1:room:{}", channel_kind::unknown, "");       // empty id
    expect_ref(n, "app1:room:{", channel_kind::unknown, "");
    expect_ref(n, "app1:room:{}x}", channel_kind::unknown, "");     // unescaped leading '}'
    expect_ref(n, "app1:room:{%}", channel_kind::unknown, "");      // bare escape
    expect_ref(n, "app1:room:{%x}", channel_kind::unknown, "");     // escape before an ordinary byte
    expect_ref(n, "app1:room:{lobby}:members", channel_kind::unknown, "");  // a key, not a channel
    expect_ref(n, "room:{lobby}", channel_kind::unknown, "");       // no prefix
}

// ---- properties over many ids ----

// Every string of length 1..5 over {a, '{', '}', '%', ':'}: all brace / escape
// interactions the rules above have to get right.
std::vector<std::string> exhaustive_ids() {
    static const char alphabet[] = {'a', '{', '}', '%', ':'};
    std::vector<std::string> out;
    std::vector<std::string> level = {""};
    for (int len = 1; len <= 5; ++len) {
        std::vector<std::string> next;
        for (const std::string& s : level) {
            for (char c : alphabet) {
                next.push_back(s + c);
            }
        }
        out.insert(out.end(), next.begin(), next.end());
        level = std::move(next);
    }
    return out;
}

std::vector<std::string> random_ids(size_t count, uint32_t seed) {
    std::mt19937 rng(seed);
    static const std::string pool = "ab01:{}%_-/ \xc3\xa9";  // some UTF-8 bytes too
    std::vector<std::string> out;
    for (size_t i = 0; i < count; ++i) {
        std::string s(1 + rng() % 128, '\0');
        for (char& c : s) {
            // Mostly the brace-heavy pool, sometimes any byte.
            c = (rng() % 8 == 0) ? static_cast<char>(rng() & 0xff) : pool[rng() % pool.size()];
        }
        out.push_back(std::move(s));
    }
    return out;
}

void check_properties(const redis_names& n, const std::vector<std::string>& ids) {
    std::set<std::string> rooms;
    std::set<std::string> users;
    for (const std::string& id : ids) {
        std::string room = n.room_channel(id);
        std::string user = n.user_channel(id);
        // Round trip (which also proves the builders injective).
        channel_ref r = n.parse_channel(room);
        ASSERT_EQ(r.kind, channel_kind::room) << room;
        ASSERT_EQ(r.id, id) << room;
        channel_ref u = n.parse_channel(user);
        ASSERT_EQ(u.kind, channel_kind::user) << user;
        ASSERT_EQ(u.id, id) << user;
        rooms.insert(room);
        users.insert(user);
        if (n.cluster()) {
            // Same slot for what belongs together.
            ASSERT_EQ(key_hash_slot(room), key_hash_slot(n.room_members_key(id))) << id;
            ASSERT_EQ(key_hash_slot(user), key_hash_slot(n.connection_key(id))) << id;
            ASSERT_EQ(key_hash_slot(user), key_hash_slot(n.connection_owners_key(id))) << id;
            ASSERT_EQ(key_hash_slot(n.server_connections_key(id)), key_hash_slot(n.server_alive_key(id))) << id;
            // And the hash tag is never empty: Redis hashes a non-empty part of the id.
            size_t open = room.find('{');
            ASSERT_NE(open, std::string::npos);
            ASSERT_NE(room[open + 1], '}') << room;
        }
    }
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(rooms.size(), unique.size());
    EXPECT_EQ(users.size(), unique.size());
}

TEST(RedisNames, ExhaustiveBraceIds) {
    std::vector<std::string> ids = exhaustive_ids();
    ASSERT_EQ(ids.size(), 5u + 25 + 125 + 625 + 3125);
    for (const char* prefix : {"", "app1:", "x%"}) {
        SCOPED_TRACE(prefix);
        check_properties(redis_names(prefix, true), ids);
        check_properties(redis_names(prefix, false), ids);
    }
    check_properties(redis_names("}{", false), ids);
}

TEST(RedisNames, RandomIds) {
    std::vector<std::string> ids = random_ids(5000, 424242);
    check_properties(redis_names("", true), ids);
    check_properties(redis_names("gw:", true), ids);
    check_properties(redis_names("", false), ids);
    check_properties(redis_names("gw:", false), ids);
}

TEST(RedisNames, ClusterSpreadsRooms) {
    // Ordinary names spread over many slots (sharding works at all).
    redis_names n("", true);
    std::set<uint16_t> slots;
    for (int i = 0; i < 1000; ++i) {
        slots.insert(key_hash_slot(n.room_channel("room-" + std::to_string(i))));
    }
    EXPECT_GT(slots.size(), 900u);
}

}  // namespace
