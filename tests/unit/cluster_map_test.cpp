// backplane/cluster_map: CLUSTER SLOTS replies (RESP parsed by hiredis' reader,
// as the session does) and -MOVED patches.
#include "backplane/cluster_map.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <string>

#include "backplane/redis_names.h"

using namespace wsgate::backplane;

namespace {

struct parsed {
    redisReply* r = nullptr;
    ~parsed() {
        if (r) {
            freeReplyObject(r);
        }
    }
};

std::unique_ptr<parsed> parse(const std::string& resp) {
    auto p = std::make_unique<parsed>();
    redisReader* rd = redisReaderCreate();
    redisReaderFeed(rd, resp.data(), resp.size());
    void* reply = nullptr;
    EXPECT_EQ(redisReaderGetReply(rd, &reply), REDIS_OK);
    redisReaderFree(rd);
    p->r = static_cast<redisReply*>(reply);
    return p;
}

// Built with += (GCC 12 warns, wrongly, about `"literal" + std::string`).
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string r;
    for (std::string_view p : parts) {
        r += p;
    }
    return r;
}
std::string bulk(std::string_view s) { return cat({"$", std::to_string(s.size()), "\r\n", s, "\r\n"}); }
std::string num(long v) { return cat({":", std::to_string(v), "\r\n"}); }
std::string node(std::string_view host, long port, std::string_view id) {
    return cat({"*3\r\n", bulk(host), num(port), bulk(id)});
}
std::string range(long a, long b, const std::string& master, const std::string& replica = "") {
    return cat({replica.empty() ? "*3\r\n" : "*4\r\n", num(a), num(b), master, replica});
}

// Three masters, each with a replica, as `redis-cli --cluster create` splits them.
const std::string three_masters =
    cat({"*3\r\n", range(0, 5460, node("127.0.0.1", 7000, "a"), node("127.0.0.1", 7003, "d")),
         range(5461, 10922, node("127.0.0.1", 7001, "b"), node("127.0.0.1", 7004, "e")),
         range(10923, 16383, node("127.0.0.1", 7002, "c"), node("127.0.0.1", 7005, "f"))});

}  // namespace

TEST(ClusterMap, LoadsMastersOnly) {
    cluster_map m("127.0.0.1");
    EXPECT_FALSE(m.loaded());
    EXPECT_EQ(m.node_of(0), cluster_map::no_node);
    auto p = parse(three_masters);
    std::string err;
    ASSERT_TRUE(m.load_slots(redis_value(p->r), err)) << err;
    EXPECT_TRUE(m.loaded());
    EXPECT_EQ(m.slots_covered(), cluster_slots);
    ASSERT_EQ(m.nodes().size(), 3u);  // replicas are not nodes we talk to
    EXPECT_EQ(m.nodes()[m.node_of(0)].port, 7000);
    EXPECT_EQ(m.nodes()[m.node_of(5460)].port, 7000);
    EXPECT_EQ(m.nodes()[m.node_of(5461)].port, 7001);
    EXPECT_EQ(m.nodes()[m.node_of(16383)].port, 7002);
    // A room's channel and its keys land on one node.
    redis_names n("", true);
    EXPECT_EQ(m.node_of(key_hash_slot(n.room_channel("lobby"))),
              m.node_of(key_hash_slot(n.room_members_key("lobby"))));
}

TEST(ClusterMap, ReloadKeepsNodeIndicesAndBumpsVersionOnlyOnChange) {
    cluster_map m("127.0.0.1");
    std::string err;
    auto p = parse(three_masters);
    ASSERT_TRUE(m.load_slots(redis_value(p->r), err));
    uint64_t v = m.version();
    uint32_t n7001 = m.node_of(6000);
    ASSERT_TRUE(m.load_slots(redis_value(p->r), err));
    EXPECT_EQ(m.version(), v);  // same table
    // Slots 5461..6000 resharded to 7000.
    auto q = parse(cat({"*4\r\n", range(0, 5460, node("127.0.0.1", 7000, "a")),
                        range(5461, 6000, node("127.0.0.1", 7000, "a")),
                        range(6001, 10922, node("127.0.0.1", 7001, "b")),
                        range(10923, 16383, node("127.0.0.1", 7002, "c"))}));
    ASSERT_TRUE(m.load_slots(redis_value(q->r), err));
    EXPECT_GT(m.version(), v);
    EXPECT_EQ(m.nodes()[m.node_of(6000)].port, 7000);
    EXPECT_EQ(m.node_of(6001), n7001);  // indices are stable
    EXPECT_EQ(m.nodes().size(), 3u);
}

TEST(ClusterMap, UnassignedSlotsAndEmptyHost) {
    cluster_map m("10.0.0.5");
    std::string err;
    auto p = parse(cat({"*1\r\n", range(100, 200, node("", 7000, "a"))}));
    ASSERT_TRUE(m.load_slots(redis_value(p->r), err)) << err;
    EXPECT_EQ(m.slots_covered(), 101u);
    EXPECT_EQ(m.node_of(99), cluster_map::no_node);
    EXPECT_EQ(m.nodes()[m.node_of(150)].host, "10.0.0.5");  // "" = the host we asked
}

TEST(ClusterMap, MovedPatchesOneSlot) {
    cluster_map m("127.0.0.1");
    std::string err;
    auto p = parse(three_masters);
    ASSERT_TRUE(m.load_slots(redis_value(p->r), err));
    uint64_t v = m.version();
    uint32_t n = m.moved(3999, "127.0.0.1", 7002);
    EXPECT_EQ(m.nodes()[n].port, 7002);
    EXPECT_EQ(m.node_of(3999), n);
    EXPECT_EQ(m.nodes()[m.node_of(3998)].port, 7000);
    EXPECT_GT(m.version(), v);
    uint32_t fresh = m.moved(1, "127.0.0.2", 7009);  // a node we did not know
    EXPECT_EQ(m.nodes().size(), 4u);
    EXPECT_EQ(m.node_of(1), fresh);
}

TEST(ClusterMap, RejectsMalformedReplies) {
    cluster_map m("127.0.0.1");
    std::string err;
    for (const std::string& bad : {std::string("+OK\r\n"), cat({"*1\r\n", range(5, 4, node("h", 1, "x"))}),
                                   cat({"*1\r\n", range(0, 16384, node("h", 1, "x"))}),
                                   cat({"*1\r\n", range(0, 1, node("h", 0, "x"))}),
                                   cat({"*1\r\n", range(0, 1, node("h", 70000, "x"))}),
                                   std::string("*1\r\n*2\r\n:0\r\n:1\r\n")}) {
        auto p = parse(bad);
        EXPECT_FALSE(m.load_slots(redis_value(p->r), err)) << bad;
        EXPECT_FALSE(err.empty());
        EXPECT_FALSE(m.loaded());
    }
}
