// The client session of a connection on the WebSocket endpoint (/ws).
#pragma once

#include <cstdint>

#include "protocol/auth.h"
#include "protocol/push.h"

namespace wsgate::core {

// What a client connection on the WebSocket endpoint is: who, in which format
// it gets pushes, and its rate limit state. Allocated at the upgrade.
struct client_session {
    protocol::identity who;
    protocol::wire_format format = protocol::wire_format::json;  // pushes (replies follow the request's format)
    bool batch = false;                      // opted in to several pushes per frame
    uint64_t tokens = 0;                     // rate limit bucket, in 1/1000 messages
    uint64_t penalty = 0;                    // refused messages not yet forgiven, same unit
    uint32_t refill_ms = 0;                  // last inbound message (monotonic ms): lastActivity
    int64_t connected_at = 0;                // wall-clock ms (connection:{user} connectedAt)
};

}  // namespace wsgate::core
