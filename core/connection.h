// A client connection as the worker that owns it sees it, and the slab that holds them.
//
// Slots are addressed by index; each carries a generation that is packed into
// the user_data of every SQE issued for it, so a completion that arrives after
// the slot was recycled is recognised and ignored. A slot is freed only after
// its last in-flight operation completed (two-phase close).
//
// Size matters: at a million connections every byte here is a megabyte. An idle
// WebSocket connection owns no heap memory: its buffers are empty (capacity 0)
// and wslay frame state is borrowed from the worker's pool only mid-frame.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/outq.h"
#include "protocol/buffer.h"
#include "protocol/http_upgrade.h"
#include "protocol/ws_conn.h"

namespace wsgate::core {

inline constexpr uint32_t no_slot = UINT32_MAX;

struct client_session;  // defined in worker.cpp

enum class conn_phase : uint8_t {
    handshake,  // reading the HTTP request head
    websocket,  // upgraded
    closing,    // output flushed, SHUT_WR sent, waiting for the peer's FIN (lingering close)
    dead,       // socket shut; waiting for the last in-flight op before the slot is freed
};

struct connection {
    protocol::byte_buffer out;           // own bytes being staged (replies, echo, close): sealed into q
    segment_queue q;                     // queued output: slices of private and shared frames
    protocol::byte_buffer in;            // handshake bytes not yet parsed (released on upgrade)
    protocol::ws_conn ws;                // WebSocket state (upgraded connections)
    client_session* sess = nullptr;      // client endpoint (/ws): identity, format, rate state
    uint32_t out_bytes = 0;              // bytes in q
    uint32_t pinned_segs = 0;            // q's front segments in flight or partly sent: never dropped
    int fd = -1;
    uint32_t gen = 0;                    // bumped when the slot is freed
    uint32_t list_prev = no_slot;        // timer list links (handshake or linger list)
    uint32_t list_next = no_slot;
    uint32_t deadline_ms = 0;            // for the timer list it is on (worker clock, ms)
    uint32_t dirty_next = no_slot;       // worker's flush list
    conn_phase phase = conn_phase::handshake;
    protocol::endpoint target = protocol::endpoint::none;
    bool recv_armed = false;             // a multishot recv is active
    bool send_inflight = false;          // at most one send at a time
    bool cancel_inflight = false;        // an async cancel of the recv is in flight
    bool close_after_flush = false;      // close once every queued byte went out
    bool dirty = false;                  // on the flush list
    bool counted = false;                // counted in hub::connections (max connections)
    bool teardown_queued = false;        // on the worker's teardown list
    bool batch = false;                  // opted in to batched pushes (outlives the session while closing)
    uint8_t timer_list = 0;              // 0 none, 1 handshake, 2 linger
    // Heartbeat state, packed so the idle timeout costs no bytes per connection.
    bool heard : 1 = false;              // bytes received since the last heartbeat visit
    bool pinged : 1 = false;             // the last heartbeat visit sent a ping
    bool spoke : 1 = false;              // a message arrived since the last heartbeat visit (idle timeout)
    bool deflate_out : 1 = false;        // permessage-deflate: compressed pushes may go to it
    bool inflate_own : 1 = false;        // permessage-deflate with client context: its own inflater
    uint16_t idle_visits = 0;            // heartbeat visits in a row without a message (idle timeout)
    bool in_use = false;

    bool ops_pending() const { return recv_armed || send_inflight || cancel_inflight; }
};

// Chunked slab: connections never move (chunks are never reallocated), so
// references stay valid while the slab grows.
class connection_slab {
public:
    static constexpr uint32_t chunk_bits = 10;
    static constexpr uint32_t chunk_size = 1u << chunk_bits;

    connection& operator[](uint32_t slot) { return _chunks[slot >> chunk_bits][slot & (chunk_size - 1)]; }
    uint32_t allocate() {
        if (_free.empty()) {
            uint32_t base = static_cast<uint32_t>(_chunks.size()) << chunk_bits;
            _chunks.emplace_back(std::make_unique<connection[]>(chunk_size));
            for (uint32_t i = chunk_size; i-- > 0;) {
                _free.push_back(base + i);
            }
        }
        uint32_t slot = _free.back();
        _free.pop_back();
        (*this)[slot].in_use = true;
        ++_live;
        return slot;
    }
    void release(uint32_t slot) {
        connection& c = (*this)[slot];
        c.in_use = false;
        ++c.gen;
        _free.push_back(slot);
        --_live;
    }
    uint32_t live() const { return _live; }
    uint32_t capacity() const { return static_cast<uint32_t>(_chunks.size()) << chunk_bits; }

private:
    std::vector<std::unique_ptr<connection[]>> _chunks;
    std::vector<uint32_t> _free;
    uint32_t _live = 0;
};

}  // namespace wsgate::core
