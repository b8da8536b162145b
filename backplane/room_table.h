// Per-worker room and user tables: who, on this core, is in which room and which
// connection belongs to which user.
//
// One instance of each lives in every worker (thread-per-core, shared-nothing):
// single-threaded, no locks, no I/O (sans-I/O like the rest of backplane/). The
// core feeds join / leave / disconnect / authenticate events; the tables answer
// with the transitions that matter for Redis: a room gained its FIRST local member
// (SUBSCRIBE room:{id}) or lost its LAST (UNSUBSCRIBE), a user's first connection
// on this core arrived (SUBSCRIBE user:{id}) or the last one went.
//
// Connections are opaque 64-bit ids (core packs slot | generation << 32), so a
// recycled slot is a different id and a stale id never aliases a new connection.
//
// Layout (room_table), chosen for fan-out: a room's members are one contiguous
// std::vector<conn_id>, so publish iterates a flat array. Removal is swap-remove;
// each membership records its position on both sides (room -> index in the
// connection's list, connection -> index in the room's array), so leave is O(rooms
// of that connection) (a scan of a list bounded by the per-connection room limit)
// and leave_all is O(rooms of that connection) too.
//
// Memory: an idle connection (no room, no user) owns nothing here: there is no
// per-slot array, only hash maps keyed by the ids that are present. Per membership:
// 12 bytes in the room (conn_id + uint32 back-index) + 8 bytes in the connection
// (room id + index), i.e. 20 bytes, up to 2x while vectors have spare capacity.
// Per connection that is in at least one room: one hash node (~48 bytes + bucket).
// Per room: one hash node holding the name (std::string: heap only above 15 bytes,
// never over 128) plus a 64-byte room record; the name is stored once, the room
// record refers to it by string_view (unordered_map nodes never move).
// Per user: one hash node with the name + a record; per connection with a user:
// one hash node (~32 bytes).
//
// Lookups take std::string_view and never allocate (C++20 heterogeneous lookup
// via a transparent hash). Names must be 1..max_name_bytes bytes: the protocol
// layer validates client input first, so a violation here is a programmer error
// and aborts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wsgate::backplane {

using conn_id = uint64_t;  // slot | generation << 32; opaque here

// Longest room or user name (same bound as protocol::max_name_bytes).
inline constexpr size_t max_name_bytes = 128;

enum class room_outcome : uint8_t {
    joined_first,    // joined; the room had no local member before (subscribe now)
    joined,          // joined a room that already had local members
    already_member,  // no change
    left_last,       // left; the room has no local member any more (unsubscribe now)
    left,            // left; other local members remain
    not_member,      // no change
};

enum class user_outcome : uint8_t {
    first_connection,      // added; the user had no connection on this worker before
    added,                 // added another connection (tab) of a present user
    already_present,       // the connection was already registered for this user
    last_connection_gone,  // removed; the user has no connection left on this worker
    removed,               // removed; the user still has other connections here
    not_present,           // the connection had no user
};

// Transparent hash so find(std::string_view) does not build a std::string.
struct name_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <class T>
using name_map = std::unordered_map<std::string, T, name_hash, std::equal_to<>>;

class room_table {
public:
    // One entry of a connection's room list.
    struct membership {
        uint32_t room;   // index into _rooms
        uint32_t index;  // position of the connection in that room's _members
    };

    // Iterable of the room names of one connection (see rooms_of()).
    class room_names {
    public:
        class iterator {
        public:
            using value_type = std::string_view;
            using difference_type = std::ptrdiff_t;
            iterator() = default;
            iterator(const room_table* t, const membership* m) : _table(t), _m(m) {}
            std::string_view operator*() const { return _table->_rooms[_m->room].name; }
            iterator& operator++() { ++_m; return *this; }
            iterator operator++(int) { iterator r = *this; ++_m; return r; }
            bool operator==(const iterator& o) const { return _m == o._m; }
        private:
            const room_table* _table = nullptr;
            const membership* _m = nullptr;
        };
        room_names(const room_table* t, std::span<const membership> m) : _table(t), _m(m) {}
        iterator begin() const { return {_table, _m.data()}; }
        iterator end() const { return {_table, _m.data() + _m.size()}; }
        size_t size() const { return _m.size(); }
        bool empty() const { return _m.empty(); }
    private:
        const room_table* _table;
        std::span<const membership> _m;
    };

    room_table() = default;
    room_table(const room_table&) = delete;
    room_table& operator=(const room_table&) = delete;

    // Adds conn to room (creating the room on its first member).
    room_outcome join(conn_id conn, std::string_view room);
    // Removes conn from room (dropping the room with its last member).
    room_outcome leave(conn_id conn, std::string_view room);

    // Disconnect: removes conn from every room. on_left_last(std::string_view name)
    // is called for each room that lost its last local member, before the room (and
    // its name) is destroyed; it must not modify this table. Returns the number of
    // rooms left. O(rooms of conn).
    template <class F>
    size_t leave_all(conn_id conn, F&& on_left_last);
    size_t leave_all(conn_id conn) {
        return leave_all(conn, [](std::string_view) {});
    }

