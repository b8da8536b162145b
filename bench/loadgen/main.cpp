// main.cpp — wsgate-bench command line: parses flags (CLI11) and runs one
// scenario. See bench/README.md for the scenarios and what they measure.
#include "scenarios.h"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>

namespace {

void add_common(CLI::App& cmd, wsbench::common_options& o, bool with_threads,
                const char* default_url = nullptr) {
    if (default_url != nullptr) {
        o.url = default_url;
        cmd.add_option("--url", o.url, "ws://host:port/path[?query]")->capture_default_str();
    } else {
        cmd.add_option("--url", o.url, "ws://host:port/path (tcp://host:port also accepted with --raw)")
            ->required();
    }
    if (with_threads) {
        cmd.add_option("--threads", o.threads, "load generator threads (one io_uring each)")
            ->check(CLI::Range(1u, 256u));
    }
    cmd.add_option("--cpu,--cpus", o.cpus, "pin load generator thread(s) to these CPUs, e.g. 1 or 2,3");
    cmd.add_option("--source-addrs", o.source_addrs,
                   "comma-separated IPv4 source addresses to spread connections over "
                   "(each gives ~28k ports per destination)");
    cmd.add_option("--connect-timeout", o.connect_timeout_s, "seconds allowed for connect + upgrade")
        ->check(CLI::PositiveNumber);
    cmd.add_option("--connect-concurrency", o.connect_concurrency,
                   "connects + upgrades in flight per thread (batch size)")
        ->check(CLI::Range(1u, 100000u));
    cmd.add_flag("--json", o.json, "print one JSON object");
    cmd.add_flag("--no-fixed-files", o.no_fixed_files,
                 "name sockets by fd in SQEs instead of registered file slots");
}

} // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"wsgate-bench: io_uring WebSocket (RFC 6455) load generator"};
    app.require_subcommand(1);

    wsbench::echo_options echo;
    auto* echo_cmd = app.add_subcommand("echo", "closed-loop echo throughput and latency");
    add_common(*echo_cmd, echo, true);
    echo_cmd->add_option("--connections,-c", echo.connections, "connections (all threads)")
        ->check(CLI::Range(1u, 10'000'000u));
    echo_cmd->add_option("--size,-s", echo.size, "payload bytes per message (>= 8)")
        ->check(CLI::Range(size_t{8}, size_t{64} << 20));
    echo_cmd->add_option("--duration,-d", echo.duration_s, "measured seconds")
        ->check(CLI::PositiveNumber);
    echo_cmd->add_option("--warmup", echo.warmup_s, "seconds of traffic before measuring")
        ->check(CLI::NonNegativeNumber);
    echo_cmd->add_option("--inflight,-k", echo.inflight, "messages in flight per connection")
        ->check(CLI::Range(1u, 1'000'000u));
    echo_cmd->add_flag("--raw", echo.raw, "plain TCP echo of fixed-size messages, no WebSocket");
    echo_cmd->add_flag("--binary", echo.binary, "binary frames instead of text");
    echo_cmd->add_option("--pid", echo.pid, "server PID: also report its CPU % and RSS");

    wsbench::idle_options idle;
    auto* idle_cmd = app.add_subcommand("idle", "server RSS per idle WebSocket connection");
    add_common(*idle_cmd, idle, false);
    idle_cmd->add_option("--connections,-c", idle.connections, "connections to open")
        ->check(CLI::Range(1u, 10'000'000u));
    idle_cmd->add_option("--pid", idle.pid, "server PID (reads /proc/PID/status)")->required();
    idle_cmd->add_option("--hold", idle.hold_s, "seconds to hold them open before measuring")
        ->check(CLI::NonNegativeNumber);

    wsbench::handshake_options hs;
    auto* hs_cmd = app.add_subcommand("handshake", "connect + upgrade + close cycles per second");
    add_common(*hs_cmd, hs, false);
    hs_cmd->add_option("--duration,-d", hs.duration_s, "measured seconds")->check(CLI::PositiveNumber);
    hs_cmd->add_option("--warmup", hs.warmup_s, "seconds before measuring")
        ->check(CLI::NonNegativeNumber);
    hs_cmd->add_option("--concurrency", hs.concurrency, "cycles in flight")
        ->check(CLI::Range(1u, 100000u));

    wsbench::fanout_options fan;
    auto* fan_cmd = app.add_subcommand("fanout", "room fan-out: deliveries/s and publish -> delivery latency");
    add_common(*fan_cmd, fan, true, "ws://127.0.0.1:8080/ws");
    fan_cmd->add_option("--rooms,-r", fan.rooms, "rooms r0..r<N-1>")->check(CLI::Range(1u, 1'000'000u));
    fan_cmd->add_option("--subscribers,-S", fan.subscribers, "subscriber connections per room")
        ->check(CLI::Range(1u, 10'000'000u));
    fan_cmd->add_option("--publishers,-P", fan.publishers, "publisher connections per room")
        ->check(CLI::Range(1u, 65'536u));
    fan_cmd->add_option("--size,-s", fan.size, "bytes of each publication's data string (>= 16)")
        ->check(CLI::Range(size_t{16}, size_t{16} << 20));
    auto* inflight_opt =
        fan_cmd->add_option("--inflight,-k", fan.inflight,
                            "publications in flight per room, flat out (sent, not yet acked); "
                            "with --rate a cap (default then 65536)")
            ->check(CLI::Range(1u, 1'000'000u));
    fan_cmd->add_option("--rate", fan.rate, "publications/s over all publishers; 0 = flat out")
        ->check(CLI::NonNegativeNumber);
    fan_cmd->add_option("--duration,-d", fan.duration_s, "measured seconds")->check(CLI::PositiveNumber);
    fan_cmd->add_option("--warmup", fan.warmup_s, "seconds of traffic before measuring")
        ->check(CLI::NonNegativeNumber);
    fan_cmd->add_option("--drain", fan.drain_s,
                        "after the window, wait for the last acks and deliveries until nothing "
                        "arrived for this many seconds (hard limit 30 + 10x)")
        ->check(CLI::NonNegativeNumber);
    fan_cmd->add_option("--pid", fan.pids,
                        "server PID(s), comma-separated: also report their CPU % and RSS (summed)")
        ->delimiter(',');
    fan_cmd->add_option("--publish-url", fan.publish_url,
                        "publishers connect here, subscribers to --url (fan-out across gateways)");
    fan_cmd->add_option("--settle", fan.settle_s,
                        "seconds to wait after every member joined, before traffic (backplane subscriptions)")
        ->check(CLI::NonNegativeNumber);
    fan_cmd->add_flag("--user-param", fan.user_param,
                      "append user=u<N> to each connection's URL (distinct users in anonymous mode)");
    fan_cmd->add_option("--token", fan.token, "append token=TOKEN to every connection's URL");
    fan_cmd->add_flag("--deflate", fan.deflate,
                      "offer permessage-deflate (no context takeover) and inflate compressed pushes; "
                      "reports received bytes per frame");
    fan_cmd->add_flag("--text-payload", fan.text_payload,
                      "fill publications with text that compresses like JSON (~3x) instead of a..z (~20x)");

    std::vector<std::string> headers;
    idle_cmd->add_option("--header", headers,
                         "extra upgrade request header, repeatable "
                         "(e.g. 'Sec-WebSocket-Extensions: permessage-deflate')");

    CLI11_PARSE(app, argc, argv);
    fan.inflight_given = inflight_opt->count() > 0;
    std::string lines;
    for (const std::string& h : headers) {
        lines += h + "\r\n";
    }
    if (fan_cmd->parsed() && fan.deflate) {
        lines += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    }
    wsbench::set_extra_request_headers(lines);

    try {
        if (echo_cmd->parsed()) {
            return wsbench::run_echo(echo);
        }
        if (idle_cmd->parsed()) {
            return wsbench::run_idle(idle);
        }
        if (hs_cmd->parsed()) {
            return wsbench::run_handshake(hs);
        }
        if (fan_cmd->parsed()) {
            return wsbench::run_fanout(fan);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "wsgate-bench: %s\n", e.what());
        return 2;
    }
    return 2;
}
