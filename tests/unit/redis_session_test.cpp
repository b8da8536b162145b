// Unit tests for backplane/redis_session: fed RESP bytes, no server. What the
// session writes is parsed back with hiredis' own reader (a command is a RESP
// array of bulk strings), so batches are checked command by command.
#include "backplane/redis_session.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <set>
#include <string>
#include <vector>

namespace {

using namespace wsgate::backplane;
using wsgate::protocol::byte_buffer;

// ---- helpers ----

std::string take(redis_session& s) {
    byte_buffer b;
    s.take_output(b);
    return std::string(b.view());
}

void feed(redis_session& s, std::string_view bytes) {
    s.feed({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

std::string bulk(std::string_view s) { return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n"; }

std::string array(std::initializer_list<std::string> parts) {
    std::string r = "*" + std::to_string(parts.size()) + "\r\n";
    for (const std::string& p : parts) {
        r += p;
    }
    return r;
}

std::string push(std::string_view kind, std::string_view ch, std::string_view payload) {
    return array({bulk(kind), bulk(ch), bulk(payload)});
}
std::string confirm(std::string_view kind, std::string_view ch, int count) {
    return array({bulk(kind), bulk(ch), ":" + std::to_string(count) + "\r\n"});
}

// Commands written by the session, each as its argv.
using argv_t = std::vector<std::string>;
std::vector<argv_t> commands_in(std::string_view bytes) {
    std::vector<argv_t> out;
    redisReader* r = redisReaderCreate();
    redisReaderFeed(r, bytes.data(), bytes.size());
    void* reply = nullptr;
    while (redisReaderGetReply(r, &reply) == REDIS_OK && reply) {
        auto* rep = static_cast<redisReply*>(reply);
        argv_t a;
        for (size_t i = 0; i < rep->elements; ++i) {
            a.emplace_back(rep->element[i]->str, rep->element[i]->len);
        }
        out.push_back(std::move(a));
        freeReplyObject(reply);
    }
    EXPECT_EQ(r->err, 0);
    redisReaderFree(r);
    return out;
}

// An event with its views copied out.
struct ev {
    redis_event_kind kind;
    uint64_t token;
    redis_type type;
    int64_t integer;
    std::string text, channel, host;
    bool sharded, lost, redirect, ask;
    uint16_t rslot, port, slot;
    uint32_t channels;
};
std::vector<ev> drain(redis_session& s) {
    std::vector<ev> out;
    redis_event e;
    while (s.poll(e)) {
        out.push_back(ev{e.kind, e.token, e.type, e.integer, std::string(e.text), std::string(e.channel),
                         std::string(e.redirect.host), e.sharded, e.connection_lost, e.redirect.valid,
                         e.redirect.ask, e.redirect.slot, e.redirect.port, e.slot, e.channels});
    }
    return out;
}

redis_session_options sub_opts(uint32_t per_cmd = 1000, bool sharded = false) {
    redis_session_options o;
    o.role = redis_role::subscriber;
    o.max_channels_per_command = per_cmd;
    o.sharded = sharded;
    return o;
}

// ---- subscriber ----

TEST(RedisSubscriber, SubscribeExactBytes) {
    redis_session s(sub_opts());
    s.on_connected(0);
    s.subscribe("room:a");
    s.subscribe("user:7");
    EXPECT_EQ(take(s), "*3\r\n$9\r\nSUBSCRIBE\r\n$6\r\nroom:a\r\n$6\r\nuser:7\r\n");
    s.unsubscribe("room:a");
    EXPECT_EQ(take(s), "*2\r\n$11\r\nUNSUBSCRIBE\r\n$6\r\nroom:a\r\n");
    EXPECT_EQ(take(s), "");
    EXPECT_EQ(s.counters().commands_sent, 2u);
}

TEST(RedisSubscriber, BatchesManyChannelsPerCommand) {
    redis_session s(sub_opts(1000));
    s.on_connected(0);
    for (int i = 0; i < 5000; ++i) {
        s.subscribe("room:" + std::to_string(i));
    }
    auto cmds = commands_in(take(s));
    ASSERT_EQ(cmds.size(), 5u);
    std::set<std::string> seen;
    for (const argv_t& c : cmds) {
        EXPECT_EQ(c[0], "SUBSCRIBE");
        EXPECT_EQ(c.size(), 1001u);
        seen.insert(c.begin() + 1, c.end());
    }
    EXPECT_EQ(seen.size(), 5000u);
    s.subscribe("one-more");
    s.subscribe("room:3");  // already sent: nothing
    cmds = commands_in(take(s));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], (argv_t{"SUBSCRIBE", "one-more"}));

    // 2001 unsubscribes at 1000 per command: 3 commands.
    for (int i = 0; i < 2001; ++i) {
        s.unsubscribe("room:" + std::to_string(i));
    }
    cmds = commands_in(take(s));
    ASSERT_EQ(cmds.size(), 3u);
    EXPECT_EQ(cmds[2].size(), 2u);
    EXPECT_EQ(cmds[0][0], "UNSUBSCRIBE");
}

TEST(RedisSubscriber, ChangesUndoneBeforeFlushWriteNothing) {
    redis_session s(sub_opts());
    s.on_connected(0);
    s.subscribe("a");
    s.unsubscribe("a");
    s.subscribe("b");
    s.subscribe("b");
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"SUBSCRIBE", "b"}}));
    EXPECT_FALSE(s.wanted("a"));
    // Sent, then unsubscribed and subscribed again before the flush: nothing.
    s.unsubscribe("b");
    s.subscribe("b");
    EXPECT_EQ(take(s), "");
    // Unsubscribe of an unknown channel: nothing.
    s.unsubscribe("zzz");
    EXPECT_EQ(take(s), "");
    EXPECT_EQ(s.wanted_count(), 1u);
}

