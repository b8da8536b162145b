#include "protocol/deflate.h"

#include "protocol/http_tokens.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace wsgate::protocol {

namespace {

using http::iequals;
using http::trim_ows;

// Split at `sep` outside quoted strings.
std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    bool quoted = false;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        char ch = s[i];
        if (quoted && ch == '\\') {
            ++i;  // quoted-pair
        } else if (ch == '"') {
            quoted = !quoted;
        } else if (ch == sep && !quoted) {
            parts.push_back(trim_ows(s.substr(start, i - start)));
            start = i + 1;
        }
    }
    parts.push_back(trim_ows(s.substr(start)));
    return parts;
}

// A window-bits value: 1*DIGIT in 8..15, optionally as a quoted string (RFC 7692 7.1.2).
bool window_bits(std::string_view v, uint8_t& out) {
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        v = v.substr(1, v.size() - 2);
    }
    if (v.empty() || v.size() > 2 || (v.size() == 2 && v[0] == '0')) {
        return false;
    }
    unsigned n = 0;
    for (char ch : v) {
        if (ch < '0' || ch > '9') {
            return false;
        }
        n = n * 10 + static_cast<unsigned>(ch - '0');
    }
    if (n < 8 || n > 15) {
        return false;
    }
    out = static_cast<uint8_t>(n);
    return true;
}

struct offer {
    bool server_no_context_takeover = false;
    bool client_no_context_takeover = false;
    bool server_max_window_bits = false;
    uint8_t server_bits = 15;
    bool client_max_window_bits = false;  // present (with or without a value)
    bool client_bits_given = false;
    uint8_t client_bits = 15;
};

// Parameters of one permessage-deflate offer; false if it must be declined.
bool parse_offer(std::span<const std::string_view> params, offer& o) {
    bool seen[4] = {};
    for (std::string_view p : params) {
        auto eq = p.find('=');
        std::string_view name = trim_ows(p.substr(0, eq));
        bool has_value = eq != std::string_view::npos;
        std::string_view value = has_value ? trim_ows(p.substr(eq + 1)) : std::string_view();
        int which = iequals(name, "server_no_context_takeover")   ? 0
                    : iequals(name, "client_no_context_takeover") ? 1
                    : iequals(name, "server_max_window_bits")     ? 2
                    : iequals(name, "client_max_window_bits")     ? 3
                                                                  : -1;
        if (which < 0 || seen[which]) {
            return false;  // unknown or repeated parameter
        }
        seen[which] = true;
        switch (which) {
        case 0:
            if (has_value) {
                return false;
            }
            o.server_no_context_takeover = true;
            break;
        case 1:
            if (has_value) {
                return false;
            }
            o.client_no_context_takeover = true;
            break;
        case 2:
            if (!has_value || !window_bits(value, o.server_bits)) {
                return false;  // a value is required
            }
            o.server_max_window_bits = true;
            break;
        default:
            o.client_max_window_bits = true;
            if (has_value) {
                if (!window_bits(value, o.client_bits)) {
                    return false;
                }
                o.client_bits_given = true;
            }
            break;
        }
    }
    return true;
}

}  // namespace

std::string negotiate_permessage_deflate(std::span<const std::string_view> headers, const deflate_config& cfg,
                                         deflate_params& out) {
    out = deflate_params{};
    if (!cfg.enabled) {
        return {};
    }
    for (std::string_view header : headers) {
        for (std::string_view element : split(header, ',')) {
            std::vector<std::string_view> parts = split(element, ';');
            if (!iequals(parts[0], "permessage-deflate")) {
                continue;  // another extension: not ours to accept
            }
            offer o;
            if (!parse_offer(std::span(parts).subspan(1), o)) {
                continue;  // declined: try the next offer
            }
            std::string resp = "permessage-deflate; server_no_context_takeover";
            out.on = true;
            out.compress_out = true;
            if (o.server_max_window_bits) {
                // We must not exceed the client's window: answer its value. Our
                // shared frames use ours, so below ours nothing is compressed.
                resp += "; server_max_window_bits=" + std::to_string(o.server_bits);
                out.compress_out = o.server_bits >= cfg.server_window_bits;
            }
            if (!cfg.client_context_takeover || o.client_no_context_takeover) {
                resp += "; client_no_context_takeover";
                out.client_takeover = false;
                out.client_window_bits = 15;
            } else {
                out.client_takeover = true;
                out.client_window_bits = 15;
                if (o.client_max_window_bits) {  // only then may we answer it
                    uint8_t bits = std::min(cfg.client_window_bits, o.client_bits);
                    resp += "; client_max_window_bits=" + std::to_string(bits);
                    out.client_window_bits = bits;
                }
            }
            return resp;
        }
    }
    return {};
}

