// One Redis connection as a sans-I/O state machine: the subscriber or the command
// connection of a worker.
//
// The core owns the socket (on the worker's io_uring ring) and drives this object:
//   dial at next_connect_ms() → on_connected() → take_output() → write;
//   recv → feed() → poll() until false; EOF/error/needs_disconnect() → close the
//   socket → on_disconnected() → dial again at next_connect_ms().
// Nothing here blocks, allocates per byte, or touches a file descriptor. Commands
// are written with hiredis' formatter (redisFormatCommandArgv) and replies parsed
// with hiredis' reader (redisReader*, RESP2); hiredis' async/socket API is not used:
// it owns its I/O and has no sharded pub/sub.
//
// Handshake: on_connected() writes AUTH [user] password (when a password is set)
// and, on the command connection, SELECT db (when db != 0), pipelined ahead of
// everything else. A refused AUTH/SELECT yields handshake_failed; a malformed
// reply yields protocol_error. After either, poll() yields nothing more and
// needs_disconnect() is true: the owner closes the socket and calls
// on_disconnected(), which schedules the retry with backoff.
//
// Subscriber role: subscribe()/unsubscribe() edit the desired channel set; the
// difference to what was sent is written at the next take_output() (or flush()),
// many channels per (S)SUBSCRIBE / (S)UNSUBSCRIBE (max_channels_per_command), so
// 5,000 subscribe() calls become 5 commands and a subscribe undone before the flush
// becomes none. After a reconnect every desired channel is re-subscribed the same
// way. Sharded mode (SSUBSCRIBE, Redis 7 / Cluster) groups a command's channels by
// the hash slot the owner passes (a sharded command must not cross slots).
// Confirmations maintain the confirmed set. An unsolicited sunsubscribe (the slot
// migrated to another node) yields slot_moved; the channel stays desired but is no
// longer sent: the owner re-resolves the slot and either unsubscribe()s it here
// and subscribes elsewhere, or subscribe()s it again here to re-send it. An error
// reply to a (S)SUBSCRIBE (e.g. -MOVED) yields subscribe_error for the batch, whose
// channels likewise become desired-but-not-sent (no automatic retry: it would loop).
//
// Command role: command(argv, token) formats one command and pipelines it; every
// reply pops the token FIFO and yields a reply event. -MOVED/-ASK errors come with
// the redirect parsed. While disconnected, commands queue up to max_queued_bytes
// (command() returns false beyond it; the owner answers `unavailable`) and are
// written after the handshake on reconnect. On disconnect, commands already handed
// to the owner for writing but not answered fail back as reply events with
// connection_lost set, so nothing waits forever.
//   Delivery: a queued command is sent at most once (it is dropped only with the
//   session). A command that failed with connection_lost may or may not have been
//   executed: for PUBLISH the message may or may not have been delivered, and it is
//   not retried here (at-most-once). An owner that retries it gets at-least-once
//   (possible duplicates).
//
// Backoff: on_disconnected() (also after a failed dial) sets next_connect_ms() to
// now + uniform[0, min(cap, base * 2^failures)] ("full jitter"), from a seeded
// splitmix64 so tests are deterministic. failures resets at the first successful
// reply on a connection (not at connect: a server that accepts and then refuses
// must not be hammered).
//
// Memory: one entry per desired channel (name + ~32 bytes + hash node); per
// in-flight command one FIFO entry (~48 bytes; a batch also holds its channel
// pointers, 8 bytes each);
// the hiredis reader keeps at most 16 KiB of idle buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backplane/room_table.h"  // name_map
#include "protocol/buffer.h"

struct redisReader;
struct redisReply;

