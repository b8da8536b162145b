// Unit tests for backplane/room_table: every outcome, the user table's multi-tab
// semantics, and seeded random join/leave/leave_all sequences checked against a
// plain std::map / std::set reference model (run under ASan to catch dangling views).
#include "backplane/room_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "protocol/message.h"

namespace {

using namespace wsgate::backplane;

static_assert(max_name_bytes == wsgate::protocol::max_name_bytes);

conn_id make_conn(uint32_t slot, uint32_t gen) { return uint64_t{slot} | (uint64_t{gen} << 32); }

std::set<conn_id> as_set(std::span<const conn_id> s) { return {s.begin(), s.end()}; }

std::set<std::string> names_of(const room_table::room_names& r) {
    std::set<std::string> out;
    for (std::string_view n : r) {
        out.emplace(n);
    }
    return out;
}

TEST(RoomTable, JoinOutcomes) {
    room_table t;
    conn_id a = make_conn(1, 0);
    conn_id b = make_conn(2, 0);
    EXPECT_EQ(t.join(a, "lobby"), room_outcome::joined_first);
    EXPECT_EQ(t.join(a, "lobby"), room_outcome::already_member);
    EXPECT_EQ(t.join(b, "lobby"), room_outcome::joined);
    EXPECT_EQ(t.join(b, "lobby"), room_outcome::already_member);
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(as_set(t.members("lobby")), (std::set<conn_id>{a, b}));
    EXPECT_TRUE(t.is_member(a, "lobby"));
    EXPECT_FALSE(t.is_member(a, "other"));
    EXPECT_FALSE(t.is_member(make_conn(3, 0), "lobby"));
}

TEST(RoomTable, LeaveOutcomes) {
    room_table t;
    conn_id a = make_conn(1, 0);
    conn_id b = make_conn(2, 0);
    EXPECT_EQ(t.leave(a, "lobby"), room_outcome::not_member);  // no such room
    t.join(a, "lobby");
    t.join(b, "lobby");
    EXPECT_EQ(t.leave(make_conn(3, 0), "lobby"), room_outcome::not_member);  // unknown conn
    t.join(make_conn(3, 0), "other");
    EXPECT_EQ(t.leave(make_conn(3, 0), "lobby"), room_outcome::not_member);  // known conn, other room
    EXPECT_EQ(t.leave(a, "lobby"), room_outcome::left);
    EXPECT_EQ(t.leave(a, "lobby"), room_outcome::not_member);
    EXPECT_EQ(t.leave(b, "lobby"), room_outcome::left_last);
    EXPECT_TRUE(t.members("lobby").empty());
    EXPECT_EQ(t.size(), 1u);
    // The room is gone, so the next join is a first join again.
    EXPECT_EQ(t.join(b, "lobby"), room_outcome::joined_first);
}

TEST(RoomTable, GenerationMakesDistinctConnections) {
    room_table t;
    EXPECT_EQ(t.join(make_conn(7, 0), "r"), room_outcome::joined_first);
    EXPECT_EQ(t.join(make_conn(7, 1), "r"), room_outcome::joined);
    EXPECT_EQ(t.leave(make_conn(7, 0), "r"), room_outcome::left);
    EXPECT_TRUE(t.is_member(make_conn(7, 1), "r"));
}

TEST(RoomTable, LeaveAllReportsRoomsThatEmptied) {
    room_table t;
    conn_id a = make_conn(1, 0);
    conn_id b = make_conn(2, 0);
    t.join(a, "solo1");
    t.join(a, "shared");
    t.join(a, "solo2");
    t.join(b, "shared");
    EXPECT_EQ(t.room_count(a), 3u);
    EXPECT_EQ(names_of(t.rooms_of(a)), (std::set<std::string>{"solo1", "shared", "solo2"}));
    std::set<std::string> emptied;
    EXPECT_EQ(t.leave_all(a, [&](std::string_view n) { emptied.emplace(n); }), 3u);
    EXPECT_EQ(emptied, (std::set<std::string>{"solo1", "solo2"}));
    EXPECT_EQ(t.room_count(a), 0u);
    EXPECT_TRUE(t.rooms_of(a).empty());
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(as_set(t.members("shared")), (std::set<conn_id>{b}));
    EXPECT_EQ(t.leave_all(a), 0u);  // idempotent
    EXPECT_EQ(t.connection_count(), 1u);
}

TEST(RoomTable, IdleConnectionsCostNothing) {
    room_table t;
    conn_id a = make_conn(1, 0);
    EXPECT_EQ(t.connection_count(), 0u);
    EXPECT_EQ(t.room_count(a), 0u);
    EXPECT_FALSE(t.is_member(a, "x"));
    EXPECT_EQ(t.connection_count(), 0u);  // queries do not create entries
    t.join(a, "x");
    t.leave(a, "x");
    EXPECT_EQ(t.connection_count(), 0u);
    EXPECT_EQ(t.size(), 0u);
}

TEST(RoomTable, LongNamesStoredOnceAndLookedUpByView) {
    room_table t;
    std::string name(max_name_bytes, 'n');
    conn_id a = make_conn(1, 0);
    EXPECT_EQ(t.join(a, name), room_outcome::joined_first);
    std::string copy = name;  // a different buffer
    EXPECT_EQ(t.join(make_conn(2, 0), std::string_view(copy)), room_outcome::joined);
    EXPECT_EQ(t.members(copy).size(), 2u);
    std::string_view stored = *t.rooms_of(a).begin();
    EXPECT_EQ(stored, name);
    EXPECT_NE(stored.data(), name.data());  // the table owns its copy
}

TEST(RoomTableDeathTest, BadNamesAbort) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    room_table t;
    EXPECT_DEATH(t.join(1, ""), "room name");
    EXPECT_DEATH(t.join(1, std::string(max_name_bytes + 1, 'x')), "room name");
}