    // The local members of room, contiguous, for fan-out. Empty if no such room.
    // Valid until the next join/leave/leave_all on this table.
    std::span<const conn_id> members(std::string_view room) const;
    // Names of the rooms conn is in (no particular order). Valid until the next
    // mutation of this table.
    room_names rooms_of(conn_id conn) const;
    // Number of rooms conn is in (for the per-connection room limit).
    size_t room_count(conn_id conn) const;
    bool is_member(conn_id conn, std::string_view room) const;

    // Rooms with at least one local member (== local room subscriptions wanted).
    size_t size() const { return _by_name.size(); }
    // Connections in at least one room.
    size_t connection_count() const { return _conns.size(); }
    // Calls f(std::string_view name) for every room (re-subscribe after reconnect).
    template <class F>
    void for_each_room(F&& f) const {
        for (const auto& [name, id] : _by_name) {
            f(std::string_view(name));
        }
    }

private:
    struct room {
        std::string_view name;              // refers to the key of its _by_name node
        std::vector<conn_id> members;       // fan-out array
        std::vector<uint32_t> member_slot;  // parallel: index in that conn's membership list
    };

    // Swap-removes position idx of room r, fixing the back-index of the member
    // moved into idx. Returns true if the room is now empty.
    bool detach(uint32_t r, uint32_t idx);
    // Forgets an empty room: erases its name, recycles its id.
    void drop_room(uint32_t r);
    const room* find_room(std::string_view name) const;

    name_map<uint32_t> _by_name;                                // name -> index in _rooms
    std::vector<room> _rooms;                                   // indexed by room id
    std::vector<uint32_t> _free_rooms;                          // recycled room ids
    std::unordered_map<conn_id, std::vector<membership>> _conns;  // only conns in >= 1 room
};

template <class F>
size_t room_table::leave_all(conn_id conn, F&& on_left_last) {
    auto it = _conns.find(conn);
    if (it == _conns.end()) {
        return 0;
    }
    // Taken out first: detach() only touches other connections' entries.
    std::vector<membership> list = std::move(it->second);
    _conns.erase(it);
    for (const membership& m : list) {
        if (detach(m.room, m.index)) {
            on_left_last(_rooms[m.room].name);
            drop_room(m.room);
        }
    }
    return list.size();
}

class user_table {
public:
    user_table() = default;
    user_table(const user_table&) = delete;
    user_table& operator=(const user_table&) = delete;

    // Registers conn as a connection of user. A connection belongs to one user for
    // its lifetime: adding it under a different user aborts (programmer error).
    user_outcome add(conn_id conn, std::string_view user);
    // Unregisters conn (on disconnect). on_last_gone(std::string_view user) is called
    // when this was the user's last connection here, before the name is destroyed.
    template <class F>
    user_outcome remove(conn_id conn, F&& on_last_gone);
    user_outcome remove(conn_id conn) {
        return remove(conn, [](std::string_view) {});
    }

    // The user's connections on this worker (empty if none). Valid until the next
    // add/remove.
    std::span<const conn_id> connections(std::string_view user) const;
    // The user of conn, or an empty view if conn has none. Valid while conn is added.
    std::string_view user_of(conn_id conn) const;
    bool online(std::string_view user) const { return _by_name.find(user) != _by_name.end(); }

    // Distinct users with at least one connection here.
    size_t user_count() const { return _by_name.size(); }
    // Connections with a user.
    size_t connection_count() const { return _conns.size(); }
    // Calls f(std::string_view user) for every user (re-subscribe after reconnect).
    template <class F>
    void for_each_user(F&& f) const {
        for (const auto& [name, id] : _by_name) {
            f(std::string_view(name));
        }
    }

private:
    struct user {
        std::string_view name;       // refers to the key of its _by_name node
        std::vector<conn_id> conns;  // usually 1..a few tabs
    };
    struct conn_entry {
        uint32_t user;   // index into _users
        uint32_t index;  // position in that user's conns
    };

    // Removes conn's entry. On last_connection_gone, *emptied is the user's id
    // (now without connections; the caller drops it after the callback).
    user_outcome detach(conn_id conn, uint32_t* emptied);
    void drop_user(uint32_t u);

    name_map<uint32_t> _by_name;                         // name -> index in _users
    std::vector<user> _users;                            // indexed by user id
    std::vector<uint32_t> _free_users;                   // recycled user ids
    std::unordered_map<conn_id, conn_entry> _conns;      // only conns with a user
};

template <class F>
user_outcome user_table::remove(conn_id conn, F&& on_last_gone) {
    uint32_t emptied = UINT32_MAX;
    user_outcome o = detach(conn, &emptied);
    if (o == user_outcome::last_connection_gone) {
        on_last_gone(_users[emptied].name);
        drop_user(emptied);
    }
    return o;
}

}  // namespace wsgate::backplane