namespace wsgate::backplane {

enum class redis_role : uint8_t {
    subscriber,  // (S)SUBSCRIBE connection: pushes, no token FIFO
    command,     // everything else: one reply per command, in order
};

struct redis_session_options {
    redis_role role = redis_role::command;
    std::string user;                        // ACL user: AUTH user password; empty: AUTH password
    std::string password;                    // empty: no AUTH
    uint32_t db = 0;                         // SELECT db on the command connection; 0: none
    bool sharded = false;                    // SSUBSCRIBE/SUNSUBSCRIBE, batches grouped by slot
    uint32_t max_channels_per_command = 1000;  // channels per (UN)SUBSCRIBE command (>= 1)
    size_t max_queued_bytes = 4u << 20;      // formatted commands waiting for the socket
    uint32_t backoff_base_ms = 100;          // first reconnect window
    uint32_t backoff_cap_ms = 10'000;        // largest reconnect window
    uint64_t seed = 0;                       // jitter RNG seed (tests: fixed; core: per worker)
};

// Type of a RESP2 reply (hiredis' REDIS_REPLY_*).
enum class redis_type : uint8_t { nil, string, array, integer, status, error };

// Read-only view of a parsed reply (or one element of an array reply). Valid as
// long as the event it came with.
class redis_value {
public:
    redis_value() = default;  // nil
    explicit redis_value(const redisReply* r) : _r(r) {}
    redis_type type() const;
    std::string_view str() const;  // string, status, error; empty otherwise
    int64_t integer() const;       // integer; 0 otherwise
    size_t size() const;           // array elements; 0 otherwise
    redis_value operator[](size_t i) const;  // i < size()
private:
    const redisReply* _r = nullptr;
};

// A cluster redirect: "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381".
struct redis_redirect {
    bool valid = false;     // the error was a well-formed MOVED/ASK
    bool ask = false;       // ASK (one-shot, send ASKING first) rather than MOVED
    uint16_t slot = 0;      // 0..16383
    uint16_t port = 0;
    std::string_view host;  // may be empty: "same host as this connection" (Redis 7)
};
// Parses an error text (without the leading '-'). False if it is not a redirect.
bool parse_redirect(std::string_view error, redis_redirect& out);

enum class redis_event_kind : uint8_t {
    none,
    message,           // subscriber: payload published on channel (message or smessage)
    pong,              // subscriber: answer to ping()
    slot_moved,        // subscriber: unsolicited sunsubscribe of channel (slot migrated)
    subscribe_error,   // subscriber: a (S)SUBSCRIBE batch was refused (text, redirect, slot)
    reply,             // command: the reply to the command with `token`
    handshake_failed,  // AUTH or SELECT refused (text); fatal: disconnect
    protocol_error,    // malformed or unexpected RESP (text); fatal: disconnect
};

// One event from poll(). Views are valid until the next feed()/poll()/on_disconnected().
struct redis_event {
    redis_event_kind kind = redis_event_kind::none;
    uint64_t token = 0;             // reply: the token given to command()
    redis_type type = redis_type::nil;  // reply: type of the reply (error for connection_lost)
    int64_t integer = 0;            // reply: the integer, if type == integer
    std::string_view text;          // reply: string/status/error text; message: payload;
                                    // subscribe_error/handshake_failed/protocol_error: why
    std::string_view channel;       // message, slot_moved
    bool sharded = false;           // message: came as smessage
    bool connection_lost = false;   // reply: failed locally; the command may or may not have run
    uint16_t slot = 0;              // subscribe_error: slot of the batch (sharded mode)
    uint32_t channels = 0;          // subscribe_error: channels in the refused batch
    redis_redirect redirect;        // reply/subscribe_error: parsed -MOVED/-ASK
    redis_value value;              // reply: the whole reply (arrays); nil when synthesized
};

struct redis_counters {
    uint64_t connects = 0;          // on_connected() calls
    uint64_t reconnects = 0;        // connects after the first
    uint64_t commands_sent = 0;     // commands written to the output (handshake, batches included)
    uint64_t publish_failures = 0;  // (S)PUBLISH refused by the queue bound, answered with an
                                    // error, or lost with the connection
    uint64_t bytes_in = 0;          // fed
    uint64_t bytes_out = 0;         // handed out by take_output()
};

class redis_session {
public:
    explicit redis_session(redis_session_options opts);
    ~redis_session();
    redis_session(const redis_session&) = delete;
    redis_session& operator=(const redis_session&) = delete;

    // --- connection lifecycle (driven by the owner) ---
    // The socket is connected: writes the handshake, then re-subscribes (subscriber)
    // or the commands queued while down (command).
    void on_connected(int64_t now_ms);
    // The socket is gone (or a dial failed). Fails in-flight commands (events),
    // forgets what the server confirmed, schedules next_connect_ms(). Bytes fed but
    // not yet polled are dropped (their commands fail as connection_lost): drain
    // poll() first.
    void on_disconnected(int64_t now_ms);
    bool connected() const { return _connected; }
    // When to dial (ms, same clock as now_ms); 0 before the first attempt.
    int64_t next_connect_ms() const { return _next_connect_ms; }
    // A fatal event (handshake_failed, protocol_error) was returned: close the socket.
    bool needs_disconnect() const { return _fatal; }