TEST(RedisSubscriber, ConfirmationsMaintainTheConfirmedSet) {
    redis_session s(sub_opts());
    s.on_connected(0);
    s.subscribe("a");
    s.subscribe("b");
    take(s);
    EXPECT_FALSE(s.confirmed("a"));
    feed(s, confirm("subscribe", "a", 1) + confirm("subscribe", "b", 2));
    EXPECT_TRUE(drain(s).empty());
    EXPECT_TRUE(s.confirmed("a"));
    EXPECT_TRUE(s.confirmed("b"));
    EXPECT_EQ(s.confirmed_count(), 2u);
    EXPECT_EQ(s.in_flight(), 0u);
    s.unsubscribe("a");
    take(s);
    EXPECT_TRUE(s.confirmed("a"));  // until the server says so
    feed(s, confirm("unsubscribe", "a", 1));
    EXPECT_TRUE(drain(s).empty());  // solicited: no event
    EXPECT_FALSE(s.confirmed("a"));
    EXPECT_FALSE(s.wanted("a"));
    EXPECT_EQ(s.confirmed_count(), 1u);
    EXPECT_EQ(s.in_flight(), 0u);
}

TEST(RedisSubscriber, ResubscribesEverythingAfterReconnectInBatches) {
    redis_session_options o = sub_opts(1000);
    o.password = "pw";
    redis_session s(o);
    s.subscribe("early");  // before the first connection: written at connect
    EXPECT_EQ(take(s), "");
    s.on_connected(0);
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"AUTH", "pw"}, {"SUBSCRIBE", "early"}}));
    feed(s, "+OK\r\n" + confirm("subscribe", "early", 1));
    EXPECT_TRUE(drain(s).empty());
    for (int i = 0; i < 2499; ++i) {
        s.subscribe(std::string("c").append(std::to_string(i)));
    }
    take(s);
    feed(s, confirm("subscribe", "c0", 2));
    drain(s);
    EXPECT_EQ(s.confirmed_count(), 2u);
    s.unsubscribe("c1");  // not yet flushed when the connection drops
    s.on_disconnected(1000);
    EXPECT_EQ(s.confirmed_count(), 0u);
    EXPECT_FALSE(s.confirmed("early"));
    EXPECT_EQ(s.in_flight(), 0u);
    s.on_connected(2000);
    auto cmds = commands_in(take(s));
    ASSERT_EQ(cmds.size(), 4u);  // AUTH + ceil(2499 / 1000)
    EXPECT_EQ(cmds[0], (argv_t{"AUTH", "pw"}));
    std::set<std::string> seen;
    for (size_t i = 1; i < cmds.size(); ++i) {
        EXPECT_EQ(cmds[i][0], "SUBSCRIBE");
        seen.insert(cmds[i].begin() + 1, cmds[i].end());
    }
    EXPECT_EQ(seen.size(), 2499u);  // 2498 c* + early
    EXPECT_TRUE(seen.count("early"));
    EXPECT_FALSE(seen.count("c1"));
    EXPECT_EQ(s.counters().reconnects, 1u);
}

