// fanout_worker.h — one load generator thread of the fan-out scenario.
//
// Every connection is a member of one room: a subscriber or a publisher.
// Global connection number n (0 .. R*(S+P)-1) is room n / (S+P), slot
// n % (S+P): slots [0, S) subscribe, [S, S+P) publish. Thread t owns the
// numbers n with n % T == t, so each room's subscribers are spread over all
// threads. A connection gets its number when its upgrade request is built
// (c.user = index + 1 into this thread's member table).
//
// Phases, driven by fanout_control (fanout_scenario.cpp): connect + join
// (every member sends join with id n and waits for its ack), ready, traffic
// until measure_end, drain (publishers stop; wait until every publication is
// acked and every subscriber has every publication of its room, or nothing
// arrived for --drain seconds, or drain_end), then the exactly-once /
// in-order verdict.
//
// Nothing is shared between threads except fanout_control: the final
// sequence count of every publisher, published when the window ends, is how
// a subscriber in one thread knows what a publisher in another one sent.
#pragma once

#include "client_loop.h"
#include "histogram.h"
#include "json_scan.h"
#include "payload.h"
#include "scenarios.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wsbench {

constexpr uint64_t unknown_count = ~uint64_t{0};
// Publications in flight per room with --rate unless --inflight is given: a
// safety cap (the schedule, not the window, sets the pace).
constexpr uint32_t fanout_rate_default_cap = 65536;

// Shared by the coordinator and all workers. Written by the coordinator
// before start_ns is released, except the atomics.
struct fanout_control {
    std::atomic<unsigned> ready{0};    // workers done connecting and joining
    std::atomic<uint64_t> start_ns{0}; // 0 until traffic may start
    std::atomic<bool> abort{false};    // stop without traffic (setup failed)
    std::atomic<unsigned> drained{0};  // workers done draining (complete or given up)
    std::atomic<uint64_t> last_progress{0}; // drain: latest time any worker saw an ack or push
    uint64_t warmup_end = 0;           // first receive time that counts
    uint64_t measure_end = 0;          // publishers stop sending here
    uint64_t drain_end = 0;            // drain: hard limit
    std::vector<std::string> room_names; // "r<i>"
    // Publications sent per global publisher; unknown_count until its
    // thread has passed measure_end.
    std::unique_ptr<std::atomic<uint64_t>[]> final_seq;
};

// What one worker counted; merged by the coordinator.
struct fanout_totals {
    unsigned members = 0;             // connections this thread was to open
    unsigned opened = 0;              // upgraded
    unsigned joined = 0;              // join acked
    uint64_t published = 0;           // publications sent (all phases)
    uint64_t window_acks = 0;         // publish acks received in the window
    uint64_t deliveries = 0;          // pushes to subscribers (all phases)
    uint64_t window_deliveries = 0;   // pushes to subscribers received in the window
    uint64_t self_deliveries = 0;     // pushes to publishers (their own room), discarded
    uint64_t lost = 0;                // publications a subscriber never got
    uint64_t duplicates = 0;          // publications a subscriber got twice
    uint64_t out_of_order = 0;        // arrived after a later one of the same publisher
    uint64_t unexpected = 0;          // more distinct publications than were sent
    uint64_t misrouted = 0;           // from another room's publisher, or wrong "room"
    uint64_t bad_payloads = 0;        // wrong length, undecodable header, corrupt filler
    uint64_t malformed = 0;           // frames that are not JSON objects/arrays we can read
    uint64_t bad_acks = 0;            // acks with an id we did not expect
    uint64_t server_errors = 0;       // {"type":"error"} replies
    uint64_t other_pushes = 0;        // pushes of other types (not errors)
    uint64_t unacked = 0;             // publications never acked
    uint64_t rate_stalls = 0;         // --rate: publications that waited for the in-flight cap
    uint64_t frames = 0;              // text messages received (all connections, all phases)
    uint64_t array_frames = 0;        // of which JSON arrays (batched pushes, ?batch=1)
    std::string first_problem;        // first of the above, human-readable
    histogram latency;                // publish stamp -> delivery, ns, window only
    loop_counters counters;           // transport
    std::string fatal;                // exception text, if the loop failed

