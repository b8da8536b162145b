// byte_buffer: a growable, heap-backed byte array with a consumed-prefix cursor.
//
// Used for per-connection output queues, handshake accumulation and message
// assembly. It owns no memory while empty (capacity 0), so an idle connection
// pays only for the three words of the object itself. Not thread-safe: each
// buffer belongs to the core that owns the connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>

namespace wsgate::protocol {

class byte_buffer {
public:
    byte_buffer() = default;
    byte_buffer(const byte_buffer&) = delete;
    byte_buffer& operator=(const byte_buffer&) = delete;
    byte_buffer(byte_buffer&& o) noexcept
        : _data(std::exchange(o._data, nullptr)), _begin(std::exchange(o._begin, 0)),
          _end(std::exchange(o._end, 0)), _cap(std::exchange(o._cap, 0)) {}
    byte_buffer& operator=(byte_buffer&& o) noexcept {
        if (this != &o) {
            std::free(_data);
            _data = std::exchange(o._data, nullptr);
            _begin = std::exchange(o._begin, 0);
            _end = std::exchange(o._end, 0);
            _cap = std::exchange(o._cap, 0);
        }
        return *this;
    }
    ~byte_buffer() { std::free(_data); }

    // Readable bytes: [data(), data()+size()).
    const uint8_t* data() const { return _data + _begin; }
    uint8_t* data() { return _data + _begin; }
    size_t size() const { return _end - _begin; }
    bool empty() const { return _end == _begin; }
    size_t capacity() const { return _cap; }
    std::span<const uint8_t> span() const { return {data(), size()}; }
    std::string_view view() const { return {reinterpret_cast<const char*>(data()), size()}; }

    void append(const void* p, size_t n) {
        if (n == 0) {
            return;
        }
        std::memcpy(prepare(n), p, n);
        _end += n;
    }
    void append(std::span<const uint8_t> s) { append(s.data(), s.size()); }
    void append(std::string_view s) { append(s.data(), s.size()); }

    // Writable space for at least n bytes at the end; call commit(k) after writing k <= n bytes.
    uint8_t* prepare(size_t n) {
        if (_cap - _end < n) {
            grow(n);
        }
        return _data + _end;
    }
    void commit(size_t n) { _end += n; }
    // Drop the last n bytes (n <= size()).
    void unappend(size_t n) { _end -= static_cast<uint32_t>(n); }

    // Drop n bytes from the front (after they were sent or parsed).
    void consume(size_t n) {
        _begin += n;
        if (_begin == _end) {
            _begin = _end = 0;
        }
    }
    void clear() { _begin = _end = 0; }
    // Give the memory back (idle connections should hold none).
    void release() {
        std::free(_data);
        _data = nullptr;
        _begin = _end = _cap = 0;
    }
    // A bare heap block, for per-worker caches that recycle buffer memory
    // without going through the allocator on every message.
    struct block {
        uint8_t* data;
        uint32_t capacity;
    };
    // Give up the memory (the buffer must be empty; it is left with capacity 0).
    block detach() {
        block b{_data, _cap};
        _data = nullptr;
        _begin = _end = _cap = 0;
        return b;
    }
    // Take a block from detach() (the buffer must own no memory).
    void adopt(block b) {
        _data = b.data;
        _cap = b.capacity;
        _begin = _end = 0;
    }
    static void free_block(block b) { std::free(b.data); }

    // Swap contents with another buffer (used to move a pending queue in flight).
    void swap(byte_buffer& o) noexcept {
        std::swap(_data, o._data);
        std::swap(_begin, o._begin);
        std::swap(_end, o._end);
        std::swap(_cap, o._cap);
    }

private:
    void grow(size_t n) {
        // Compact first when the consumed prefix is large enough to make room.
        size_t live = _end - _begin;
        if (_begin > 0 && _cap - live >= n && _begin >= live) {
            std::memmove(_data, _data + _begin, live);
            _begin = 0;
            _end = live;
            return;
        }
        size_t want = live + n;
        size_t cap = _cap ? _cap : 256;
        while (cap < want) {
            cap *= 2;
        }
        auto* p = static_cast<uint8_t*>(std::malloc(cap));
        if (!p) {
            std::abort();  // out of memory: nothing sensible to do on the hot path
        }
        if (live) {
            std::memcpy(p, _data + _begin, live);
        }
        std::free(_data);
        _data = p;
        _begin = 0;
        _end = live;
        _cap = cap;
    }

    uint8_t* _data = nullptr;
    uint32_t _begin = 0;
    uint32_t _end = 0;
    uint32_t _cap = 0;
};

}  // namespace wsgate::protocol