// Many connections x many rooms, thousands of seeded operations, compared
// against std::map<std::string, std::set<conn_id>> after every step.
TEST(RoomTable, RandomAgainstReferenceModel) {
    for (uint32_t seed = 1; seed <= 8; ++seed) {
        std::mt19937 rng(seed);
        room_table t;
        std::map<std::string, std::set<conn_id>> model;
        std::vector<conn_id> conns;
        for (uint32_t i = 0; i < 40; ++i) {
            conns.push_back(make_conn(i, seed + i % 3));
        }
        std::vector<std::string> rooms;
        for (int i = 0; i < 25; ++i) {
            // Mix short (SSO) and long (heap) names.
            rooms.push_back(i % 2 ? "room:" + std::to_string(i) : std::string(40 + i, 'a' + i));
        }
        auto model_rooms_of = [&](conn_id c) {
            std::set<std::string> out;
            for (const auto& [name, set] : model) {
                if (set.count(c)) {
                    out.insert(name);
                }
            }
            return out;
        };
        for (int step = 0; step < 4000; ++step) {
            conn_id c = conns[rng() % conns.size()];
            const std::string& r = rooms[rng() % rooms.size()];
            uint32_t op = rng() % 100;
            if (op < 55) {
                auto& set = model[r];
                room_outcome want = set.count(c) ? room_outcome::already_member
                                    : set.empty() ? room_outcome::joined_first
                                                  : room_outcome::joined;
                set.insert(c);
                ASSERT_EQ(t.join(c, r), want) << "seed " << seed << " step " << step;
            } else if (op < 95) {
                room_outcome want = room_outcome::not_member;
                auto it = model.find(r);
                if (it != model.end() && it->second.erase(c)) {
                    want = it->second.empty() ? room_outcome::left_last : room_outcome::left;
                }
                if (it != model.end() && it->second.empty()) {
                    model.erase(it);
                }
                ASSERT_EQ(t.leave(c, r), want) << "seed " << seed << " step " << step;
            } else {
                std::set<std::string> want_emptied;
                std::set<std::string> had = model_rooms_of(c);
                for (const std::string& name : had) {
                    model[name].erase(c);
                    if (model[name].empty()) {
                        want_emptied.insert(name);
                        model.erase(name);
                    }
                }
                std::set<std::string> emptied;
                size_t n = t.leave_all(c, [&](std::string_view name) { emptied.emplace(name); });
                ASSERT_EQ(n, had.size());
                ASSERT_EQ(emptied, want_emptied);
            }
            ASSERT_EQ(t.size(), model.size());
            if (step % 100 == 0 || step == 3999) {
                for (const std::string& name : rooms) {
                    auto it = model.find(name);
                    std::span<const conn_id> m = t.members(name);
                    std::vector<conn_id> got(m.begin(), m.end());
                    std::sort(got.begin(), got.end());
                    ASSERT_TRUE(std::adjacent_find(got.begin(), got.end()) == got.end());
                    std::set<conn_id> want = it == model.end() ? std::set<conn_id>{} : it->second;
                    ASSERT_EQ(std::set<conn_id>(got.begin(), got.end()), want);
                }
                for (conn_id cc : conns) {
                    std::set<std::string> want = model_rooms_of(cc);
                    ASSERT_EQ(names_of(t.rooms_of(cc)), want);
                    ASSERT_EQ(t.room_count(cc), want.size());
                    for (const std::string& name : rooms) {
                        ASSERT_EQ(t.is_member(cc, name), want.count(name) == 1);
                    }
                }
            }
        }
        size_t in_rooms = 0;
        for (conn_id cc : conns) {
            in_rooms += t.room_count(cc) > 0;
        }
        EXPECT_EQ(t.connection_count(), in_rooms);
        for (conn_id cc : conns) {
            t.leave_all(cc);
        }
        EXPECT_EQ(t.size(), 0u);
        EXPECT_EQ(t.connection_count(), 0u);
    }
}

