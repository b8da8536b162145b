// permessage-deflate (RFC 7692): negotiation, and the two directions.
//
// Sans-I/O like the rest of protocol/. The policy that keeps memory per
// connection at zero by default:
//
// - Outbound, the server never keeps context (we always answer
//   server_no_context_takeover), so a push for many recipients is compressed
//   once, by the worker's one deflater, and the same bytes go to every
//   recipient that negotiated the extension.
// - Inbound, we answer client_no_context_takeover (a server may: RFC 7692
//   7.1.1.2) unless the configuration allows clients to keep their context;
//   then every message inflates independently with the worker's one shared
//   inflater. Only a client allowed to keep its context (and asking to) costs a
//   per-connection inflater: ~7 KiB of zlib state plus its window (2^bits:
//   32 KiB at 15 bits), which the server limits with client_max_window_bits
//   when the client offered that parameter.
// - A client that limits our window (server_max_window_bits below ours) still
//   gets the extension, for its inbound messages; we send it uncompressed
//   messages only (allowed: RSV1 is per message), so a shared frame never
//   breaks its window.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "protocol/buffer.h"

namespace wsgate::protocol {

struct deflate_config {
    bool enabled = false;
    int level = 6;                       // zlib level for outbound messages (1-9)
    size_t min_size = 256;               // smaller payloads go uncompressed
    bool client_context_takeover = false;  // allow clients to keep context (per-connection inflater)
    uint8_t server_window_bits = 15;     // our outbound LZ77 window (9-15)
    uint8_t client_window_bits = 15;     // cap asked of clients keeping context, when they allow one (8-15)
};

// What was agreed for one connection.
struct deflate_params {
    bool on = false;               // the extension is in use (RSV1 allowed inbound)
    bool compress_out = false;     // we may send compressed messages (its window fits ours)
    bool client_takeover = false;  // the client keeps context: needs its own inflater
    uint8_t client_window_bits = 15;  // inflate window for that client
};

// Picks the first acceptable permessage-deflate offer among the
// Sec-WebSocket-Extensions header values (several offers per header, several
// headers) and returns the response header value, or "" to decline (no
// extension: an offer with an unknown, repeated or malformed parameter is
// declined, and the next one tried). Never answers a parameter the client did
// not allow (client_max_window_bits only when offered).
std::string negotiate_permessage_deflate(std::span<const std::string_view> headers, const deflate_config& cfg,
                                         deflate_params& out);

enum class inflate_result : uint8_t { ok, too_big, corrupt };

// Inflates messages (raw DEFLATE, the 00 00 ff ff tail added here). Without
// context takeover every message starts fresh; with it, the window carries
// over between messages of one connection.
class inflater {
public:
    explicit inflater(uint8_t window_bits = 15, bool context_takeover = false);
    ~inflater();
    inflater(const inflater&) = delete;
    inflater& operator=(const inflater&) = delete;

    // Inflate one whole message into `out` (cleared first). The output is
    // checked against `limit` while inflating: more than `limit` bytes →
    // too_big, having produced at most limit + 1 of them (a deflate bomb never
    // grows memory past the message limit).
    inflate_result message(std::span<const uint8_t> in, size_t limit, byte_buffer& out);

    struct state;

private:
    std::unique_ptr<state> _s;
    bool _takeover;
};

// Compresses whole messages without context takeover.
class deflater {
public:
    deflater(int level, uint8_t window_bits);
    ~deflater();
    deflater(const deflater&) = delete;
    deflater& operator=(const deflater&) = delete;

    // The permessage-deflate payload of `in` (sync-flushed, 00 00 ff ff
    // removed) appended to `out`. False if it would not be smaller than `in`
    // (then send it uncompressed) or zlib failed.
    bool message(std::span<const uint8_t> in, byte_buffer& out);

    struct state;

private:
    std::unique_ptr<state> _s;
};

}  // namespace wsgate::protocol
