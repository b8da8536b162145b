#!/usr/bin/env bash
# run_echo.sh — echo matrix: wsgate vs the raw io_uring echo ceiling vs Node ws.
#
# Builds nothing. Starts each server pinned to one CPU (taskset), drives it
# with wsgate-bench pinned to another, runs {connections} x {sizes}, stops the
# server, and prints a markdown table of messages/s, ratios and p99 latency.
# Raw JSON results go to $OUT_DIR/results.jsonl (one object per run).
#
# Usage: bench/run_echo.sh [options] [BUILD_DIR]        (BUILD_DIR: build/release)
#   --quick               2 s per run, 0.5 s warmup, 1 round (smoke test)
#   --duration S          measured seconds per run (default 5)
#   --repeat R            interleaved rounds; the table shows medians (default 3)
#   --warmup S            warmup seconds per run (default 1)
#   --servers LIST        comma list of wsgate,raw,node (default all three)
#   --connections "A B"   connection counts (default "100 1000")
#   --sizes "A B"         payload sizes in bytes (default "16 1024")
#   --inflight K          messages in flight per connection (default 1)
#   --server-cpu N        CPU for the server (default 0)
#   --client-cpu N        CPU for the load generator (default 1)
#   --out DIR             where logs and results.jsonl go (default: a new temp dir)
# Environment overrides: WSGATE_BIN, BENCH_BIN, RAW_BIN, NODE_BIN, BASE_PORT (default 18000).
# Exit status: 0 if every run succeeded, 1 if any failed, 2 on setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=5
REPEAT=3
WARMUP=1
SERVERS=wsgate,raw,node
CONNS="100 1000"
SIZES="16 1024"
INFLIGHT=1
SERVER_CPU=0
CLIENT_CPU=1
OUT_DIR=""
BUILD_DIR=""

die() { echo "run_echo.sh: $*" >&2; exit 2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) DURATION=2; WARMUP=0.5; REPEAT=1; shift ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --servers) SERVERS=${2:?}; shift 2 ;;
    --connections) CONNS=${2:?}; shift 2 ;;
    --sizes) SIZES=${2:?}; shift 2 ;;
    --inflight) INFLIGHT=${2:?}; shift 2 ;;
    --server-cpu) SERVER_CPU=${2:?}; shift 2 ;;
    --client-cpu) CLIENT_CPU=${2:?}; shift 2 ;;
    --out) OUT_DIR=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done

build_paths
BASE_PORT=${BASE_PORT:-18000}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/wsgate-echo.XXXXXX)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

command -v taskset >/dev/null || die "taskset not found (util-linux)"
[[ -x "$BENCH_BIN" ]] || die "load generator not found at $BENCH_BIN (cmake --build $BUILD_DIR --target wsgate-bench)"
IFS=',' read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case "$s" in
    wsgate) [[ -x "$WSGATE_BIN" ]] || die "wsgate not found at $WSGATE_BIN (build it, set WSGATE_BIN, or use --servers raw,node)" ;;
    raw) [[ -x "$RAW_BIN" ]] || die "raw-echo-server not found at $RAW_BIN (cmake --build $BUILD_DIR --target raw-echo-server)" ;;
    node)
      command -v "$NODE_BIN" >/dev/null || die "node not found (set NODE_BIN or drop node from --servers)"
      [[ -d "$ROOT/bench/node/node_modules/ws" ]] || die "Node ws missing: run 'npm ci --prefix bench/node'" ;;
    *) die "unknown server '$s' (wsgate, raw, node)" ;;
  esac
done
if [[ $(nproc) -lt 2 ]]; then
  echo "run_echo.sh: warning: fewer than 2 CPUs; server and load generator will share one" >&2
fi


# start_server NAME PORT: starts it pinned, waits until the port accepts.
start_server() {
  local name=$1 port=$2
  case "$name" in
    wsgate) launch_server "$name" "$port" taskset -c "$SERVER_CPU" "$WSGATE_BIN" --listen "127.0.0.1:$port" --threads 1 --echo ;;
    raw) launch_server "$name" "$port" taskset -c "$SERVER_CPU" "$RAW_BIN" --listen "127.0.0.1:$port" ;;
    node) launch_server "$name" "$port" taskset -c "$SERVER_CPU" "$NODE_BIN" "$ROOT/bench/node/echo-server.mjs" "$port" ;;
  esac
}

