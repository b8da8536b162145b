// The TOML configuration file (SPEC sections 5 and 8): every option of the
// table in core/options.h has a key; an unknown key, a wrong type or a value
// out of range is an error naming the key and its line.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/config.h"

namespace wsgate::core {

struct config_file_result {
    std::vector<std::string> errors;   // "FILE:LINE: message", one per problem found
    std::map<std::string, int> lines;  // key → line, for errors found later (validation)
};

// Read `path` into `cfg` (only the keys present change). Every problem is
// collected, not just the first.
config_file_result load_config_file(const std::string& path, config& cfg);

}  // namespace wsgate::core