// Views handed out before leave_all must not be used after; views taken after
// must be valid (ASan checks that no freed name or array is read).
TEST(RoomTable, NoDanglingViewsAfterLeaveAll) {
    room_table t;
    for (uint32_t i = 0; i < 100; ++i) {
        t.join(make_conn(i, 0), "room-" + std::to_string(i % 7) + std::string(30, 'x'));
    }
    for (uint32_t i = 0; i < 100; i += 2) {
        t.leave_all(make_conn(i, 0));
    }
    for (uint32_t i = 0; i < 7; ++i) {
        std::string name = "room-" + std::to_string(i) + std::string(30, 'x');
        for (conn_id c : t.members(name)) {
            EXPECT_EQ(c % 2, 1u);
            EXPECT_EQ(*t.rooms_of(c).begin(), name);
        }
    }
    for (uint32_t i = 1; i < 100; i += 2) {
        t.leave_all(make_conn(i, 0));
    }
    EXPECT_EQ(t.size(), 0u);
    // Rooms (and their recycled ids) come back with fresh names.
    EXPECT_EQ(t.join(1, "again"), room_outcome::joined_first);
    EXPECT_EQ(*t.rooms_of(1).begin(), "again");
    int seen = 0;
    t.for_each_room([&](std::string_view n) {
        EXPECT_EQ(n, "again");
        ++seen;
    });
    EXPECT_EQ(seen, 1);
}

