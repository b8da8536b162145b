// Room and user tables: see room_table.h for the layout and the memory cost.
#include "backplane/room_table.h"

#include <cstdio>
#include <cstdlib>

namespace wsgate::backplane {

namespace {

// Names come validated from the protocol layer; anything else is a bug here.
void check_name(std::string_view name, const char* what) {
    if (name.empty() || name.size() > max_name_bytes) {
        std::fprintf(stderr, "wsgate: %s name of %zu bytes (must be 1..%zu)\n", what, name.size(),
                     max_name_bytes);
        std::abort();
    }
}

// Finds the position of room r in a connection's membership list (bounded by the
// per-connection room limit, so a linear scan over 8-byte entries).
size_t find_membership(const std::vector<room_table::membership>& list, uint32_t r) {
    for (size_t i = 0; i < list.size(); ++i) {
        if (list[i].room == r) {
            return i;
        }
    }
    return list.size();
}

}  // namespace

// ---- room_table ----

room_outcome room_table::join(conn_id conn, std::string_view name) {
    check_name(name, "room");
    uint32_t r;
    bool created = false;
    auto it = _by_name.find(name);
    if (it != _by_name.end()) {
        r = it->second;
    } else {
        if (!_free_rooms.empty()) {
            r = _free_rooms.back();
            _free_rooms.pop_back();
        } else {
            r = static_cast<uint32_t>(_rooms.size());
            _rooms.emplace_back();
        }
        auto [ins, ok] = _by_name.emplace(std::string(name), r);
        (void)ok;
        _rooms[r].name = ins->first;
        created = true;
    }
    std::vector<membership>& list = _conns[conn];
    if (!created && find_membership(list, r) != list.size()) {
        return room_outcome::already_member;
    }
    room& rm = _rooms[r];
    rm.members.push_back(conn);
    rm.member_slot.push_back(static_cast<uint32_t>(list.size()));
    list.push_back({r, static_cast<uint32_t>(rm.members.size() - 1)});
    return created ? room_outcome::joined_first : room_outcome::joined;
}

room_outcome room_table::leave(conn_id conn, std::string_view name) {
    auto rit = _by_name.find(name);
    if (rit == _by_name.end()) {
        return room_outcome::not_member;
    }
    auto cit = _conns.find(conn);
    if (cit == _conns.end()) {
        return room_outcome::not_member;
    }
    uint32_t r = rit->second;
    std::vector<membership>& list = cit->second;
    size_t pos = find_membership(list, r);
    if (pos == list.size()) {
        return room_outcome::not_member;
    }
    bool emptied = detach(r, list[pos].index);
    // Swap-remove from the connection's list; the moved entry's room must learn
    // its new position.
    size_t last = list.size() - 1;
    if (pos != last) {
        list[pos] = list[last];
        _rooms[list[pos].room].member_slot[list[pos].index] = static_cast<uint32_t>(pos);
    }
    list.pop_back();
    if (list.empty()) {
        _conns.erase(cit);  // an idle connection costs nothing
    }
    if (emptied) {
        drop_room(r);
        return room_outcome::left_last;
    }
    return room_outcome::left;
}

bool room_table::detach(uint32_t r, uint32_t idx) {
    room& rm = _rooms[r];
    size_t last = rm.members.size() - 1;
    if (idx != last) {
        rm.members[idx] = rm.members[last];
        rm.member_slot[idx] = rm.member_slot[last];
        // The moved member's membership entry for this room points at `last`.
        auto it = _conns.find(rm.members[idx]);
        it->second[rm.member_slot[idx]].index = idx;
    }
    rm.members.pop_back();
    rm.member_slot.pop_back();
    return rm.members.empty();
}

void room_table::drop_room(uint32_t r) {
    room& rm = _rooms[r];
    // Erase by iterator found through the stored view, before the view dies.
    _by_name.erase(_by_name.find(rm.name));
    rm.name = {};
    // Release the arrays: a room that once had 10k members must not keep them.
    std::vector<conn_id>().swap(rm.members);
    std::vector<uint32_t>().swap(rm.member_slot);
    _free_rooms.push_back(r);
}

const room_table::room* room_table::find_room(std::string_view name) const {
    auto it = _by_name.find(name);
    return it == _by_name.end() ? nullptr : &_rooms[it->second];
}

std::span<const conn_id> room_table::members(std::string_view name) const {
    const room* rm = find_room(name);
    if (rm == nullptr) {
        return {};
    }
    return rm->members;
}

room_table::room_names room_table::rooms_of(conn_id conn) const {
    auto it = _conns.find(conn);
    if (it == _conns.end()) {
        return {this, {}};
    }
    return {this, it->second};
}

size_t room_table::room_count(conn_id conn) const {
    auto it = _conns.find(conn);
    return it == _conns.end() ? 0 : it->second.size();
}

bool room_table::is_member(conn_id conn, std::string_view name) const {
    auto rit = _by_name.find(name);
    if (rit == _by_name.end()) {
        return false;
    }
    auto cit = _conns.find(conn);
    if (cit == _conns.end()) {
        return false;
    }
    return find_membership(cit->second, rit->second) != cit->second.size();
}

// ---- user_table ----

user_outcome user_table::add(conn_id conn, std::string_view name) {
    check_name(name, "user");
    auto cit = _conns.find(conn);
    if (cit != _conns.end()) {
        if (_users[cit->second.user].name != name) {
            std::fprintf(stderr, "wsgate: connection %llu added under a second user\n",
                         static_cast<unsigned long long>(conn));
            std::abort();
        }
        return user_outcome::already_present;
    }
    uint32_t u;
    bool created = false;
    auto it = _by_name.find(name);
    if (it != _by_name.end()) {
        u = it->second;
    } else {
        if (!_free_users.empty()) {
            u = _free_users.back();
            _free_users.pop_back();
        } else {
            u = static_cast<uint32_t>(_users.size());
            _users.emplace_back();
        }
        auto [ins, ok] = _by_name.emplace(std::string(name), u);
        (void)ok;
        _users[u].name = ins->first;
        created = true;
    }
    user& us = _users[u];
    _conns.emplace(conn, conn_entry{u, static_cast<uint32_t>(us.conns.size())});
    us.conns.push_back(conn);
    return created ? user_outcome::first_connection : user_outcome::added;
}

user_outcome user_table::detach(conn_id conn, uint32_t* emptied) {
    auto cit = _conns.find(conn);
    if (cit == _conns.end()) {
        return user_outcome::not_present;
    }
    conn_entry e = cit->second;
    _conns.erase(cit);
    user& us = _users[e.user];
    size_t last = us.conns.size() - 1;
    if (e.index != last) {
        us.conns[e.index] = us.conns[last];
        _conns.find(us.conns[e.index])->second.index = e.index;
    }
    us.conns.pop_back();
    if (us.conns.empty()) {
        *emptied = e.user;
        return user_outcome::last_connection_gone;
    }
    return user_outcome::removed;
}

void user_table::drop_user(uint32_t u) {
    user& us = _users[u];
    _by_name.erase(_by_name.find(us.name));
    us.name = {};
    std::vector<conn_id>().swap(us.conns);
    _free_users.push_back(u);
}

std::span<const conn_id> user_table::connections(std::string_view name) const {
    auto it = _by_name.find(name);
    if (it == _by_name.end()) {
        return {};
    }
    return _users[it->second].conns;
}

std::string_view user_table::user_of(conn_id conn) const {
    auto it = _conns.find(conn);
    return it == _conns.end() ? std::string_view{} : _users[it->second.user].name;
}

}  // namespace wsgate::backplane
