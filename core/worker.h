// One worker: a thread pinned to one CPU that owns one io_uring ring, one
// SO_REUSEPORT listener, a provided-buffer ring and every connection it accepted.
//
// Ring setup: IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (only this
// thread submits; completions run when it asks for them), a CQ sized well above
// the SQ for multishot accept and recv. Kernel ≥ 6.1 assumed (6.18 here).
//
// Loop turn: wait for ≥1 completion, handle every CQE (parse, answer, echo into
// per-connection output), recycle provided buffers, re-arm ended multishots,
// then flush: one send per connection with output and no send in flight. All
// of a turn's SQEs go to the kernel in the next io_uring_submit_and_wait.
#pragma once

#include <liburing.h>

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backplane/cluster_map.h"
#include "backplane/presence.h"
#include "backplane/redis_names.h"
#include "backplane/redis_session.h"
#include "backplane/room_table.h"
#include "protocol/deflate.h"
#include "core/buf_ring.h"
#include "core/config.h"
#include "core/connection.h"
#include "core/hub.h"
#include "core/outq.h"
#include "core/stats.h"
#include "protocol/auth.h"
#include "protocol/binary_codec.h"
#include "protocol/http_upgrade.h"
#include "protocol/json_codec.h"
#include "protocol/push.h"
#include "protocol/ws_conn.h"

namespace wsgate::core {

class worker {
public:
    worker(unsigned index, int cpu, int listen_fd, const config& cfg, hub& h);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    // Set up the ring on the calling thread (SINGLE_ISSUER binds it) and run
    // until stop() was called and every connection closed. Returns 0 or -errno.
    int run();
    // Thread-safe: ask the worker to stop (wakes it through its eventfd).
    void stop();

    const worker_stats& stats() const { return _stats; }
    // 0 while starting, 1 running, -errno when setup failed.
    int started() const { return _started.load(std::memory_order_acquire); }
    // CLOCK_MONOTONIC ms of this worker's last timer tick (100 ms apart while its
    // loop turns): the systemd watchdog is fed only while every worker's is fresh.
    uint64_t last_tick_ms() const { return _tick_stamp_ms.load(std::memory_order_relaxed); }

private:
    enum class op : uint8_t { accept = 1, recv, send, cancel, timer, wake, ignore, inbox, redis_connect, redis_recv,
                              redis_send };

    static uint64_t pack(op o, uint32_t slot, uint32_t gen) {
        return (static_cast<uint64_t>(o) << 56) | (static_cast<uint64_t>(gen & 0xffffff) << 32) | slot;
    }

    int setup();
    io_uring_sqe* get_sqe();
    void arm_accept();
    void arm_recv(uint32_t slot);
    void arm_timer();
    void arm_wake();

    void handle(io_uring_cqe* cqe);
    void on_accept(int res, uint32_t flags);
    void on_recv(uint32_t slot, int res, uint32_t flags);
    void on_send(uint32_t slot, int res);
    void on_timer();
    void on_wake();
    void drain_step();              // graceful drain: the next batch of notices and closes
    void heartbeat_step();
    void adopt(int fd);         // a new TCP connection (accepted by the ring or at close_listener)
    void close_listener();      // drain: take what is queued, then close
    uint32_t sweep_period_s() const;          // one slice of the ping sweep
    bool redis_quiet() const;       // nothing left to write or to hear back from Redis

    // Client protocol (/ws).
    struct pending_query;
    class echo_handler;
    class client_handler;
    void on_client_message(uint32_t slot, connection& c, protocol::ws_opcode opcode,
                           std::span<const uint8_t> payload);
    bool rate_allows(uint32_t slot, connection& c, protocol::wire_format fmt, std::string_view id);
    void handle_request(uint32_t slot, connection& c, protocol::wire_format fmt, const protocol::request& req);
    bool start_session(uint32_t slot, connection& c, const protocol::http_request& req,
                       std::string& reject);
    void schedule_teardown(uint32_t slot, connection& c);
    void teardown(uint32_t slot, connection& c);
    void run_teardowns();

    // Replies to the connection's own requests, in the format the request came in.
    void reply_ack(connection& c, protocol::wire_format fmt, std::string_view id);
    void reply_error(connection& c, protocol::wire_format fmt, std::string_view id,
                     protocol::error_code code, std::string_view message);
    void write_reply(connection& c, protocol::wire_format fmt);  // _scratch → one frame in c.out