TEST(RedisSubscriber, ShardedBatchesNeverCrossSlots) {
    redis_session s(sub_opts(2, true));
    s.on_connected(0);
    s.subscribe("a", 1);
    s.subscribe("b", 2);
    s.subscribe("c", 1);
    s.subscribe("d", 1);
    s.subscribe("e", 2);
    auto cmds = commands_in(take(s));
    EXPECT_EQ(cmds, (std::vector<argv_t>{{"SSUBSCRIBE", "a", "c"}, {"SSUBSCRIBE", "d"}, {"SSUBSCRIBE", "b", "e"}}));
    s.unsubscribe("a");
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"SUNSUBSCRIBE", "a"}}));
}

TEST(RedisSubscriber, MessagesWithBinaryPayloadAtEverySplit) {
    const std::string payload("{\"x\":1}\0\r\n\r\n$5\r\n*\0end", 20);
    const std::string bytes = push("message", "room:a", payload) + push("smessage", "room:b", "") +
                              push("message", "r", std::string(300, 'z'));
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
        redis_session s(sub_opts());
        s.on_connected(0);
        std::vector<ev> got;
        feed(s, std::string_view(bytes).substr(0, cut));
        for (const ev& e : drain(s)) {
            got.push_back(e);
        }
        feed(s, std::string_view(bytes).substr(cut));
        for (const ev& e : drain(s)) {
            got.push_back(e);
        }
        ASSERT_EQ(got.size(), 3u) << cut;
        EXPECT_EQ(got[0].kind, redis_event_kind::message);
        EXPECT_EQ(got[0].channel, "room:a");
        EXPECT_EQ(got[0].text, payload) << cut;
        EXPECT_FALSE(got[0].sharded);
        EXPECT_EQ(got[1].channel, "room:b");
        EXPECT_EQ(got[1].text, "");
        EXPECT_TRUE(got[1].sharded);
        EXPECT_EQ(got[2].text, std::string(300, 'z'));
        EXPECT_EQ(s.counters().bytes_in, bytes.size());
    }
    // Byte by byte.
    redis_session s(sub_opts());
    s.on_connected(0);
    size_t n = 0;
    for (char c : bytes) {
        feed(s, std::string_view(&c, 1));
        n += drain(s).size();
    }
    EXPECT_EQ(n, 3u);
}

TEST(RedisSubscriber, EventViewsStayValidUntilNextPoll) {
    redis_session s(sub_opts());
    s.on_connected(0);
    feed(s, push("message", "c1", "p1") + push("message", "c2", "p2"));
    redis_event a;
    ASSERT_TRUE(s.poll(a));
    EXPECT_EQ(a.channel, "c1");
    EXPECT_EQ(a.text, "p1");  // read after poll returned (ASan: still allocated)
    ASSERT_TRUE(s.poll(a));
    EXPECT_EQ(a.text, "p2");
    EXPECT_FALSE(s.poll(a));
}

TEST(RedisSubscriber, Pong) {
    redis_session s(sub_opts());
    s.ping();  // disconnected: nothing
    s.on_connected(0);
    s.ping();
    EXPECT_EQ(take(s), "*1\r\n$4\r\nPING\r\n");
    feed(s, array({bulk("pong"), bulk("")}));
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::pong);
    // Without subscriptions Redis answers +PONG.
    s.ping();
    take(s);
    feed(s, "+PONG\r\n");
    evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::pong);
    EXPECT_EQ(s.in_flight(), 0u);
}

