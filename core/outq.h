// Outbound data of a worker: reference-counted frames and per-connection
// queues of slices of them.
//
// A push for a room with many local members is written once into an out_frame
// (WebSocket header + payload) and every recipient's queue holds a segment
// pointing into it: nothing is copied per recipient. A connection's own bytes
// (replies, echo, close frames, the 101 response) are staged in a byte_buffer
// and sealed into a private frame (the buffer's block is adopted, not copied)
// when a shared frame is queued behind them or when the connection is flushed.
// The flush sends every segment of a connection in one sendmsg (an iovec per
// segment), so all frames queued for one connection in one loop turn go out in
// one send.
//
// Single-threaded: frames and queues belong to the worker that made them.
// Frames never cross cores; a publication is re-encoded once per worker (see
// core/hub.h).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "protocol/buffer.h"

namespace wsgate::core {

struct out_frame {
    uint8_t* data = nullptr;   // malloc'd block (from a byte_buffer)
    uint32_t cap = 0;
    uint32_t len = 0;          // wire bytes [0, len)
    uint32_t payload = 0;      // offset of the WebSocket payload (after the frame header)
    uint32_t batch_off = 0;    // pushes: the push as a batch record, [batch_off, batch_end),
    uint32_t batch_end = 0;    // stored behind the wire frame (worker::frame_batches)
    uint32_t refs = 0;
    uint8_t opcode = 0;        // text/binary for pushes (batching), 0 for private bytes
    out_frame* next_free = nullptr;
};

// One queued slice of a frame: bytes [off, end) of f.
struct out_segment {
    out_frame* f;
    uint32_t off;
    uint32_t end;
    uint8_t kind;  // seg_private (never dropped: own bytes, or part of a batch frame), seg_push (a whole push frame, droppable), seg_batchable (payload only, framed at flush)
};

enum : uint8_t { seg_private = 0, seg_push = 1, seg_batchable = 2 };

// Frame headers come from a per-worker pool (they are small and churn at the
// publication rate); data blocks come from the worker's buffer cache.
class frame_pool {
public:
    frame_pool() = default;
    frame_pool(const frame_pool&) = delete;
    frame_pool& operator=(const frame_pool&) = delete;

    out_frame* get() {
        if (!_free) {
            auto chunk = std::make_unique<out_frame[]>(chunk_size);
            for (size_t i = 0; i < chunk_size; ++i) {
                chunk[i].next_free = _free;
                _free = &chunk[i];
            }
            _chunks.push_back(std::move(chunk));
        }
        out_frame* f = _free;
        _free = f->next_free;
        f->next_free = nullptr;
        ++_live;
        return f;
    }
    void put(out_frame* f) {
        f->data = nullptr;
        f->cap = f->len = f->payload = f->refs = f->batch_off = f->batch_end = 0;
        f->opcode = 0;
        f->next_free = _free;
        _free = f;
        --_live;
    }
    size_t live() const { return _live; }

private:
    static constexpr size_t chunk_size = 256;
    std::vector<std::unique_ptr<out_frame[]>> _chunks;
    out_frame* _free = nullptr;
    size_t _live = 0;
};

// A connection's queue: a ring of segments that owns no memory while empty.
class segment_queue {
public:
    segment_queue() = default;
    segment_queue(const segment_queue&) = delete;
    segment_queue& operator=(const segment_queue&) = delete;
    ~segment_queue() { std::free(_ring); }

    bool empty() const { return _count == 0; }
    uint32_t size() const { return _count; }
    out_segment& operator[](uint32_t i) { return _ring[(_head + i) & (_cap - 1)]; }
    const out_segment& operator[](uint32_t i) const { return _ring[(_head + i) & (_cap - 1)]; }
    out_segment& front() { return _ring[_head]; }
    out_segment& back() { return (*this)[_count - 1]; }

    void push_back(const out_segment& s) {
        if (_count == _cap) {
            grow();
        }
        _ring[(_head + _count) & (_cap - 1)] = s;
        ++_count;
    }
    void pop_front() {
        _head = (_head + 1) & (_cap - 1);
        if (--_count == 0) {
            _head = 0;
        }
    }
    // Remove the element at index i (order of the others kept). O(n); for drops.
    void erase(uint32_t i) {
        for (uint32_t k = i; k + 1 < _count; ++k) {
            (*this)[k] = (*this)[k + 1];
        }
        --_count;
        if (_count == 0) {
            _head = 0;
        }
    }
    // Drop the elements from index i on (their frames must be released first).
    void truncate(uint32_t i) {
        _count = i;
        if (_count == 0) {
            _head = 0;
        }
    }
    // Give the ring back (must be empty): an idle connection holds no memory.
    void release() {
        std::free(_ring);
        _ring = nullptr;
        _cap = _head = _count = 0;
    }
    // The worker recycles small rings instead of freeing them (a subscriber that
    // gets pushes every loop turn would otherwise malloc and free one per turn).
    static constexpr uint32_t small = 8;
    out_segment* detach_small() {
        if (_cap != small || _count != 0) {
            return nullptr;
        }
        out_segment* r = _ring;
        _ring = nullptr;
        _cap = _head = 0;
        return r;
    }
    void adopt_small(out_segment* r) {  // the queue must own no ring
        _ring = r;
        _cap = small;
        _head = _count = 0;
    }
    uint32_t capacity() const { return _cap; }

private:
    void grow() {
        uint32_t cap = _cap ? _cap * 2 : small;
        auto* r = static_cast<out_segment*>(std::malloc(sizeof(out_segment) * cap));
        if (!r) {
            std::abort();
        }
        for (uint32_t i = 0; i < _count; ++i) {
            r[i] = (*this)[i];
        }
        std::free(_ring);
        _ring = r;
        _cap = cap;
        _head = 0;
    }

    out_segment* _ring = nullptr;
    uint32_t _cap = 0;
    uint32_t _head = 0;
    uint32_t _count = 0;
};

}  // namespace wsgate::core
