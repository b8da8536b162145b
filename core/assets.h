// Files embedded into the binary at build time (cmake/embed.cmake): the demo
// page (tools/demo/index.html) and the JavaScript client (tools/js/wsgate.mjs),
// served with --demo.
#pragma once

#include <string_view>

namespace wsgate::core::assets {

extern const std::string_view demo_page;
extern const std::string_view demo_script;

}  // namespace wsgate::core::assets
