// backplane/presence: member and record formats, server id rule, (room, user) refcount.
#include "backplane/presence.h"

#include <gtest/gtest.h>

#include <string>

using namespace wsgate::backplane;
using wsgate::protocol::byte_buffer;

namespace {

std::string str(const byte_buffer& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

}  // namespace

TEST(Presence, ServerIdRule) {
    EXPECT_TRUE(valid_server_id("gw-1"));
    EXPECT_TRUE(valid_server_id("host.example.com-4242"));
    EXPECT_TRUE(valid_server_id(std::string(64, 'a')));
    EXPECT_FALSE(valid_server_id(""));
    EXPECT_FALSE(valid_server_id(std::string(65, 'a')));
    EXPECT_FALSE(valid_server_id("gw:1"));  // ':' separates owner and message id fields
    EXPECT_FALSE(valid_server_id("gw{1}"));
    EXPECT_FALSE(valid_server_id("gw 1"));
    EXPECT_FALSE(valid_server_id("gw\xc3\xa9"));
}

TEST(Presence, OwnerAndMember) {
    EXPECT_EQ(presence_owner("gwA", 3), "gwA:3");
    std::string m = presence_member("alice", "gwA:3");
    EXPECT_EQ(m, std::string("alice\0gwA:3", 11));
    EXPECT_EQ(presence_member_user(m), "alice");
    // A user id may contain NUL itself: the owner never does, so the last NUL splits.
    std::string odd("a\0b", 3);
    EXPECT_EQ(presence_member_user(presence_member(odd, "gwB:0")), odd);
    // Something written by another tool, without an owner, is taken whole.
    EXPECT_EQ(presence_member_user("bob"), "bob");
}

TEST(Presence, Iso8601LikeJavaScript) {
    byte_buffer b;
    append_iso8601_ms(b, 0);
    EXPECT_EQ(str(b), "1970-01-01T00:00:00.000Z");
    b.clear();
    append_iso8601_ms(b, 1796000462123);  // new Date(1796000462123).toISOString()
    EXPECT_EQ(str(b), "2026-11-30T01:01:02.123Z");
}

TEST(Presence, ConnectionRecordIsTheSeedsJson) {
    byte_buffer b;
    append_connection_record(b, "al\"ice", "gwA", 1000, 61001);
    EXPECT_EQ(str(b),
              "{\"userId\":\"al\\\"ice\",\"serverId\":\"gwA\",\"connectedAt\":\"1970-01-01T00:00:01.000Z\","
              "\"lastActivity\":\"1970-01-01T00:01:01.001Z\"}");
}

TEST(Presence, CountsFirstAndLast) {
    presence_counts p;
    EXPECT_TRUE(p.add("lobby", "alice"));    // first tab joins: ZADD
    EXPECT_FALSE(p.add("lobby", "alice"));   // second tab: nothing
    EXPECT_TRUE(p.add("lobby", "bob"));
    EXPECT_TRUE(p.add("games", "alice"));
    EXPECT_EQ(p.size(), 3u);
    EXPECT_EQ(p.count("lobby", "alice"), 2u);
    EXPECT_FALSE(p.remove("lobby", "alice"));
    EXPECT_TRUE(p.remove("lobby", "alice"));  // last tab leaves: ZREM
    EXPECT_EQ(p.count("lobby", "alice"), 0u);
    EXPECT_EQ(p.size(), 2u);
    // Room and user are separated by NUL: ("a", "b:c") and ("a:b", "c") differ.
    EXPECT_TRUE(p.add("a", "b:c"));
    EXPECT_TRUE(p.add("a:b", "c"));
    EXPECT_DEATH(p.remove("nope", "x"), "");
}