TEST(RedisSubscriber, UnsolicitedSunsubscribeIsSurfaced) {
    redis_session s(sub_opts(1000, true));
    s.on_connected(0);
    s.subscribe("room:{a}", 5);
    s.subscribe("room:{b}", 9);
    take(s);
    feed(s, confirm("ssubscribe", "room:{a}", 1) + confirm("ssubscribe", "room:{b}", 1));
    drain(s);
    // The slot of room:{a} migrated: Redis drops the subscription by itself.
    feed(s, confirm("sunsubscribe", "room:{a}", 0));
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::slot_moved);
    EXPECT_EQ(evs[0].channel, "room:{a}");
    EXPECT_EQ(evs[0].slot, 5);
    EXPECT_FALSE(s.confirmed("room:{a}"));
    EXPECT_TRUE(s.wanted("room:{a}"));
    EXPECT_EQ(take(s), "");  // no automatic retry
    s.subscribe("room:{a}", 5);  // owner: it is still served here
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"SSUBSCRIBE", "room:{a}"}}));
    // A solicited sunsubscribe is a plain confirmation.
    s.unsubscribe("room:{b}");
    take(s);
    feed(s, confirm("sunsubscribe", "room:{b}", 0));
    EXPECT_TRUE(drain(s).empty());
    EXPECT_FALSE(s.wanted("room:{b}"));
    // Unsubscribe then subscribe again, both written: the first sunsubscribe is solicited.
    feed(s, confirm("ssubscribe", "room:{a}", 1));
    drain(s);
    s.unsubscribe("room:{a}");
    take(s);
    s.subscribe("room:{a}", 5);
    take(s);
    feed(s, confirm("sunsubscribe", "room:{a}", 0) + confirm("ssubscribe", "room:{a}", 1));
    EXPECT_TRUE(drain(s).empty());
    EXPECT_TRUE(s.confirmed("room:{a}"));
}

TEST(RedisSubscriber, SubscribeErrorCarriesTheRedirect) {
    redis_session s(sub_opts(1000, true));
    s.on_connected(0);
    s.subscribe("x", 3999);
    s.subscribe("y", 3999);
    take(s);
    feed(s, "-MOVED 3999 127.0.0.1:6381\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::subscribe_error);
    EXPECT_EQ(evs[0].slot, 3999);
    EXPECT_EQ(evs[0].channels, 2u);
    EXPECT_TRUE(evs[0].redirect);
    EXPECT_EQ(evs[0].host, "127.0.0.1");
    EXPECT_EQ(evs[0].port, 6381);
    EXPECT_FALSE(s.needs_disconnect());
    EXPECT_EQ(s.in_flight(), 0u);
    EXPECT_EQ(take(s), "");
    // The owner moves x elsewhere; y is re-sent here.
    s.unsubscribe("x");
    s.subscribe("y", 3999);
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"SSUBSCRIBE", "y"}}));
    EXPECT_FALSE(s.wanted("x"));
}

