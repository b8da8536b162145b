// main() for the fuzz targets when they are not built with libFuzzer (any compiler;
// what ctest runs in every build). It runs the target's seed corpus, then
// deterministic mutations of it (mt19937: bit flips, interesting bytes, inserts,
// deletes, duplicated ranges, splices between seeds, dictionary tokens,
// truncation), stacked 1-4 deep, one input in four mutating the previous mutant
// instead of a seed. No coverage feedback: this is a regression net that needs no
// clang; run the libFuzzer build (-DWSGATE_FUZZ=ON) for real exploration.
//
//   wsgate_fuzz_X [ITERATIONS] [--seconds S] [--seed N] [--max-len N]
//   wsgate_fuzz_X --write-corpus DIR      write the seeds (a libFuzzer start corpus)
//   wsgate_fuzz_X FILE|DIR...             run these inputs once (reproduce a failure)
//
// ITERATIONS mutated inputs after the seeds (default: about 10 s per target in a
// Debug+ASan build on a 2-core VM); --seconds stops earlier once that much time
// has passed. Each input is copied to an exact-size heap buffer so that ASan
// catches reads past its end. On an invariant failure the target prints what
// broke and a hex dump and aborts; on a crash or sanitizer report this driver
// prints the hex dump. Either way the input is also written to
// <program>-failure.bin in the working directory and the exit status is non-zero.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Present when linked with ASan/UBSan: called before the process dies on a report.
extern "C" void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));

