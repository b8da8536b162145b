// Command-line parsing with CLI11: unknown flags are rejected by name.
#include "core/cli.h"

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "backplane/presence.h"
#include "backplane/redis_names.h"
#include "core/config_file.h"
#include "core/options.h"

#ifndef WSGATE_VERSION
#define WSGATE_VERSION "0.0.0"
#endif

namespace wsgate::core {

namespace {

// "HOST:PORT", "[v6]:PORT" or ":PORT". Returns an error message, empty on success.
std::string parse_listen(const std::string& s, config& cfg) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) {
        return "expected HOST:PORT, got '" + s + "'";
    }
    std::string host = s.substr(0, colon);
    std::string port = s.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535 || port.empty()) {
        return "invalid port in '" + s + "'";
    }
    cfg.listen_host = host.empty() ? "0.0.0.0" : host;
    cfg.listen_port = static_cast<uint16_t>(value);
    return {};
}

}  // namespace

namespace {

// --config's value, found before the flags are parsed (the file is read first so
// that flags override it). Empty when absent.
std::string find_config_flag(int argc, char** argv, bool& help_or_version) {
    std::string path;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--help" || a == "-h" || a == "--version") {
            help_or_version = true;
        } else if (a == "--config" && i + 1 < argc) {
            path = argv[++i];
        } else if (a.starts_with("--config=")) {
            path = std::string(a.substr(9));
        }
    }
    return path;
}

std::string flag_name_without_dashes(std::string_view flag) { return std::string(flag.substr(2)); }

}  // namespace

int parse_command_line(int argc, char** argv, config& cfg) {
    bool help_or_version = false;
    cfg.config_file = find_config_flag(argc, argv, help_or_version);
    config_file_result file;
    if (!cfg.config_file.empty() && !help_or_version) {
        file = load_config_file(cfg.config_file, cfg);
        if (!file.errors.empty()) {
            for (const std::string& e : file.errors) {
                std::fprintf(stderr, "wsgate: %s\n", e.c_str());
            }
            std::fprintf(stderr, "wsgate: %zu error%s in %s\n", file.errors.size(),
                         file.errors.size() == 1 ? "" : "s", cfg.config_file.c_str());
            return 2;
        }
    }

    CLI::App app{"wsgate: a thread-per-core io_uring WebSocket gateway.\n"
                 "Every option below has a key in the TOML file given with --config; flags override the file.",
                 "wsgate"};
    app.set_version_flag("--version", std::string("wsgate ") + WSGATE_VERSION);
    app.add_option("--config", cfg.config_file, "TOML configuration file (see systemd/wsgate.toml)");
    bool check_config = false;
    bool print_config = false;
    app.add_flag("--check-config", check_config, "validate the configuration (file and flags), then exit");
    app.add_flag("--print-config", print_config,
                 "print the effective configuration as TOML (secrets redacted), then exit");

    // One CLI11 option per table entry; enums go through a string and are set after parsing.
    std::vector<CLI::Option*> flags;
    std::vector<std::string> choice_text(options().size());
    for (size_t i = 0; i < options().size(); ++i) {
        const option_spec& o = options()[i];
        std::string flag(o.flag);
        std::string help = std::string(o.help) + " [" + std::string(o.key) + "]";
        CLI::Option* opt = std::visit(
            [&](auto member) -> CLI::Option* {
                using T = std::decay_t<decltype(cfg.*member)>;
                if constexpr (std::is_same_v<T, bool>) {
                    return app.add_flag(flag + ",!--no-" + flag_name_without_dashes(o.flag), cfg.*member, help);
                } else if constexpr (std::is_same_v<T, unsigned> || std::is_same_v<T, uint64_t>) {
                    return app.add_option(flag, cfg.*member, help)
                        ->capture_default_str()
                        ->check(CLI::Range(static_cast<T>(o.min), static_cast<T>(o.max)));
                } else if constexpr (std::is_same_v<T, std::string>) {
                    auto* p = app.add_option(flag, cfg.*member, help);
                    return o.secret ? p : p->capture_default_str();
                } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
                    return app.add_option(flag, cfg.*member, help);
                } else {
                    choice_text[i] = std::string(o.choices[static_cast<size_t>(cfg.*member)]);
                    std::vector<std::string> names(o.choices.begin(), o.choices.end());
                    return app.add_option(flag, choice_text[i], help)
                        ->capture_default_str()
                        ->check(CLI::IsMember(names));
                }
            },
            o.target);
        flags.push_back(opt);
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // Prints help/version (exit 0) or the error naming the flag: exit 2 for every
        // kind of bad command line (CLI11's own codes vary by error class).
        return app.exit(e) == 0 ? 0 : 2;
    }
    for (size_t i = 0; i < options().size(); ++i) {
        const option_spec& o = options()[i];
        if (flags[i]->count() == 0) {
            continue;
        }
        std::visit(
            [&](auto member) {
                using T = std::decay_t<decltype(cfg.*member)>;
                if constexpr (std::is_enum_v<T>) {
                    for (size_t c = 0; c < o.choices.size(); ++c) {
                        if (o.choices[c] == choice_text[i]) {
                            cfg.*member = static_cast<T>(c);
                        }
                    }
                }
            },
            o.target);
    }
    // Where a value came from, for errors found below: the flag, or FILE:LINE: key.
    auto where = [&](std::string_view key) -> std::string {
        for (size_t i = 0; i < options().size(); ++i) {
            if (options()[i].key == key && flags[i]->count() > 0) {
                return std::string(options()[i].flag);
            }
        }
        if (auto it = file.lines.find(std::string(key)); it != file.lines.end()) {
            return cfg.config_file + ":" + std::to_string(it->second) + ": " + std::string(key);
        }
        return std::string(key);
    };
    if (int rc = finish_config(cfg, where); rc >= 0) {
        return rc;
    }
    if (print_config) {
        std::fputs(effective_config_toml(cfg).c_str(), stdout);
        return 0;
    }
    if (check_config) {
        std::fprintf(stderr, "wsgate: configuration OK%s%s\n", cfg.config_file.empty() ? "" : " (",
                     cfg.config_file.empty() ? "" : (cfg.config_file + ")").c_str());
        return 0;
    }
    return -1;
}