// --- inflate -----------------------------------------------------------------

struct inflater::state {
    z_stream z{};
    bool ok = false;
};

inflater::inflater(uint8_t window_bits, bool context_takeover)
    : _s(std::make_unique<state>()), _takeover(context_takeover) {
    _s->ok = inflateInit2(&_s->z, -static_cast<int>(window_bits)) == Z_OK;
}

inflater::~inflater() {
    if (_s->ok) {
        inflateEnd(&_s->z);
    }
}

inflate_result inflater::message(std::span<const uint8_t> in, size_t limit, byte_buffer& out) {
    out.clear();
    if (!_s->ok) {
        return inflate_result::corrupt;
    }
    z_stream& z = _s->z;
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    const size_t cap = limit + 1;  // one byte past the limit tells "too big"
    size_t chunk = std::min(cap, std::max<size_t>(4096, in.size() * 4));
    bool ended = false;
    // Feed the message, then the tail the sender removed. Output grows in
    // doubling chunks and never past limit + 1 bytes.
    auto feed = [&](std::span<const uint8_t> src) -> inflate_result {
        z.next_in = const_cast<Bytef*>(src.data());
        z.avail_in = static_cast<uInt>(src.size());
        for (;;) {
            if (out.size() >= cap) {
                return inflate_result::too_big;
            }
            size_t room = std::min(chunk, cap - out.size());
            z.next_out = out.prepare(room);
            z.avail_out = static_cast<uInt>(room);
            int rc = inflate(&z, Z_SYNC_FLUSH);
            out.commit(room - z.avail_out);
            chunk = std::min(cap, chunk * 2);
            if (rc == Z_STREAM_END) {
                ended = true;  // a block with BFINAL set (RFC 7692 7.2.3.4): what follows is padding
                return inflate_result::ok;
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                return inflate_result::corrupt;  // Z_DATA_ERROR, Z_NEED_DICT, Z_MEM_ERROR
            }
            if (z.avail_out != 0 && z.avail_in == 0) {
                return inflate_result::ok;  // input used up and nothing left pending
            }
            if (rc == Z_BUF_ERROR && z.avail_out != 0) {
                return inflate_result::corrupt;  // input left that zlib cannot use: never loop on it
            }
        }
    };
    inflate_result result = feed(in);
    if (result == inflate_result::ok && !ended) {
        result = feed(std::span<const uint8_t>(tail, sizeof(tail)));
    }
    if (result == inflate_result::ok && out.size() > limit) {
        result = inflate_result::too_big;
    }
    if (!_takeover || ended || result != inflate_result::ok) {
        inflateReset(&z);  // a failed connection is closed anyway; after BFINAL a new stream starts
    }
    return result;
}

// --- deflate -----------------------------------------------------------------

struct deflater::state {
    z_stream z{};
    bool ok = false;
};

deflater::deflater(int level, uint8_t window_bits) : _s(std::make_unique<state>()) {
    _s->ok = deflateInit2(&_s->z, level, Z_DEFLATED, -static_cast<int>(window_bits), 8, Z_DEFAULT_STRATEGY) == Z_OK;
}

deflater::~deflater() {
    if (_s->ok) {
        deflateEnd(&_s->z);
    }
}

bool deflater::message(std::span<const uint8_t> in, byte_buffer& out) {
    if (!_s->ok || in.empty()) {
        return false;
    }
    z_stream& z = _s->z;
    deflateReset(&z);  // no context takeover: every message stands alone
    // A sync flush ends byte-aligned with an empty stored block (00 00 ff ff),
    // which the permessage-deflate framing removes. Bound: deflateBound + the flush.
    size_t bound = deflateBound(&z, static_cast<uLong>(in.size())) + 16;
    uint8_t* dst = out.prepare(bound);
    z.next_in = const_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = dst;
    z.avail_out = static_cast<uInt>(bound);
    int rc = deflate(&z, Z_SYNC_FLUSH);
    size_t produced = bound - z.avail_out;
    if (rc != Z_OK || z.avail_in != 0 || produced < 4 ||
        std::memcmp(dst + produced - 4, "\x00\x00\xff\xff", 4) != 0) {
        return false;
    }
    produced -= 4;
    if (produced >= in.size()) {
        return false;  // not worth it: send it as it is
    }
    out.commit(produced);
    return true;
}

}  // namespace wsgate::protocol