namespace wsgate::fuzz {
namespace {

const uint8_t* g_running = nullptr;  // the input being run (the driver's copy)
size_t g_running_size = 0;
std::string g_failure_path = "fuzz-failure.bin";
volatile sig_atomic_t g_dumped = 0;

void write_failure_file() {
    int fd = ::open(g_failure_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        size_t off = 0;
        while (off < g_running_size) {
            ssize_t w = ::write(fd, g_running + off, g_running_size - off);
            if (w <= 0) {
                break;
            }
            off += static_cast<size_t>(w);
        }
        ::close(fd);
    }
}

// On a sanitizer report (called by the runtime before it exits).
void on_death() {
    if (g_dumped || g_running == nullptr) {
        return;  // not inside an input (e.g. a leak report at exit)
    }
    g_dumped = 1;
    write_failure_file();
    std::fprintf(stderr, "\nFUZZ: sanitizer report on this input (also written to %s)\n",
                 g_failure_path.c_str());
    dump_input(stderr, g_running, g_running_size);
}

// Crashes and aborts (FUZZ_CHECK and assert() end in abort()).
void on_signal(int sig) {
    if (!g_dumped && g_running != nullptr) {
        g_dumped = 1;
        write_failure_file();
        std::fprintf(stderr, "\nFUZZ: signal %d on this input (also written to %s)\n", sig,
                     g_failure_path.c_str());
        if (!g_check_failed) {  // FUZZ_CHECK has printed the dump already
            dump_input(stderr, g_running, g_running_size);
        }
    }
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

void run_one(const uint8_t* p, size_t n) {
    // Exact-size copy: the vector's spare capacity would hide overreads from ASan.
    auto* copy = new uint8_t[n ? n : 1];
    if (n) {
        std::memcpy(copy, p, n);
    }
    g_running = copy;
    g_running_size = n;
    LLVMFuzzerTestOneInput(copy, n);
    g_running = nullptr;
    g_running_size = 0;
    delete[] copy;
}

class mutator {
public:
    mutator(uint32_t seed, const std::vector<bytes>& seeds, std::vector<std::string> dict,
            size_t max_len)
        : _rng(seed), _seeds(seeds), _dict(std::move(dict)), _max_len(max_len) {}

    bytes next(const bytes& base) {
        bytes s = base;
        int rounds = 1 + static_cast<int>(_rng() % 4);
        for (int i = 0; i < rounds; ++i) {
            mutate(s);
        }
        if (s.size() > _max_len) {
            s.resize(_max_len);
        }
        return s;
    }

private:
    size_t pick(size_t n) { return n ? _rng() % n : 0; }

    void mutate(bytes& s) {
        static constexpr uint8_t interesting[] = {0x00, 0x01, 0x7e, 0x7f, 0x80, 0x81, 0xff, 0xfe,
                                                  0x88, 0x89, 0x8a, '\r', '\n', ' ',  ':',  ','};
        switch (_rng() % 11) {
        case 0:  // flip a bit
            if (!s.empty()) {
                s[pick(s.size())] ^= static_cast<uint8_t>(1u << (_rng() % 8));
            }
            break;
        case 1:  // an interesting or random byte
            if (!s.empty()) {
                s[pick(s.size())] = _rng() % 2 ? interesting[pick(std::size(interesting))]
                                               : static_cast<uint8_t>(_rng());
            }
            break;
        case 2: {  // insert random bytes
            size_t at = pick(s.size() + 1);
            size_t k = 1 + pick(8);
            bytes ins(k);
            for (auto& b : ins) {
                b = static_cast<uint8_t>(_rng());
            }
            s.insert(s.begin() + static_cast<ptrdiff_t>(at), ins.begin(), ins.end());
            break;
        }
        case 3:  // delete a range
            if (!s.empty()) {
                size_t at = pick(s.size());
                size_t k = std::min(s.size() - at, 1 + pick(16));
                s.erase(s.begin() + static_cast<ptrdiff_t>(at),
                        s.begin() + static_cast<ptrdiff_t>(at + k));
            }
            break;
        case 4:  // duplicate a range elsewhere
            if (!s.empty()) {
                size_t from = pick(s.size());
                size_t k = std::min(s.size() - from, 1 + pick(64));
                bytes chunk(s.begin() + static_cast<ptrdiff_t>(from),
                            s.begin() + static_cast<ptrdiff_t>(from + k));
                size_t at = pick(s.size() + 1);
                s.insert(s.begin() + static_cast<ptrdiff_t>(at), chunk.begin(), chunk.end());
            }
            break;
        case 5: {  // splice with another seed
            const bytes& o = _seeds[pick(_seeds.size())];
            size_t cut = pick(s.size() + 1);
            size_t from = pick(o.size() + 1);
            s.resize(cut);
            s.insert(s.end(), o.begin() + static_cast<ptrdiff_t>(from), o.end());
            break;
        }
        case 6:  // insert a dictionary token
        case 7:  // overwrite with one
            if (!_dict.empty()) {
                const std::string& t = _dict[pick(_dict.size())];
                size_t at = pick(s.size() + 1);
                if (_rng() % 2 == 0 || at + t.size() > s.size()) {
                    s.insert(s.begin() + static_cast<ptrdiff_t>(at), t.begin(), t.end());
                } else {
                    std::memcpy(s.data() + at, t.data(), t.size());
                }
            }
            break;
        case 8:  // truncate
            if (!s.empty()) {
                s.resize(pick(s.size()));
            }
            break;
        case 9:  // small arithmetic
            if (!s.empty()) {
                s[pick(s.size())] += static_cast<uint8_t>(static_cast<int>(pick(17)) - 8);
            }
            break;
        default:  // swap two bytes
            if (s.size() >= 2) {
                std::swap(s[pick(s.size())], s[pick(s.size())]);
            }
            break;
        }
    }

    std::mt19937 _rng;
    const std::vector<bytes>& _seeds;
    std::vector<std::string> _dict;
    size_t _max_len;
};

bytes read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

int usage(const char* prog) {
    std::fprintf(stderr,
                 "usage: %s [ITERATIONS] [--seconds S] [--seed N] [--max-len N]\n"
                 "       %s --write-corpus DIR\n"
                 "       %s FILE|DIR...\n",
                 prog, prog, prog);
    return 2;
}

}  // namespace
}  // namespace wsgate::fuzz

int main(int argc, char** argv) {
    using namespace wsgate::fuzz;
    namespace fs = std::filesystem;
    const std::string prog = fs::path(argv[0]).filename().string();
    unsigned long iterations = default_iterations();
    double seconds = 0;
    uint32_t seed = 0x5eed;
    size_t max_len = 4096;
    std::string corpus_out;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::exit(usage(argv[0]));
            }
            return argv[++i];
        };
        if (a == "--seconds") {
            seconds = std::stod(value());
        } else if (a == "--seed") {
            seed = static_cast<uint32_t>(std::stoul(value()));
        } else if (a == "--max-len") {
            max_len = std::stoul(value());
        } else if (a == "--write-corpus") {
            corpus_out = value();
        } else if (a == "-h" || a == "--help") {
            return usage(argv[0]);
        } else if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos) {
            iterations = std::stoul(a);
        } else if (!a.empty() && a[0] == '-') {
            return usage(argv[0]);
        } else {
            files.push_back(a);
        }
    }

    g_failure_path = prog + "-failure.bin";
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(on_death);
        std::signal(SIGABRT, on_signal);  // FUZZ_CHECK: only the file is missing
    } else {
        for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
            std::signal(sig, on_signal);
        }
    }

    const std::vector<bytes> seeds = seed_corpus();
    if (!corpus_out.empty()) {
        fs::create_directories(corpus_out);
        for (size_t i = 0; i < seeds.size(); ++i) {
            char name[32];
            std::snprintf(name, sizeof(name), "seed-%03zu", i);
            std::ofstream f(fs::path(corpus_out) / name, std::ios::binary);
            f.write(reinterpret_cast<const char*>(seeds[i].data()),
                    static_cast<std::streamsize>(seeds[i].size()));
        }
        std::printf("%s: wrote %zu seeds to %s\n", prog.c_str(), seeds.size(), corpus_out.c_str());
        return 0;
    }
    if (!files.empty()) {
        size_t n = 0;
        for (const std::string& f : files) {
            std::vector<fs::path> paths;
            if (fs::is_directory(f)) {
                for (const auto& e : fs::directory_iterator(f)) {
                    if (e.is_regular_file()) {
                        paths.push_back(e.path());
                    }
                }
            } else {
                paths.push_back(f);
            }
            for (const fs::path& p : paths) {
                bytes in = read_file(p);
                std::printf("%s: running %s (%zu bytes)\n", prog.c_str(), p.c_str(), in.size());
                std::fflush(stdout);
                run_one(in.data(), in.size());
                ++n;
            }
        }
        std::printf("%s: %zu inputs passed\n", prog.c_str(), n);
        return 0;
    }

    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    for (const bytes& s : seeds) {
        run_one(s.data(), s.size());
    }
    mutator m(seed, seeds, dictionary(), max_len);
    std::mt19937 pick(seed ^ 0xa5a5a5a5u);
    bytes last = seeds.empty() ? bytes{} : seeds[0];
    unsigned long done = 0;
    bool out_of_time = false;
    for (; done < iterations; ++done) {
        if (seconds > 0 && elapsed() >= seconds) {
            out_of_time = true;
            break;
        }
        const bytes& base = (pick() % 4 == 0 || seeds.empty()) ? last : seeds[done % seeds.size()];
        last = m.next(base);
        run_one(last.data(), last.size());
    }
    std::printf("%s: %zu seeds + %lu mutations passed in %.1f s (seed %u)%s\n", prog.c_str(),
                seeds.size(), done, elapsed(), seed,
                out_of_time ? fmt(", stopped at the %.0f s budget", seconds).c_str() : "");
    return 0;
}