median() { # median of the numbers given as arguments; FAIL if any is not a number
  local v
  for v in "$@"; do
    [[ "$v" =~ ^[0-9.]+$ ]] || { echo FAIL; return; }
  done
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# All servers run at once, idle ones cost nothing. Each round runs every
# scenario on every server back to back, so slow drifts of this shared machine
# hit all servers alike; the table reports the median over the rounds.
declare -A PORT RUNS P99RUNS RATE P99
FAILED=0
port=$BASE_PORT
for server in "${SERVER_LIST[@]}"; do
  port=$((port + 1))
  PORT[$server]=$port
  start_server "$server" "$port"
  echo "== $server (pid ${PID[$server]}, CPU $SERVER_CPU) on port $port" >&2
done
for round in $(seq 1 "$REPEAT"); do
  for c in $CONNS; do
    for s in $SIZES; do
      key="$c/$s"
      for server in "${SERVER_LIST[@]}"; do
        port=${PORT[$server]}
        case "$server" in
          raw) url="tcp://127.0.0.1:$port"; mode=(--raw) ;;
          *) url="ws://127.0.0.1:$port/echo"; mode=() ;;
        esac
        cmd=(taskset -c "$CLIENT_CPU" "$BENCH_BIN" echo --url "$url" "${mode[@]}" --connections "$c"
             --size "$s" --inflight "$INFLIGHT" --duration "$DURATION" --warmup "$WARMUP"
             --cpu "$CLIENT_CPU" --pid "${PID[$server]}" --json)
        echo "   [round $round] ${cmd[*]}" >&2
        limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 90 }')
        set +e
        out=$(timeout "$limit" "${cmd[@]}" 2>>"$OUT_DIR/bench.stderr")
        rc=$?
        set -e
        if [[ -n "$out" ]]; then
          echo "$out" | sed "s/^{/{\"server\":\"$server\",\"round\":$round,/" >> "$RESULTS"
        fi
        if [[ $rc -ne 0 ]]; then
          FAILED=1
          err=$(echo "$out" | json_field first_error)
          echo "   FAILED (exit $rc) ${err:+: $err}" >&2
          RUNS[$server,$key]+=" FAIL"
          P99RUNS[$server,$key]+=" FAIL"
        else
          rate=$(echo "$out" | json_field msgs_per_s)
          p99=$(echo "$out" | json_field latency_us_p99)
          RUNS[$server,$key]+=" $rate"
          P99RUNS[$server,$key]+=" $p99"
          echo "   $rate msgs/s, p99 $p99 us" >&2
        fi
      done
    done
  done
done
stop_servers
for key in "${!RUNS[@]}"; do
  # shellcheck disable=SC2086
  RATE[$key]=$(median ${RUNS[$key]})
  # shellcheck disable=SC2086
  P99[$key]=$(median ${P99RUNS[$key]})
done

ratio() { # ratio A B -> A/B with 2 decimals, or n/a
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
    if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else printf "n/a" }'
}
cell() { local v=${1:-}; echo "${v:-n/a}"; }

echo
echo "Echo, 1 server thread on CPU $SERVER_CPU, wsgate-bench on CPU $CLIENT_CPU, ${DURATION}s per run (+${WARMUP}s warmup), $INFLIGHT in flight per connection, median of $REPEAT interleaved rounds"
echo
echo "| scenario | wsgate msg/s | raw msg/s | node msg/s | wsgate/raw | wsgate/node | p99 us wsgate | p99 us raw | p99 us node |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $CONNS; do
  for s in $SIZES; do
    key="$c/$s"
    w=${RATE[wsgate,$key]:-}
    r=${RATE[raw,$key]:-}
    n=${RATE[node,$key]:-}
    echo "| $c conns x $s B | $(cell "$w") | $(cell "$r") | $(cell "$n") | $(ratio "$w" "$r") | $(ratio "$w" "$n") |" \
         "$(cell "${P99[wsgate,$key]:-}") | $(cell "${P99[raw,$key]:-}") | $(cell "${P99[node,$key]:-}") |"
  done
done
echo
echo "Results: $RESULTS" >&2
exit $FAILED