    // --- bytes ---
    // Received bytes, any split. Ignored while disconnected or after a fatal event.
    void feed(std::span<const uint8_t> in);
    // Next event; false when none is ready. Call until false after every feed() and
    // after on_disconnected().
    bool poll(redis_event& ev);
    // Flushes pending subscription changes, then appends everything to write to
    // `out` (moving the buffer when `out` is empty).
    void take_output(protocol::byte_buffer& out);
    // Writes pending subscription changes to the output (take_output() does this).
    void flush();
    size_t output_size() const { return _out.size(); }

    // --- subscriber role ---
    // slot: the channel's hash slot (used in sharded mode only; must be the same
    // every time for a channel). Aborts on a command session.
    void subscribe(std::string_view channel, uint16_t slot = 0);
    void unsubscribe(std::string_view channel);
    // Queues a PING (health check); a pong event answers it. No-op while disconnected.
    void ping();
    bool wanted(std::string_view channel) const;     // in the desired set
    bool confirmed(std::string_view channel) const;  // the server confirmed the subscription
    size_t wanted_count() const { return _wanted_count; }
    size_t confirmed_count() const { return _confirmed_count; }

    // --- command role ---
    // Pipelines one command (argv[0] is the command name). False if it does not
    // fit under max_queued_bytes (nothing queued). Aborts on a subscriber session.
    [[nodiscard]] bool command(std::span<const std::string_view> argv, uint64_t token);
    [[nodiscard]] bool command(std::initializer_list<std::string_view> argv, uint64_t token) {
        return command(std::span<const std::string_view>(argv.begin(), argv.size()), token);
    }
    size_t queued_bytes() const { return _queued.size(); }   // waiting for a connection
    size_t in_flight() const { return _inflight.size(); }    // sent, reply not yet polled

    const redis_counters& counters() const { return _counters; }
    const redis_session_options& options() const { return _opts; }

private:
    enum class op : uint8_t { auth, select, user, subscribe, unsubscribe, ping };

    // Per-channel state (subscriber). `sent`: the last command written for it was a
    // subscribe; `inflight`: batches not yet answered that name it (pins the entry).
    struct channel_state {
        std::string_view name;        // the key of its _channels node
        uint16_t slot = 0;
        bool wanted = false;
        bool sent = false;
        bool confirmed = false;
        bool dirty = false;           // in _dirty
        uint32_t inflight = 0;
        uint32_t unsub_pending = 0;   // unsubscribes sent, not yet confirmed
    };
    // One written command awaiting its reply (or, for batches, its confirmations).
    struct pending {
        explicit pending(op k) : kind(k) {}
        op kind;
        bool publish = false;
        uint32_t remaining = 1;       // confirmations still expected (batches)
        uint64_t token = 0;           // user commands
        uint16_t slot = 0;            // batches
        std::vector<channel_state*> channels;  // batches
    };

    int format_command(std::span<const std::string_view> argv, char** cmd);  // redisFreeCommand() it
    void append_command(protocol::byte_buffer& to, std::span<const std::string_view> argv);
    void write_handshake();
    void write_batches(std::vector<channel_state*>& list, op kind);
    void mark_dirty(channel_state& c);
    void maybe_forget(channel_state& c);
    void release_reply();
    bool on_reply(const redisReply* r, redis_event& ev);       // true: ev filled
    bool on_command_reply(const redisReply* r, redis_event& ev);
    bool on_subscriber_reply(const redisReply* r, redis_event& ev);
    bool fail(redis_event& ev, redis_event_kind kind, std::string_view why);
    uint64_t next_random();

    redis_session_options _opts;
    redisReader* _reader = nullptr;    // per connection
    redisReply* _reply = nullptr;      // the reply the last event refers to
    protocol::byte_buffer _out;        // to write (connected only)
    protocol::byte_buffer _queued;     // commands formatted while disconnected
    std::deque<pending> _queued_cmds;  // their tokens
    std::deque<pending> _inflight;     // written, awaiting replies (handshake first)
    std::deque<pending> _lost;         // failed by on_disconnected, not yet polled
    name_map<channel_state> _channels;
    std::vector<channel_state*> _dirty;
    std::vector<channel_state*> _subs, _unsubs;  // flush scratch
    std::vector<const char*> _argv;              // formatter scratch
    std::vector<size_t> _argvlen;
    std::string _error;                // text of the last fatal event
    size_t _wanted_count = 0;
    size_t _confirmed_count = 0;
    int64_t _next_connect_ms = 0;
    uint32_t _failures = 0;            // consecutive connections without a good reply
    uint64_t _rng;
    bool _connected = false;
    bool _fatal = false;
    redis_counters _counters;
};

}  // namespace wsgate::backplane
