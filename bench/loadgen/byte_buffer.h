// byte_buffer.h — growable byte buffer with a consumed-prefix offset.
//
// Used for a connection's outgoing bytes and its HTTP response accumulator.
// Unlike std::vector<uint8_t> it does not zero-fill on growth, so appending a
// frame costs the copy only. Data lives in [data() , data() + size()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace wsbench {

class byte_buffer {
public:
    byte_buffer() = default;
    byte_buffer(const byte_buffer&) = delete;
    byte_buffer& operator=(const byte_buffer&) = delete;
    byte_buffer(byte_buffer&& o) noexcept { steal(o); }
    byte_buffer& operator=(byte_buffer&& o) noexcept {
        if (this != &o) {
            std::free(_data);
            steal(o);
        }
        return *this;
    }
    ~byte_buffer() { std::free(_data); }

    [[nodiscard]] uint8_t* data() noexcept { return _data + _head; }
    [[nodiscard]] const uint8_t* data() const noexcept { return _data + _head; }
    [[nodiscard]] size_t size() const noexcept { return _tail - _head; }
    [[nodiscard]] bool empty() const noexcept { return _tail == _head; }
    [[nodiscard]] size_t capacity() const noexcept { return _cap; }

    // Reserves n bytes at the end and returns a pointer to them; the caller
    // must fill all n. Invalidates earlier pointers.
    [[nodiscard]] uint8_t* extend(size_t n) {
        if (_tail + n > _cap) {
            grow(n);
        }
        uint8_t* p = _data + _tail;
        _tail += n;
        return p;
    }

    void append(const void* src, size_t n) { std::memcpy(extend(n), src, n); }

    // Drops n bytes from the front.
    void consume(size_t n) noexcept {
        _head += n;
        if (_head >= _tail) {
            _head = 0;
            _tail = 0;
        }
    }

    void clear() noexcept { _head = _tail = 0; }

    // Frees the storage too (idle connections should not pin memory).
    void release() noexcept {
        std::free(_data);
        _data = nullptr;
        _head = _tail = _cap = 0;
    }

    void swap(byte_buffer& o) noexcept {
        byte_buffer tmp(std::move(o));
        o = std::move(*this);
        *this = std::move(tmp);
    }

private:
    void grow(size_t n) {
        // Compact first: the live bytes move to the front.
        if (_head > 0) {
            std::memmove(_data, _data + _head, _tail - _head);
            _tail -= _head;
            _head = 0;
            if (_tail + n <= _cap) {
                return;
            }
        }
        size_t cap = _cap == 0 ? 256 : _cap * 2;
        while (cap < _tail + n) {
            cap *= 2;
        }
        auto* p = static_cast<uint8_t*>(std::realloc(_data, cap));
        if (p == nullptr) {
            throw std::bad_alloc();
        }
        _data = p;
        _cap = cap;
    }

    void steal(byte_buffer& o) noexcept {
        _data = o._data;
        _head = o._head;
        _tail = o._tail;
        _cap = o._cap;
        o._data = nullptr;
        o._head = o._tail = o._cap = 0;
    }

    uint8_t* _data = nullptr; // malloc'd storage, or null
    size_t _head = 0;         // first live byte
    size_t _tail = 0;         // one past the last live byte
    size_t _cap = 0;          // allocated bytes
};

} // namespace wsbench
