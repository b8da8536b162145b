#include "core/sd_notify.h"

#include <systemd/sd-daemon.h>

namespace wsgate::core::systemd {

void notify(const std::string& state) { sd_notify(0, state.c_str()); }

uint64_t watchdog_usec() {
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

}  // namespace wsgate::core::systemd
