// client_ws.cpp — the WebSocket client state machine of client_loop: checks
// the 101 response, feeds received bytes to the frame (or raw) reader, answers
// pings, and runs the close handshake. No I/O here: bytes go out through
// outbox() and connections end through teardown(), both in client_loop.cpp.
#include "client_loop.h"

#include "ws_frame.h"
#include "ws_handshake.h"

#include <cstring>

namespace wsbench {

namespace {

// Feeds parsed frames back into the loop; messages only while open.
struct frame_sink {
    client_loop& loop;
    connection& c;

    void on_message(const message_info& m) {
        if (c.state == conn_state::open) {
            loop.deliver(c, m);
        }
    }
    bool on_control(uint8_t opcode, const uint8_t* p, size_t n) {
        return loop.control(c, opcode, p, n);
    }
};

} // namespace

void client_loop::became_open(connection& c) {
    c.state = conn_state::open;
    c.deadline_ns = 0;
    --_opening;
    ++_counters.opened;
    _handler.on_open(c);
}

void client_loop::consume_handshake(connection& c, const uint8_t* p, size_t n) {
    c.http_in.append(p, n);
    const handshake_result r = parse_handshake_response(c.http_in.data(), c.http_in.size(), c.expected);
    if (r.status == handshake_status::incomplete) {
        return;
    }
    if (r.status == handshake_status::failed) {
        record_failure(c, r.error, 0);
        teardown(c, close_reason::handshake_failed, 0);
        return;
    }
    c.http_in.consume(r.consumed);
    became_open(c);
    if (!c.http_in.empty() && c.state == conn_state::open) {
        // Frames that arrived in the same segment as the 101.
        byte_buffer rest(std::move(c.http_in));
        consume(c, rest.data(), rest.size());
    }
    c.http_in.release();
}

void client_loop::consume(connection& c, const uint8_t* p, size_t n) {
    if (c.state == conn_state::handshaking) {
        consume_handshake(c, p, n);
        return;
    }
    if (c.state != conn_state::open && c.state != conn_state::closing) {
        return;
    }
    frame_sink sink{*this, c};
    if (_cfg.raw) {
        c.raw.feed(p, n, sink);
        return;
    }
    const char* err = c.reader.feed(p, n, sink);
    if (err != nullptr && std::strcmp(err, "stop") != 0) {
        record_failure(c, err, 0);
        teardown(c, close_reason::protocol_error, 0);
    }
}

bool client_loop::control(connection& c, uint8_t opcode, const uint8_t* p, size_t n) {
    if (opcode == op_ping) {
        if (c.state == conn_state::open) {
            append_masked_frame(outbox(c), op_pong, p, n, _rng.next32());
        }
        return true;
    }
    if (opcode == op_pong) {
        return true;
    }
    // Close: answer once with the server's status code, then wait for its TCP close.
    if (!c.close_sent) {
        c.close_sent = true;
        append_masked_frame(outbox(c), op_close, p, n >= 2 ? 2 : 0, _rng.next32());
    }
    if (c.state == conn_state::open) {
        c.state = conn_state::closing;
        c.reason = close_reason::peer_closed;
        c.deadline_ns = _now + _cfg.close_timeout_ns;
    }
    return false;
}

void client_loop::close_gracefully(connection& c) {
    if (c.state != conn_state::open) {
        if (c.state != conn_state::closing) {
            abort(c);
        }
        return;
    }
    static constexpr uint8_t normal[2] = {0x03, 0xe8}; // 1000
    append_masked_frame(outbox(c), op_close, normal, sizeof(normal), _rng.next32());
    c.close_sent = true;
    c.state = conn_state::closing;
    c.reason = close_reason::local;
    c.deadline_ns = _now + _cfg.close_timeout_ns;
}

} // namespace wsbench