TEST(RedisSubscriber, UnexpectedReplyIsAProtocolError) {
    redis_session s(sub_opts());
    s.on_connected(0);
    feed(s, ":5\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::protocol_error);
    EXPECT_TRUE(s.needs_disconnect());
}

// ---- handshake ----

TEST(RedisHandshake, AuthWithUserAndPassword) {
    redis_session_options o;
    o.user = "gw";
    o.password = "s3cret";
    redis_session s(o);
    s.on_connected(0);
    EXPECT_EQ(take(s), "*3\r\n$4\r\nAUTH\r\n$2\r\ngw\r\n$6\r\ns3cret\r\n");
    feed(s, "+OK\r\n");
    EXPECT_TRUE(drain(s).empty());
    EXPECT_EQ(s.in_flight(), 0u);
}

TEST(RedisHandshake, AuthWithPasswordOnlyAndSelect) {
    redis_session_options o;
    o.password = "pw";
    o.db = 3;
    redis_session s(o);
    s.on_connected(0);
    EXPECT_EQ(take(s), "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n");
    feed(s, "+OK\r\n+OK\r\n");
    EXPECT_TRUE(drain(s).empty());
    EXPECT_EQ(s.counters().commands_sent, 2u);
}

TEST(RedisHandshake, NothingWithoutPasswordAndDbZero) {
    redis_session s{redis_session_options{}};
    s.on_connected(0);
    EXPECT_EQ(take(s), "");
    // The subscriber never SELECTs (pub/sub ignores databases).
    redis_session_options o = sub_opts();
    o.db = 2;
    redis_session sub(o);
    sub.on_connected(0);
    EXPECT_EQ(take(sub), "");
}

TEST(RedisHandshake, AuthErrorIsFatal) {
    redis_session_options o;
    o.password = "wrong";
    redis_session s(o);
    ASSERT_TRUE(s.command({"PUBLISH", "c", "m"}, 1));
    s.on_connected(0);
    take(s);
    feed(s, "-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::handshake_failed);
    EXPECT_NE(evs[0].text.find("WRONGPASS"), std::string::npos);
    EXPECT_TRUE(s.needs_disconnect());
    s.on_disconnected(10);
    evs = drain(s);  // the PUBLISH is failed back
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_TRUE(evs[0].lost);
    EXPECT_EQ(evs[0].token, 1u);
    EXPECT_FALSE(s.needs_disconnect());
}

TEST(RedisHandshake, SelectErrorIsFatal) {
    redis_session_options o;
    o.db = 99;
    redis_session s(o);
    s.on_connected(0);
    take(s);
    feed(s, "-ERR DB index is out of range\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::handshake_failed);
    EXPECT_EQ(evs[0].text, "SELECT: ERR DB index is out of range");
}

// ---- command role ----

TEST(RedisCommand, PipelinedRepliesMatchTokens) {
    redis_session s{redis_session_options{}};
    s.on_connected(0);
    for (uint64_t i = 0; i < 10; ++i) {
        ASSERT_TRUE(s.command({"PUBLISH", "room:a", "m" + std::to_string(i)}, 100 + i));
    }
    byte_buffer out;
    s.take_output(out);
    auto cmds = commands_in(out.view());
    ASSERT_EQ(cmds.size(), 10u);
    EXPECT_EQ(cmds[9], (argv_t{"PUBLISH", "room:a", "m9"}));
    EXPECT_EQ(s.in_flight(), 10u);
    EXPECT_EQ(s.counters().bytes_out, out.size());
    EXPECT_EQ(s.counters().commands_sent, 10u);
    std::string replies = std::string(":1\r\n+OK\r\n$3\r\nb") + '\0' + "c\r\n$-1\r\n*2\r\n:7\r\n$1\r\nx\r\n-ERR nope\r\n:0\r\n:0\r\n:0\r\n:42\r\n";
    feed(s, replies);
    redis_event e;
    std::vector<uint64_t> tokens;
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.kind, redis_event_kind::reply);
    EXPECT_EQ(e.type, redis_type::integer);
    EXPECT_EQ(e.integer, 1);
    tokens.push_back(e.token);
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.type, redis_type::status);
    EXPECT_EQ(e.text, "OK");
    tokens.push_back(e.token);
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.type, redis_type::string);
    EXPECT_EQ(e.text, std::string_view("b\0c", 3));
    tokens.push_back(e.token);
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.type, redis_type::nil);
    tokens.push_back(e.token);
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.type, redis_type::array);
    ASSERT_EQ(e.value.size(), 2u);
    EXPECT_EQ(e.value[0].integer(), 7);
    EXPECT_EQ(e.value[1].str(), "x");
    EXPECT_EQ(e.value[1].type(), redis_type::string);
    tokens.push_back(e.token);
    ASSERT_TRUE(s.poll(e));
    EXPECT_EQ(e.type, redis_type::error);
    EXPECT_EQ(e.text, "ERR nope");
    EXPECT_FALSE(e.redirect.valid);
    EXPECT_FALSE(e.connection_lost);
    tokens.push_back(e.token);
    while (s.poll(e)) {
        tokens.push_back(e.token);
    }
    EXPECT_EQ(e.kind, redis_event_kind::none);
    ASSERT_EQ(tokens.size(), 10u);
    for (uint64_t i = 0; i < 10; ++i) {
        EXPECT_EQ(tokens[i], 100 + i);
    }
    EXPECT_EQ(s.in_flight(), 0u);
    EXPECT_EQ(s.counters().publish_failures, 1u);  // the -ERR one
}

