// proc_stats.cpp — see proc_stats.h.
#include "proc_stats.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace wsbench {

int64_t read_rss_bytes(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            std::istringstream fields(line.substr(6));
            int64_t kib = -1;
            fields >> kib;
            return kib < 0 ? -1 : kib * 1024;
        }
    }
    return -1;
}

double read_cpu_seconds(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!std::getline(in, text)) {
        return -1;
    }
    // The command name (field 2) may contain spaces; fields resume after ')'.
    const auto close = text.rfind(')');
    if (close == std::string::npos) {
        return -1;
    }
    std::istringstream fields(text.substr(close + 2));
    std::string skip;
    // After ')': state(3) ... utime is field 14, stime field 15.
    for (int field = 3; field < 14; ++field) {
        fields >> skip;
    }
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    if (!(fields >> utime >> stime)) {
        return -1;
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
}

std::vector<int> parse_cpu_list(const std::string& list) {
    std::vector<int> cpus;
    std::istringstream in(list);
    std::string item;
    while (std::getline(in, item, ',')) {
        if (item.empty()) {
            continue;
        }
        const auto dash = item.find('-');
        try {
            if (dash == std::string::npos) {
                cpus.push_back(std::stoi(item));
            } else {
                const int lo = std::stoi(item.substr(0, dash));
                const int hi = std::stoi(item.substr(dash + 1));
                for (int c = lo; c <= hi; ++c) {
                    cpus.push_back(c);
                }
            }
        } catch (const std::exception&) {
            throw std::runtime_error("bad CPU list '" + list + "'");
        }
    }
    return cpus;
}

bool pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

uint64_t raise_nofile_limit(uint64_t wanted) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < wanted) {
        rl.rlim_cur = wanted < rl.rlim_max ? wanted : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

} // namespace wsbench