    [[nodiscard]] uint64_t verdict_errors() const noexcept {
        return lost + duplicates + out_of_order + unexpected + misrouted + bad_payloads + malformed +
               bad_acks + server_errors + unacked;
    }
    void merge(const fanout_totals& o);
};

class fanout_worker final : public loop_handler {
public:
    fanout_worker(const fanout_options& opt, const target& dest, const target& pub_dest, const payload_template& tmpl,
                  fanout_control& ctl, unsigned index, unsigned threads);

    void run() noexcept;
    [[nodiscard]] const fanout_totals& totals() const noexcept { return _t; }

    const target* connect_target(connection& c) override;
    std::string request_target(connection& c) override;
    void on_open(connection& c) override;
    void on_message(connection& c, const message_info& m) override;
    void on_closed(connection& c) override;

private:
    struct member {
        uint32_t room = 0;        // room index
        uint32_t number = 0;      // global connection number: join id and user name
        uint32_t publisher = 0;   // publishers: global publisher id room * P + p
        uint32_t track = 0;       // subscribers: first of P entries in _tracks
        bool is_pub = false;      // publisher or subscriber
        bool joined = false;      // join acked
        connection* conn = nullptr; // while connected
        uint64_t next_seq = 0;    // publishers: next sequence number to send
        uint64_t acked = 0;       // publishers: sequence numbers below this are acked
        uint32_t window = 0;      // publishers: most publications in flight
        uint64_t due_ns = 0;      // publishers, --rate: next scheduled send
        bool stalled = false;     // publishers, --rate: the due publication is held by the cap
    };
    // One subscriber's view of one publisher of its room.
    struct track {
        uint64_t next = 0;     // one past the highest sequence number seen
        uint64_t seen = 0;     // bit i: sequence next-1-i arrived (64-wide anti-replay window)
        uint64_t distinct = 0; // distinct sequence numbers received
    };

    void run_loop();
    bool connect_and_join(client_loop& loop);
    void traffic(client_loop& loop);
    void drain(client_loop& loop);
    void verdict();
    void handle(member& m, const envelope& e);
    void deliver(member& m, const envelope& e);
    void on_ack(member& m, const envelope& e);
    void fill(member& m);
    void send_due(member& m);
    uint64_t tick_rate();
    void publish(member& m, uint64_t stamp);
    [[nodiscard]] bool has_everything() const;
    void problem(uint64_t& counter, const char* what); // ++counter, and note(what)
    void note(const char* what);                        // keeps the first problem's text

    const fanout_options& _opt;       // run options
    const target& _dest;              // resolved URL
    const target& _pub_dest;          // publishers' (--publish-url, else the same)
    const payload_template& _tmpl;    // filler of the publications
    fanout_control& _ctl;             // shared phases and final counts
    unsigned _index;                  // worker number
    unsigned _threads;                // workers in all
    bool _ready_signalled = false;    // counted in _ctl.ready
    bool _drained_signalled = false;  // counted in _ctl.drained
    unsigned _per_room;               // S + P
    uint64_t _interval_ns = 0;        // --rate: between two publications of one publisher
    client_loop* _loop = nullptr;     // valid inside run_loop()
    std::vector<member> _members;     // this thread's connections
    std::vector<uint32_t> _pubs;      // indexes of publishers in _members
    std::vector<track> _tracks;       // subscribers x P
    size_t _next_member = 0;          // next member to hand to a connecting slot
    bool _sending = false;            // traffic phase reached
    uint64_t _warmup_end = 0;         // copies of fanout_control's, read after start
    uint64_t _measure_end = 0;        // 0 before start: nothing counted, nothing sent
    uint64_t _next_due = 0;           // --rate: earliest due_ns over _pubs
    uint64_t _acks_after = 0;         // publish acks outside the window (drain progress)
    std::vector<uint8_t> _scratch;    // one unmasked request
    fanout_totals _t;                 // results
};

} // namespace wsbench