    // Pushes: local delivery (one frame per format, shared) and to the other workers.
    // Returns false when the Redis queue is full (delivered locally, not fleet-wide).
    bool deliver(protocol::push_kind kind, std::string_view key, std::string_view from,
                 std::string_view data, bool data_is_json);
    // The frames of one push, built on first use: per wire format, plain and
    // (permessage-deflate) compressed, each shared by every recipient.
    struct push_frames {
        const protocol::push_fields* fields = nullptr;  // null: `verbatim` is the JSON payload
        std::string_view verbatim;
        out_frame* f[2][2] = {};     // [binary][compressed]
        bool plain_only[2] = {};     // too small or incompressible: compressed recipients get the plain frame
    };
    void deliver_to(std::span<const backplane::conn_id> targets, push_frames& pf);
    out_frame* push_frame(push_frames& pf, protocol::wire_format fmt, bool compressed);
    void release_push_frames(push_frames& pf);
    void encode_push_payload(const push_frames& pf, protocol::wire_format fmt);  // into _scratch
    out_frame* make_frame(protocol::wire_format fmt, bool compressed = false);  // _scratch holds the payload
    protocol::inflater* inflater_for(uint32_t slot, const connection& c);
    void enqueue_push(uint32_t slot, connection& c, out_frame* f, bool batchable);
    void slow_consumer_close(uint32_t slot, connection& c);
    void forward(xmsg* m);  // to every other worker (m->refs set here)
    void send_to(unsigned target, xmsg* m);
    void drain_inbox();
    void process_xmsg(xmsg* m);
    void start_query(uint32_t slot, connection& c, protocol::wire_format fmt, const protocol::request& req);
    void finish_query(uint64_t id, pending_query& q);

    // Redis backplane (core/worker_redis.cpp): per Redis node (one in plain mode, one
    // per master in cluster mode) a subscriber and a command connection on this ring.
    struct redis_conn {
        std::unique_ptr<backplane::redis_session> s;
        int fd = -1;
        uint32_t gen = 0;               // bumped per socket: stale completions are ignored
        bool connecting = false;
        bool recv_armed = false;
        bool send_inflight = false;
        protocol::byte_buffer out;      // bytes of the send in flight
        std::unique_ptr<uint8_t[]> rbuf;
    };
    struct redis_node {
        std::string name;               // host:port, for logs
        sockaddr_storage addr{};
        socklen_t addr_len = 0;         // 0: not an IP literal, never dialled
        redis_conn c[2];                // [redis_sub], [redis_cmd]
        uint64_t ping_sent_ns = 0;      // round-trip probe (wsgate_redis_rtt_seconds) in flight since
        uint32_t ping_next_ms = 0;
        bool ping_inflight = false;
    };
    // A cluster-mode SPUBLISH kept until its reply, to follow -MOVED/-ASK.
    struct retained_publish {
        std::string channel, payload;
        uint8_t attempts = 0;
    };
    // Per channel, in cluster mode: publications awaiting their reply and the node
    // they went to last. A publication for a channel whose earlier ones are still
    // out on another node (a stale map, a -MOVED being followed) is held until
    // they are answered, so a redirect never lets a later one overtake.
    struct channel_flight {
        uint32_t node = 0;
        uint32_t inflight = 0;
        std::deque<uint64_t> held;  // retained ids, in publish order
    };
    void flight_sent(const std::string& channel, uint32_t node);
    void flight_done(const std::string& channel);  // answered, failed or dropped
    static constexpr unsigned redis_sub = 0, redis_cmd = 1;
    // Receive buffer per connection. The subscriber's is large: when a burst of
    // channel messages is waiting, one recv takes up to 512 KiB of them and every
    // local recipient then gets all of its pushes in one send at the end of the
    // turn (64 KiB: ~450 messages a turn, 0.35M deliveries/s in the 100 rooms x
    // 100 subscribers fleet benchmark; 512 KiB: 1.1M at the same rate). Pages are
    // touched only as far as a burst fills them.
    static constexpr size_t redis_rbuf_sub = 512 * 1024;
    static constexpr size_t redis_rbuf_cmd = 64 * 1024;
    static size_t redis_rbuf(unsigned which) { return which == redis_sub ? redis_rbuf_sub : redis_rbuf_cmd; }
    static constexpr uint32_t no_node = UINT32_MAX;
    bool redis_on() const { return !_rnodes.empty(); }
    bool cluster() const { return _cmap != nullptr; }
    redis_conn& rconn(uint32_t node, unsigned which) { return _rnodes[node]->c[which]; }
    // The node owning a channel or key: 0 in plain mode; in cluster mode the master
    // of its hash slot, or no_node before the slot map is known.
    uint32_t node_for(std::string_view name) const;
    // The connected command session of the node owning key, or nullptr.
    backplane::redis_session* cmd_for(std::string_view key);
    void redis_setup();
    void redis_add_node(std::string_view host, uint16_t port);
    void redis_connect(uint32_t node, unsigned which);
    void redis_drop(uint32_t node, unsigned which, const char* why);
    void redis_handle(op o, uint32_t idx, uint32_t gen, int res);
    void redis_events(uint32_t node, unsigned which);
    void redis_flush();
    void redis_tick();
    void on_redis_message(std::string_view channel, std::string_view payload);
    bool redis_publish(protocol::push_kind kind, std::string_view key, const protocol::push_fields& p);
    bool redis_send_publish(std::string_view channel, std::string_view payload, uint64_t retain_id);
    void redis_interest(bool add, bool room, std::string_view id);
    void redis_query(pending_query& q, uint64_t qid);
    // Cluster: ask for CLUSTER SLOTS; after the map changed, move every channel of
    // local interest to the master that owns it now.
    void cluster_refresh();
    void cluster_apply();
    void cluster_follow(const backplane::redis_redirect& r);
    void redis_reply(const backplane::redis_event& ev);
    // Presence in Redis (docs/backplane.md): first/last transitions write at once,
    // a refresh pass every TTL/3 rewrites everything this worker holds.
    bool presence_on() const;       // some command connection is up
    void presence_join(std::string_view room, std::string_view user);
    void presence_leave(std::string_view room, std::string_view user);
    void presence_register(std::string_view user);
    void presence_unregister(std::string_view user);
    void presence_refresh_start();
    void presence_pump();           // next slice of the refresh pass, bounded by output size
    void presence_write(std::span<const std::string_view> argv);
    void presence_write(std::initializer_list<std::string_view> argv) {
        presence_write(std::span<const std::string_view>(argv.begin(), argv.size()));
    }
    void write_user_record(std::string_view user, int64_t wall);
    int64_t wall_ms() const;        // CLOCK_REALTIME, ms (presence scores and records)
    // Redis command tokens: kind in the top byte, an id below.
    enum class rtok : uint8_t { none = 0, publish, write, presence, online, unregister, slots, ping };
    static uint64_t make_token(rtok k, uint64_t id) { return (static_cast<uint64_t>(k) << 56) | id; }

