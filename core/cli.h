// Command-line parsing (SPEC section 8) with CLI11 (Debian libcli11-dev).
#pragma once

#include "core/config.h"

namespace wsgate::core {

// Parse argv into `cfg`. Returns -1 to continue, or an exit code (0 after
// --help/--version, 2 on a bad or unknown flag, with a message on stderr
// naming it).
int parse_command_line(int argc, char** argv, config& cfg);

}  // namespace wsgate::core
