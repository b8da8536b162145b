// Command line and configuration file (SPEC section 8): CLI11 (Debian
// libcli11-dev) for flags, toml++ (libtomlplusplus-dev) for the file, both
// driven by the one option table in core/options.h.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/config.h"

namespace wsgate::core {

// Parse argv (and the --config file it names) into `cfg`: defaults < file <
// flags. Returns -1 to continue, or an exit code: 0 after --help, --version,
// --print-config or a passing --check-config; 2 on a bad or unknown flag or
// key, with a message on stderr naming it (and the file line for keys).
int parse_command_line(int argc, char** argv, config& cfg);

// Checks that span options (listen address, server id, Redis URL, ...) and
// derived fields; `where(key)` names the source of a key's value for errors.
// Returns -1 when fine, else 2 after printing the error.
int finish_config(config& cfg, const std::function<std::string(std::string_view)>& where);

// The effective configuration as TOML, one `key = value  # --flag` line per
// option, secrets redacted (--print-config).
std::string effective_config_toml(const config& cfg);

}  // namespace wsgate::core