    // Output queue plumbing.
    void seal(connection& c);                 // staged bytes → a private frame segment
    void release_frame(out_frame* f);
    void release_segments(connection& c, uint32_t from);  // drop q[from..] (not in flight)
    void frame_batches(connection& c);        // batchable runs → batch frames
    void consume_sent(connection& c, size_t n);
    void reset_arena() { _iov_used = 0; _msg_used = 0; }

    void on_data(uint32_t slot, connection& c, const uint8_t* data, size_t len);
    void on_handshake_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len);
    void on_ws_bytes(uint32_t slot, connection& c, const uint8_t* data, size_t len);

    void mark_dirty(uint32_t slot, connection& c);
    void arm_close_deadline(uint32_t slot, connection& c);
    void flush();
    void start_send(uint32_t slot, connection& c);
    // Send a close frame (after what is queued) and close once it is flushed;
    // gone within the linger time even if the peer never reads.
    void close_ws(uint32_t slot, connection& c, uint16_t code, std::string_view reason);
    void begin_close(uint32_t slot, connection& c);   // after output is flushed: linger
    void abort_conn(uint32_t slot, connection& c);    // close now, drop unsent output
    void maybe_free(uint32_t slot, connection& c);
    void give_buffer(protocol::byte_buffer& b);   // to the cache (or the allocator)
    void give_block(protocol::byte_buffer::block b);
    void take_buffer(protocol::byte_buffer& b);   // from the cache, if b owns none

    void list_push(uint8_t which, uint32_t slot, connection& c, uint32_t deadline);
    void list_remove(uint32_t slot, connection& c);
    uint32_t now_ms() const;

    unsigned _index;
    int _cpu;
    int _listen_fd;
    int _wake_fd = -1;
    const config& _cfg;
    hub& _hub;
    protocol::handshake_config _hs_cfg;
    protocol::auth_config _auth_cfg;
    protocol::ws_config _ws_cfg;

    io_uring _ring{};
    bool _ring_ready = false;
    buf_ring _bufs;
    protocol::ws_frame_pool _frames;
    connection_slab _conns;
    // Output buffer memory recycled between connections: a connection holds an
    // output buffer only while it has output queued, and taking one from here
    // instead of the allocator keeps malloc/free off the per-message path.
    std::vector<protocol::byte_buffer::block> _buffer_cache;