TEST(RedisCommand, MovedAndAskReplies) {
    redis_session s{redis_session_options{}};
    s.on_connected(0);
    ASSERT_TRUE(s.command({"SPUBLISH", "room:{a}", "m"}, 1));
    ASSERT_TRUE(s.command({"GET", "k"}, 2));
    take(s);
    feed(s, "-MOVED 3999 127.0.0.1:6381\r\n-ASK 12182 10.0.0.2:7000\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 2u);
    EXPECT_TRUE(evs[0].redirect);
    EXPECT_FALSE(evs[0].ask);
    EXPECT_EQ(evs[0].rslot, 3999);
    EXPECT_EQ(evs[0].host, "127.0.0.1");
    EXPECT_EQ(evs[0].port, 6381);
    EXPECT_EQ(evs[1].token, 2u);
    EXPECT_TRUE(evs[1].ask);
    EXPECT_EQ(evs[1].rslot, 12182);
    EXPECT_EQ(evs[1].host, "10.0.0.2");
    EXPECT_EQ(evs[1].port, 7000);
}

TEST(RedisCommand, ParseRedirect) {
    redis_redirect r;
    ASSERT_TRUE(parse_redirect("MOVED 0 ::1:6379", r));
    EXPECT_EQ(r.host, "::1");
    EXPECT_EQ(r.port, 6379);
    EXPECT_EQ(r.slot, 0);
    ASSERT_TRUE(parse_redirect("MOVED 16383 :6380", r));  // Redis 7: unknown endpoint
    EXPECT_EQ(r.host, "");
    EXPECT_EQ(r.slot, 16383);
    ASSERT_TRUE(parse_redirect("ASK 5 redis-1.internal:30001", r));
    EXPECT_TRUE(r.ask);
    EXPECT_EQ(r.host, "redis-1.internal");
    for (std::string_view bad : {"MOVED", "MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h", "MOVED 1 h:0",
                                 "MOVED 1 h:65536", "MOVED 1 h:", "ERR MOVED 1 h:1", "moved 1 h:1",
                                 "MOVED -1 h:1", "ASK 1"}) {
        EXPECT_FALSE(parse_redirect(bad, r)) << bad;
        EXPECT_FALSE(r.valid);
    }
}

TEST(RedisCommand, DisconnectFailsInFlightAndKeepsQueued) {
    redis_session_options o;
    o.password = "pw";
    redis_session s(o);
    ASSERT_TRUE(s.command({"SET", "a", "1"}, 1));  // queued before the first connect
    EXPECT_EQ(s.queued_bytes(), std::string_view("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n").size());
    s.on_connected(0);
    EXPECT_EQ(commands_in(take(s)), (std::vector<argv_t>{{"AUTH", "pw"}, {"SET", "a", "1"}}));
    ASSERT_TRUE(s.command({"PUBLISH", "c", "x"}, 2));
    ASSERT_TRUE(s.command({"PUBLISH", "c", "y"}, 3));
    take(s);
    feed(s, "+OK\r\n+OK\r\n:1\r\n");  // AUTH, SET, first PUBLISH; the second is never answered
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 2u);
    EXPECT_EQ(evs[0].token, 1u);
    EXPECT_EQ(evs[1].token, 2u);
    s.on_disconnected(100);
    ASSERT_TRUE(s.command({"PUBLISH", "c", "z"}, 4));  // queued for the reconnect
    ASSERT_TRUE(s.command({"GET", "a"}, 5));
    evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].token, 3u);
    EXPECT_TRUE(evs[0].lost);
    EXPECT_EQ(evs[0].type, redis_type::error);
    EXPECT_EQ(evs[0].text, "connection lost");
    EXPECT_EQ(s.counters().publish_failures, 1u);
    EXPECT_EQ(take(s), "");  // nothing to write while down
    s.on_connected(200);
    EXPECT_EQ(commands_in(take(s)),
              (std::vector<argv_t>{{"AUTH", "pw"}, {"PUBLISH", "c", "z"}, {"GET", "a"}}));
    EXPECT_EQ(s.queued_bytes(), 0u);
    feed(s, "+OK\r\n:0\r\n$1\r\n1\r\n");
    evs = drain(s);
    ASSERT_EQ(evs.size(), 2u);
    EXPECT_EQ(evs[0].token, 4u);
    EXPECT_EQ(evs[1].token, 5u);
    EXPECT_EQ(evs[1].text, "1");
}

