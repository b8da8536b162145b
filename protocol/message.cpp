// Client protocol v1 shared representation: stable names of error codes.
#include "protocol/message.h"

namespace wsgate::protocol {

std::string_view error_code_name(error_code c) {
    switch (c) {
    case error_code::bad_request:
        return "bad_request";
    case error_code::unknown_op:
        return "unknown_op";
    case error_code::forbidden:
        return "forbidden";
    case error_code::not_member:
        return "not_member";
    case error_code::limit:
        return "limit";
    case error_code::unavailable:
        return "unavailable";
    case error_code::internal:
        return "internal";
    }
    return "internal";
}

}  // namespace wsgate::protocol