TEST(UserTable, MultiConnectionSemantics) {
    user_table u;
    conn_id tab1 = make_conn(1, 0);
    conn_id tab2 = make_conn(2, 0);
    conn_id bob = make_conn(3, 0);
    EXPECT_FALSE(u.online("alice"));
    EXPECT_EQ(u.add(tab1, "alice"), user_outcome::first_connection);
    EXPECT_EQ(u.add(tab1, "alice"), user_outcome::already_present);
    EXPECT_EQ(u.add(tab2, "alice"), user_outcome::added);
    EXPECT_EQ(u.add(bob, "bob"), user_outcome::first_connection);
    EXPECT_TRUE(u.online("alice"));
    EXPECT_EQ(u.user_count(), 2u);
    EXPECT_EQ(u.connection_count(), 3u);
    EXPECT_EQ(as_set(u.connections("alice")), (std::set<conn_id>{tab1, tab2}));
    EXPECT_EQ(u.user_of(tab2), "alice");
    EXPECT_EQ(u.user_of(make_conn(9, 0)), "");
    EXPECT_TRUE(u.connections("carol").empty());

    EXPECT_EQ(u.remove(tab1), user_outcome::removed);
    EXPECT_EQ(u.remove(tab1), user_outcome::not_present);
    EXPECT_TRUE(u.online("alice"));
    EXPECT_EQ(as_set(u.connections("alice")), (std::set<conn_id>{tab2}));
    std::string gone;
    EXPECT_EQ(u.remove(tab2, [&](std::string_view n) { gone = n; }), user_outcome::last_connection_gone);
    EXPECT_EQ(gone, "alice");
    EXPECT_FALSE(u.online("alice"));
    EXPECT_EQ(u.user_count(), 1u);
    EXPECT_EQ(u.add(tab2, "alice"), user_outcome::first_connection);
    int seen = 0;
    u.for_each_user([&](std::string_view) { ++seen; });
    EXPECT_EQ(seen, 2);
}

TEST(UserTableDeathTest, SecondUserForConnectionAborts) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    user_table u;
    u.add(1, "alice");
    EXPECT_DEATH(u.add(1, "bob"), "second user");
}

TEST(UserTable, RandomAgainstReferenceModel) {
    std::mt19937 rng(42);
    user_table u;
    std::map<conn_id, std::string> owner;                 // conn -> user
    std::map<std::string, std::set<conn_id>> by_user;     // user -> conns
    for (int step = 0; step < 5000; ++step) {
        conn_id c = make_conn(rng() % 60, 0);
        std::string name = "user" + std::to_string(rng() % 12);
        if (rng() % 2) {
            auto it = owner.find(c);
            if (it != owner.end()) {
                name = it->second;  // a connection keeps its user
            }
            user_outcome want = it != owner.end()     ? user_outcome::already_present
                                : by_user[name].empty() ? user_outcome::first_connection
                                                        : user_outcome::added;
            owner[c] = name;
            by_user[name].insert(c);
            ASSERT_EQ(u.add(c, name), want);
        } else {
            user_outcome want = user_outcome::not_present;
            std::string want_gone;
            auto it = owner.find(c);
            if (it != owner.end()) {
                auto& set = by_user[it->second];
                set.erase(c);
                want = set.empty() ? user_outcome::last_connection_gone : user_outcome::removed;
                if (set.empty()) {
                    want_gone = it->second;
                    by_user.erase(it->second);
                }
                owner.erase(it);
            }
            std::string gone;
            ASSERT_EQ(u.remove(c, [&](std::string_view n) { gone = n; }), want);
            ASSERT_EQ(gone, want_gone);
        }
        std::erase_if(by_user, [](const auto& kv) { return kv.second.empty(); });
        ASSERT_EQ(u.user_count(), by_user.size());
        ASSERT_EQ(u.connection_count(), owner.size());
        if (step % 100 == 0) {
            for (int i = 0; i < 12; ++i) {
                std::string n = "user" + std::to_string(i);
                auto it = by_user.find(n);
                ASSERT_EQ(u.online(n), it != by_user.end());
                ASSERT_EQ(as_set(u.connections(n)), it == by_user.end() ? std::set<conn_id>{} : it->second);
            }
            for (const auto& [cc, n] : owner) {
                ASSERT_EQ(u.user_of(cc), n);
            }
        }
    }
}

}  // namespace