TEST(RedisCommand, QueueBound) {
    redis_session_options o;
    o.max_queued_bytes = 100;
    redis_session s(o);
    // "*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nm\r\n" is 31 bytes: 3 fit in 100.
    int accepted = 0;
    for (int i = 0; i < 5; ++i) {
        accepted += s.command({"PUBLISH", "c", "m"}, static_cast<uint64_t>(i));
    }
    EXPECT_EQ(accepted, 3);
    EXPECT_EQ(s.queued_bytes(), 93u);
    EXPECT_EQ(s.counters().publish_failures, 2u);
    EXPECT_FALSE(s.command({"SET", "k", std::string(200, 'v')}, 9));
    EXPECT_EQ(s.counters().publish_failures, 2u);  // not a publish
    s.on_connected(0);
    EXPECT_EQ(commands_in(take(s)).size(), 3u);
    EXPECT_TRUE(s.command({"PUBLISH", "c", "m"}, 10));  // the output was taken: room again
}

TEST(RedisCommand, MalformedRespIsAProtocolError) {
    redis_session s{redis_session_options{}};
    s.on_connected(0);
    ASSERT_TRUE(s.command({"GET", "k"}, 1));
    take(s);
    feed(s, "?garbage\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::protocol_error);
    EXPECT_FALSE(evs[0].text.empty());
    EXPECT_TRUE(s.needs_disconnect());
    feed(s, ":1\r\n");  // ignored after a fatal event
    EXPECT_TRUE(drain(s).empty());
    s.on_disconnected(0);
    evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_TRUE(evs[0].lost);
    // A fresh connection parses again.
    s.on_connected(1000);
    ASSERT_TRUE(s.command({"GET", "k"}, 2));
    take(s);
    feed(s, "$1\r\nv\r\n");
    evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].text, "v");
}

TEST(RedisCommand, ReplyWithoutCommandIsAProtocolError) {
    redis_session s{redis_session_options{}};
    s.on_connected(0);
    feed(s, "+OK\r\n");
    auto evs = drain(s);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].kind, redis_event_kind::protocol_error);
}

// ---- backoff ----

std::vector<int64_t> delays(uint64_t seed, int n) {
    redis_session_options o;
    o.seed = seed;
    redis_session s(o);
    std::vector<int64_t> d;
    int64_t now = 1'000'000;
    for (int i = 0; i < n; ++i) {
        s.on_disconnected(now);  // a failed dial each time
        d.push_back(s.next_connect_ms() - now);
        now = s.next_connect_ms();
    }
    return d;
}

TEST(RedisBackoff, FullJitterGrowsToTheCapAndIsDeterministic) {
    std::vector<int64_t> d = delays(42, 200);
    EXPECT_EQ(d, delays(42, 200));
    EXPECT_NE(d, delays(43, 200));
    int64_t max_late = 0;
    for (size_t i = 0; i < d.size(); ++i) {
        int64_t window = std::min<int64_t>(10'000, int64_t{100} << std::min<size_t>(i, 20));
        EXPECT_GE(d[i], 0);
        EXPECT_LE(d[i], window) << i;
        if (i >= 7) {
            max_late = std::max(max_late, d[i]);
        }
    }
    EXPECT_GT(max_late, 5'000);  // the cap is reached (jitter spreads over [0, 10 s])
}

TEST(RedisBackoff, ResetsAfterAGoodReply) {
    redis_session_options o;
    o.seed = 7;
    redis_session s(o);
    for (int i = 0; i < 10; ++i) {
        s.on_disconnected(0);
    }
    // Connected, but nothing answered: the window keeps its size.
    s.on_connected(0);
    s.on_disconnected(0);
    s.on_connected(0);
    ASSERT_TRUE(s.command({"PING"}, 1));
    take(s);
    feed(s, "+PONG\r\n");
    drain(s);
    for (int i = 0; i < 50; ++i) {
        redis_session_options o2 = o;
        o2.seed = static_cast<uint64_t>(i);
        redis_session t(o2);
        t.on_connected(0);
        ASSERT_TRUE(t.command({"PING"}, 1));
        feed(t, "+PONG\r\n");
        drain(t);
        t.on_disconnected(1000);
        EXPECT_LE(t.next_connect_ms(), 1100);
    }
    s.on_disconnected(1000);
    EXPECT_LE(s.next_connect_ms(), 1100);
    EXPECT_EQ(s.counters().reconnects, 1u);
    EXPECT_EQ(s.counters().connects, 2u);
}

}  // namespace