std::string effective_config_toml(const config& cfg) {
    std::string out = "# wsgate effective configuration: defaults < --config file < flags; secrets redacted.\n";
    std::string section;
    for (const option_spec& o : options()) {
        auto dot = o.key.find('.');
        std::string sec = dot == std::string_view::npos ? "" : std::string(o.key.substr(0, dot));
        std::string name(dot == std::string_view::npos ? o.key : o.key.substr(dot + 1));
        if (sec != section) {
            out += "\n[" + sec + "]\n";
            section = sec;
        }
        out += name + " = " + option_value_toml(o, cfg) + "  # " + std::string(o.flag) + "\n";
    }
    return out;
}

int finish_config(config& cfg, const std::function<std::string(std::string_view)>& where) {
    if ((cfg.recv_buffers & (cfg.recv_buffers - 1)) != 0) {
        std::fprintf(stderr, "wsgate: %s: %u is not a power of two\n", where("io.recv_buffers").c_str(),
                     cfg.recv_buffers);
        return 2;
    }
    if (cfg.idle_timeout_s && cfg.ping_interval_s && cfg.idle_timeout_s < cfg.ping_interval_s) {
        std::fprintf(stderr, "wsgate: %s: %u s is shorter than the ping interval (%u s); idleness is checked once "
                     "per ping interval\n", where("heartbeat.idle_timeout_s").c_str(), cfg.idle_timeout_s,
                     cfg.ping_interval_s);
        return 2;
    }
    if (auto err = parse_listen(cfg.listen, cfg); !err.empty()) {
        std::fprintf(stderr, "wsgate: %s: %s\n", where("listen").c_str(), err.c_str());
        return 2;
    }
    if (cfg.server_id.empty()) {
        char host[256] = {};
        gethostname(host, sizeof(host) - 1);
        std::string id;
        for (char ch : std::string_view(host).substr(0, backplane::max_server_id_bytes - 8)) {
            id += backplane::valid_server_id(std::string_view(&ch, 1)) ? ch : '-';
        }
        cfg.server_id = id + "-" + std::to_string(getpid());
    }
    if (!backplane::valid_server_id(cfg.server_id)) {
        std::fprintf(stderr, "wsgate: %s: '%s' must be 1-64 bytes of A-Z a-z 0-9 . _ -\n",
                     where("server_id").c_str(), cfg.server_id.c_str());
        return 2;
    }
    if (!cfg.redis_url.empty()) {
        backplane::redis_endpoint ep;
        std::string err;
        if (!backplane::parse_redis_url(cfg.redis_url, ep, err)) {
            std::fprintf(stderr, "wsgate: %s: %s\n", where("redis.url").c_str(), err.c_str());
            return 2;
        }
        cfg.redis_cluster = ep.cluster;
        cfg.redis_port = ep.port;
        cfg.redis_user = ep.user;
        cfg.redis_password = ep.password;
        cfg.redis_db = ep.db;
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        std::string port = std::to_string(ep.port);
        if (int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res) {
            std::fprintf(stderr, "wsgate: %s: cannot resolve %s: %s\n", where("redis.url").c_str(), ep.host.c_str(),
                         gai_strerror(rc));
            return 2;
        }
        std::memcpy(&cfg.redis_addr, res->ai_addr, res->ai_addrlen);
        // The seed's address as text (cluster nodes announce IP literals; an
        // empty announced host means "the one you asked").
        char text[INET6_ADDRSTRLEN] = {};
        const void* a = res->ai_family == AF_INET6
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr);
        inet_ntop(res->ai_family, a, text, sizeof(text));
        cfg.redis_host = text;
        cfg.redis_addr_len = static_cast<socklen_t>(res->ai_addrlen);
        freeaddrinfo(res);
    }
    return -1;
}

}  // namespace wsgate::core
