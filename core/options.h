// Every configuration option of wsgate, in one table (SPEC section 8).
//
// Each option has a TOML key (`section.name`, or `name` at the top level) and a
// command-line flag; the flag wins over the file, the file over the default.
// The table drives the flag parser (core/cli.cpp), the TOML loader
// (core/config_file.cpp), --print-config and the ranges checked on both paths,
// so a flag without a key, or a range checked on one path only, cannot happen.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/config.h"

namespace wsgate::core {

static_assert(std::is_same_v<size_t, uint64_t>, "size_t options share the uint64_t member-pointer type");

// One choice option's names, in the order of its enum's values (0, 1, ...).
using choice_names = std::span<const std::string_view>;

using option_target = std::variant<unsigned config::*, uint64_t config::*, bool config::*,
                                   std::string config::*, std::vector<std::string> config::*,
                                   slow_consumer_policy config::*, log_level config::*>;

struct option_spec {
    std::string_view key;   // TOML key: "limits.max_message"
    std::string_view flag;  // "--max-message"
    std::string_view help;
    option_target target;
    uint64_t min = 0;       // integers: inclusive range
    uint64_t max = 0;
    choice_names choices{};  // enums: accepted names
    bool secret = false;     // redacted by --print-config
};

// The whole table, in --print-config order (top-level keys first, then by section).
std::span<const option_spec> options();

// The option whose TOML key is `key`, or nullptr.
const option_spec* find_option_by_key(std::string_view key);

// The value of `opt` in `cfg` as a TOML value ("8080", "\"close\"", "[\"a\", \"b\"]").
// Secrets are redacted unless `reveal_secrets`.
std::string option_value_toml(const option_spec& opt, const config& cfg, bool reveal_secrets = false);

// A TOML basic string with its quotes and escapes.
std::string toml_quote(std::string_view s);

}  // namespace wsgate::core