    // Client protocol state (shared-nothing: this worker's connections only).
    backplane::room_table _rooms;
    backplane::user_table _users;
    protocol::json_decoder _json;
    protocol::binary_decoder _binary;
    frame_pool _fpool;
    protocol::byte_buffer _scratch;           // one push or reply payload being encoded
    protocol::byte_buffer _zscratch;          // its permessage-deflate payload
    std::unique_ptr<protocol::deflater> _deflater;   // outbound, no context takeover (compression on)
    std::unique_ptr<protocol::inflater> _inflater;   // inbound, shared by clients without context
    std::unordered_map<uint32_t, std::unique_ptr<protocol::inflater>> _own_inflaters;  // by slot: clients with context
    std::vector<out_segment> _seg_tmp;        // frame_batches() rebuild
    std::vector<out_segment*> _ring_cache;    // small segment rings between uses
    void release_ring(connection& c);
    std::vector<std::pair<uint32_t, uint32_t>> _teardowns;  // (slot, gen) leaving rooms/users at flush
    std::unordered_map<uint64_t, std::unique_ptr<pending_query>> _queries;
    uint64_t _next_query = 1;
    std::vector<std::deque<xmsg*>> _overflow;   // per target worker: ring was full
    std::vector<uint8_t> _wake;                 // per target worker: queued this turn, wake it
    std::mt19937_64 _rng;
    std::vector<std::unique_ptr<redis_node>> _rnodes;   // index = cluster_map node index
    std::unique_ptr<backplane::cluster_map> _cmap;      // cluster mode only
    uint64_t _cmap_applied = 0;                         // map version the subscriptions follow
    bool _cmap_wanted = true;                           // a CLUSTER SLOTS is to be sent
    bool _cmap_inflight = false;
    uint32_t _cmap_next_ms = 0;                         // periodic re-check
    std::unordered_map<uint64_t, retained_publish> _retained;
    std::unordered_map<std::string, channel_flight> _flights;
    uint64_t _retain_seq = 0;
    std::unique_ptr<backplane::redis_names> _names;
    std::string _mid_prefix;                    // {"mid":"<server-id>: — our own publications
    std::string _owner;                         // "<server-id>:<worker>": presence entries of this worker
    std::string _owner_prefix;                  // "<server-id>:"
    std::string _ttl_ms_str;                    // presence TTL, ms, as a command argument
    backplane::presence_counts _presence;       // (room, user) pairs held here
    uint32_t _presence_next_ms = 0;             // next refresh pass (monotonic ms)
    bool _presence_due = false;                 // a pass is to start once connected
    std::vector<std::string> _refresh_rooms, _refresh_users;  // the pass in progress (snapshot)
    size_t _refresh_room_i = 0, _refresh_user_i = 0;
    bool _refreshing = false;
    std::unordered_map<uint64_t, std::string> _unregistering;  // token id → user (script in flight)
    uint64_t _unreg_seq = 0;
    uint64_t _mid_seq = 0;
    uint32_t _turn_ms = 0;                      // now_ms() at the start of the loop turn
    uint32_t _auth_logged_ms = 0;               // rate limit for auth failure logs
    uint32_t _auth_logs = 0;

    // iovecs and msghdrs of this turn's sendmsg SQEs. The kernel copies them at
    // submission (IORING_FEAT_SUBMIT_STABLE), so they are reused after each submit.
    static constexpr uint32_t iov_arena = 65536;
    static constexpr uint32_t msg_arena = 4096;
    std::unique_ptr<iovec[]> _iov;
    std::unique_ptr<msghdr[]> _msg;
    uint32_t _iov_used = 0;
    uint32_t _msg_used = 0;

    uint32_t _dirty_head = no_slot;   // connections with output to flush this turn
    uint32_t _list_head[3] = {no_slot, no_slot, no_slot};
    uint32_t _list_tail[3] = {no_slot, no_slot, no_slot};
    bool _accept_armed = false;
    bool _stopping = false;           // every connection told to close; exit when none is left
    bool _draining = false;           // SIGTERM seen: listener closed, notices pending
    uint32_t _drain_notice_ms = 0;    // notices and closes start then
    std::vector<std::pair<uint32_t, uint32_t>> _drain_slots;  // (slot, gen) to close, in order
    size_t _drain_next = 0;
    size_t _drain_batch = 0;          // per tick
    bool _drain_listed = false;
    uint32_t _hb_cursor = 0;          // next slot of the heartbeat sweep
    uint32_t _hb_carry = 0;           // slot-ticks carried between ticks (slots per interval)
    bool _listener_closed = false;
    uint32_t _stop_deadline = 0;
    uint64_t _wake_value = 0;         // eventfd read target
    uint32_t _accept_error_logged_ms = 0;  // rate limit for accept error logs
    __kernel_timespec _tick{};
    uint64_t _clock_base_ns = 0;

    std::atomic<int> _started{0};
    std::atomic<uint64_t> _tick_stamp_ms{0};
    worker_stats _stats;
};

}  // namespace wsgate::core
