#!/usr/bin/env bash
# run_fanout.sh — room fan-out matrix: wsgate vs the seed design (Node ws, rooms in process).
#
# Builds nothing. Starts wsgate and bench/peers/node-rooms.mjs pinned to the server CPUs
# (taskset), drives them with `wsgate-bench fanout` pinned to the client CPUs, runs
# {room layouts} x {sizes} x {in-flight windows} flat out on every server in interleaved
# rounds, then a latency run per layout and size at a fixed publication rate: half of
# wsgate's measured maximum (and half of Node's). Prints markdown tables of medians.
# Raw JSON results go to $OUT_DIR/results.jsonl (one object per run).
#
# Usage: bench/run_fanout.sh [options] [BUILD_DIR]      (BUILD_DIR: build/release)
#   --quick               smoke test: 1 room x 100 subscribers, 16 B, K=32, 1 s runs, 1 round
#   --duration S          measured seconds per run (default 5)
#   --warmup S            warmup seconds per run (default 1)
#   --drain S             wsgate-bench --drain: give up after S quiet seconds (default 3)
#   --repeat R            interleaved rounds; the tables show medians (default 3)
#   --servers LIST        comma list of wsgate,node (default both)
#   --layouts "RxS ..."   rooms x subscribers per room (default "1x1000 100x100")
#   --publishers P        publishers per room (default 1)
#   --sizes "A B"         publication sizes in bytes, >= 16 (default "16 1024")
#   --inflight "K ..."    publications in flight per room, flat out (default "32 1")
#   --no-latency          skip the fixed-rate latency runs
#   --latency-from LIST   whose flat-out maximum sets the latency runs' rates (default wsgate,node)
#   --query Q             extra URL query for every connection, e.g. batch=1
#   --server-cpus LIST    CPUs for the servers (default 0 on <= 3 CPUs, else the lower half)
#   --client-cpus LIST    CPUs for wsgate-bench (default the other CPUs)
#   --wsgate-threads N    wsgate --threads (default: number of server CPUs)
#   --client-threads N    wsgate-bench --threads (default: number of client CPUs)
#   --out DIR             where logs and results.jsonl go (default: a new temp dir)
# Environment overrides: WSGATE_BIN, BENCH_BIN, NODE_BIN, BASE_PORT (default 18100), and
#   WSGATE_ARGS (default "--rate-limit 0 --max-rooms-per-conn 1000"): wsgate's flags after
#   --listen and --threads; change it if the gateway's flags change.
# Exit status: 0 if every run succeeded, 1 if any failed, 2 on setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=5
WARMUP=1
DRAIN=3
REPEAT=3
SERVERS=wsgate,node
LAYOUTS="1x1000 100x100"
PUBLISHERS=1
SIZES="16 1024"
INFLIGHTS="32 1"
LATENCY=1
LATENCY_FROM=wsgate,node
QUERY=""
SERVER_CPUS=""
CLIENT_CPUS=""
WSGATE_THREADS=""
CLIENT_THREADS=""
OUT_DIR=""
BUILD_DIR=""
WSGATE_ARGS=${WSGATE_ARGS:---rate-limit 0 --max-rooms-per-conn 1000}

die() { echo "run_fanout.sh: $*" >&2; exit 2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) DURATION=1; WARMUP=0.3; DRAIN=1; REPEAT=1; LAYOUTS="1x100"; SIZES="16"; INFLIGHTS="32"
             LATENCY_FROM=wsgate; shift ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --drain) DRAIN=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --servers) SERVERS=${2:?}; shift 2 ;;
    --layouts) LAYOUTS=${2:?}; shift 2 ;;
    --publishers) PUBLISHERS=${2:?}; shift 2 ;;
    --sizes) SIZES=${2:?}; shift 2 ;;
    --inflight) INFLIGHTS=${2:?}; shift 2 ;;
    --no-latency) LATENCY=0; shift ;;
    --latency-from) LATENCY_FROM=${2:?}; shift 2 ;;
    --query) QUERY=${2:?}; shift 2 ;;
    --server-cpus) SERVER_CPUS=${2:?}; shift 2 ;;
    --client-cpus) CLIENT_CPUS=${2:?}; shift 2 ;;
    --wsgate-threads) WSGATE_THREADS=${2:?}; shift 2 ;;
    --client-threads) CLIENT_THREADS=${2:?}; shift 2 ;;
    --out) OUT_DIR=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done

build_paths
BASE_PORT=${BASE_PORT:-18100}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/wsgate-fanout.XXXXXX)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

# cpu_count LIST -> how many CPUs "0-3,6" names.
cpu_count() {
  local n=0 part lo hi
  IFS=',' read -r -a parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ "$part" == *-* ]]; then
      lo=${part%-*}; hi=${part#*-}; n=$((n + hi - lo + 1))
    elif [[ -n "$part" ]]; then
      n=$((n + 1))
    fi
  done
  echo "$n"
}

default_cpus
WSGATE_THREADS=${WSGATE_THREADS:-$(cpu_count "$SERVER_CPUS")}
CLIENT_THREADS=${CLIENT_THREADS:-$(cpu_count "$CLIENT_CPUS")}
if [[ $NCPU -lt 2 ]]; then
  echo "run_fanout.sh: warning: 1 CPU; server and load generator share it" >&2
fi

command -v taskset >/dev/null || die "taskset not found (util-linux)"
[[ -x "$BENCH_BIN" ]] || die "load generator not found at $BENCH_BIN (cmake --build $BUILD_DIR --target wsgate-bench)"
IFS=',' read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case "$s" in
    wsgate) [[ -x "$WSGATE_BIN" ]] || die "wsgate not found at $WSGATE_BIN (build it, set WSGATE_BIN, or use --servers node)" ;;
    node)
      command -v "$NODE_BIN" >/dev/null || die "node not found (set NODE_BIN or use --servers wsgate)"
      if [[ ! -d "$ROOT/bench/peers/node_modules/ws" ]]; then
        echo "run_fanout.sh: installing the Node peer's dependencies (npm ci --prefix bench/peers)" >&2
        npm ci --prefix "$ROOT/bench/peers" --prefer-offline --no-audit --no-fund >&2 ||
          die "npm ci --prefix bench/peers failed (no network and no npm cache?)"
      fi ;;
    *) die "unknown server '$s' (wsgate, node)" ;;
  esac
done
for layout in $LAYOUTS; do
  [[ "$layout" =~ ^[0-9]+x[0-9]+$ ]] || die "bad layout '$layout' (expected ROOMSxSUBSCRIBERS, e.g. 100x100)"
done

# start_server NAME PORT: starts it pinned, waits until the port accepts.
start_server() {
  local name=$1 port=$2 extra
  case "$name" in
    wsgate) echo "   taskset -c $SERVER_CPUS $WSGATE_BIN --listen 127.0.0.1:$port --threads $WSGATE_THREADS $WSGATE_ARGS" >&2
            read -r -a extra <<< "$WSGATE_ARGS"
            launch_server "$name" "$port" taskset -c "$SERVER_CPUS" "$WSGATE_BIN" --listen "127.0.0.1:$port" \
              --threads "$WSGATE_THREADS" "${extra[@]}" ;;
    node) echo "   taskset -c $SERVER_CPUS $NODE_BIN bench/peers/node-rooms.mjs $port" >&2
          launch_server "$name" "$port" taskset -c "$SERVER_CPUS" "$NODE_BIN" "$ROOT/bench/peers/node-rooms.mjs" "$port" ;;
  esac
}

median() { # median of the numbers given as arguments; FAIL if any is not a number
  local v
  [[ $# -gt 0 ]] || { echo FAIL; return; }
  for v in "$@"; do
    [[ "$v" =~ ^-?[0-9.]+$ ]] || { echo FAIL; return; }
  done
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A PORT
FAILED=0
LAST_OUT=""

# run_bench SERVER TAG ARGS...: one wsgate-bench fanout run; appends its JSON to results.jsonl
# and leaves it in LAST_OUT. Returns 1 if the run failed.
run_bench() {
  local server=$1 tag=$2 url rc limit
  shift 2
  url="ws://127.0.0.1:${PORT[$server]}/ws${QUERY:+?$QUERY}"
  local cmd=(taskset -c "$CLIENT_CPUS" "$BENCH_BIN" fanout --url "$url" --publishers "$PUBLISHERS"
             --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" --threads "$CLIENT_THREADS"
             --cpus "$CLIENT_CPUS" --user-param --pid "${PID[$server]}" --json "$@")
  echo "   [$tag] ${cmd[*]}" >&2
  # Setup of ~10k connections, the window, a drain of up to 30 + 10 x DRAIN, and teardown.
  limit=$(awk -v d="$DURATION" -v w="$WARMUP" -v r="$DRAIN" 'BEGIN { printf "%d", d + w + 10 * r + 120 }')
  set +e
  LAST_OUT=$(timeout "$limit" "${cmd[@]}" 2>>"$OUT_DIR/bench.stderr")
  rc=$?
  set -e
  if [[ -n "$LAST_OUT" ]]; then
    echo "{\"server\":\"$server\",\"tag\":\"$tag\",${LAST_OUT#\{}" >> "$RESULTS"
  fi
  if [[ $rc -ne 0 ]]; then
    FAILED=1
    local err
    err=$(echo "$LAST_OUT" | json_field first_problem)
    [[ -n "$err" ]] || err=$(echo "$LAST_OUT" | json_field first_error)
    echo "   FAILED (exit $rc)${err:+: $err}" >&2
    return 1
  fi
  return 0
}

# Per run we keep: deliveries/s, server CPU %, deliveries/s per server core, p99, client CPU %,
# publications/s. Keys: SERVER,LAYOUT/SIZE/K.
declare -A DPS CPU PERCORE P99 CCPU PPS
port=$BASE_PORT
for server in "${SERVER_LIST[@]}"; do
  port=$((port + 1))
  PORT[$server]=$port
  start_server "$server" "$port"
  echo "== $server (pid ${PID[$server]}, CPUs $SERVER_CPUS) on port $port" >&2
done
echo "== wsgate-bench on CPUs $CLIENT_CPUS, $CLIENT_THREADS thread(s)" >&2

for round in $(seq 1 "$REPEAT"); do
  for layout in $LAYOUTS; do
    rooms=${layout%x*}; subs=${layout#*x}
    for size in $SIZES; do
      for k in $INFLIGHTS; do
        key="$layout/$size/$k"
        for server in "${SERVER_LIST[@]}"; do
          k_room=$k
          [[ $k_room -ge $PUBLISHERS ]] || k_room=$PUBLISHERS
          if run_bench "$server" "round $round $key" --rooms "$rooms" --subscribers "$subs" --size "$size" \
               --inflight "$k_room"; then
            DPS[$server,$key]+=" $(echo "$LAST_OUT" | json_field deliveries_per_s)"
            CPU[$server,$key]+=" $(echo "$LAST_OUT" | json_field server_cpu_pct)"
            PERCORE[$server,$key]+=" $(echo "$LAST_OUT" | json_field deliveries_per_server_cpu_s)"
            P99[$server,$key]+=" $(echo "$LAST_OUT" | json_field latency_us_p99)"
            CCPU[$server,$key]+=" $(echo "$LAST_OUT" | json_field client_cpu_pct)"
            PPS[$server,$key]+=" $(echo "$LAST_OUT" | json_field publications_per_s)"
            echo "   $(echo "$LAST_OUT" | json_field deliveries_per_s) deliveries/s," \
                 "server CPU $(echo "$LAST_OUT" | json_field server_cpu_pct) %," \
                 "client CPU $(echo "$LAST_OUT" | json_field client_cpu_pct) %," \
                 "p99 $(echo "$LAST_OUT" | json_field latency_us_p99) us" >&2
          else
            DPS[$server,$key]+=" FAIL"; CPU[$server,$key]+=" FAIL"; PERCORE[$server,$key]+=" FAIL"
            P99[$server,$key]+=" FAIL"; CCPU[$server,$key]+=" FAIL"; PPS[$server,$key]+=" FAIL"
          fi
        done
      done
    done
  done
done

med() { # med ARRAYNAME KEY -> median of the runs, or empty if there are none
  local -n arr=$1
  local v=${arr[$2]:-}
  [[ -n "$v" ]] || return 0
  # shellcheck disable=SC2086
  median $v
}
ratio() { # ratio A B -> A/B with 2 decimals, or n/a
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
    if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else printf "n/a" }'
}
ms() { # microseconds -> milliseconds, 2 decimals
  awk -v u="${1:-}" 'BEGIN { if (u ~ /^[0-9.]+$/) printf "%.2f", u / 1000; else printf "%s", (u == "" ? "n/a" : u) }'
}
cell() { local v=${1:-}; echo "${v:-n/a}"; }

# Latency: a fixed publication rate, half of the best flat-out rate measured for wsgate (and,
# as a second point, half of Node's), the same rate for both servers. The in-flight cap is the
# largest flat-out window, so an overloaded server is throttled (rate_stalls, achieved < target)
# rather than queueing without bound; stamps are scheduled times, so its latency shows it.
declare -A LRATE LP50 LP99 LACH
K_CAP=1
for k in $INFLIGHTS; do [[ $k -gt $K_CAP ]] && K_CAP=$k; done
[[ $K_CAP -ge $PUBLISHERS ]] || K_CAP=$PUBLISHERS
LAT_BASES=()
if [[ $LATENCY -eq 1 ]]; then
  IFS=',' read -r -a from_list <<< "$LATENCY_FROM"
  for s in "${from_list[@]}"; do
    for t in "${SERVER_LIST[@]}"; do [[ "$s" == "$t" ]] && LAT_BASES+=("$s"); done
  done
  [[ ${#LAT_BASES[@]} -gt 0 ]] || LAT_BASES=("${SERVER_LIST[@]}") # none of them measured: use what was
  for layout in $LAYOUTS; do
    rooms=${layout%x*}; subs=${layout#*x}
    for size in $SIZES; do
      for base in "${LAT_BASES[@]}"; do
        best=""
        for k in $INFLIGHTS; do
          v=$(med PPS "$base,$layout/$size/$k")
          if [[ "$v" =~ ^[0-9.]+$ ]] && awk -v a="$v" -v b="${best:-0}" 'BEGIN { exit !(a > b) }'; then
            best=$v
          fi
        done
        [[ -n "$best" ]] || continue
        rate=$(awk -v b="$best" 'BEGIN { r = b / 2; if (r < 1) r = 1; printf "%d", r }')
        lkey="$layout/$size/$base"
        LRATE[$lkey]=$rate
        for round in $(seq 1 "$REPEAT"); do
          for server in "${SERVER_LIST[@]}"; do
            if run_bench "$server" "latency round $round $lkey" --rooms "$rooms" --subscribers "$subs" \
                 --size "$size" --rate "$rate" --inflight "$K_CAP"; then
              LP50[$server,$lkey]+=" $(echo "$LAST_OUT" | json_field latency_us_p50)"
              LP99[$server,$lkey]+=" $(echo "$LAST_OUT" | json_field latency_us_p99)"
              LACH[$server,$lkey]+=" $(echo "$LAST_OUT" | json_field publications_per_s)"
              echo "   p50 $(echo "$LAST_OUT" | json_field latency_us_p50) us," \
                   "p99 $(echo "$LAST_OUT" | json_field latency_us_p99) us," \
                   "$(echo "$LAST_OUT" | json_field publications_per_s) of $rate publications/s" >&2
            else
              LP50[$server,$lkey]+=" FAIL"; LP99[$server,$lkey]+=" FAIL"; LACH[$server,$lkey]+=" FAIL"
            fi
          done
        done
      done
    done
  done
fi
stop_servers

has() { local s; for s in "${SERVER_LIST[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }

echo
echo "Room fan-out, flat out: servers on CPUs $SERVER_CPUS (wsgate --threads $WSGATE_THREADS), wsgate-bench on CPUs $CLIENT_CPUS ($CLIENT_THREADS thread(s)), $PUBLISHERS publisher(s) per room, ${DURATION}s per run (+${WARMUP}s warmup), median of $REPEAT interleaved rounds${QUERY:+, query ?$QUERY}"
echo "K = publications in flight per room. deliveries/s/core = deliveries/s / server CPU utilisation (100 % = 1 core)."
echo
echo "| rooms x subs | size B | K | wsgate deliveries/s | node deliveries/s | wsgate CPU % | node CPU % | wsgate deliveries/s/core | node deliveries/s/core | wsgate/node per core | p99 ms wsgate | p99 ms node | client CPU % (wsgate run) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for layout in $LAYOUTS; do
  for size in $SIZES; do
    for k in $INFLIGHTS; do
      key="$layout/$size/$k"
      wd=$(med DPS "wsgate,$key"); nd=$(med DPS "node,$key")
      wc=$(med CPU "wsgate,$key"); nc=$(med CPU "node,$key")
      wp=$(med PERCORE "wsgate,$key"); np=$(med PERCORE "node,$key")
      echo "| $layout | $size | $k | $(cell "$wd") | $(cell "$nd") | $(cell "$wc") | $(cell "$nc") | $(cell "$wp") | $(cell "$np") |" \
           "$(ratio "$wp" "$np") | $(ms "$(med P99 "wsgate,$key")") | $(ms "$(med P99 "node,$key")") | $(cell "$(med CCPU "wsgate,$key")") |"
    done
  done
done
if [[ $LATENCY -eq 1 ]]; then
  echo
  echo "Latency at a fixed publication rate (open loop, stamped with the scheduled send time; in-flight cap $K_CAP per room): half of the best flat-out rate of the server named in 'rate from'. 'achieved' below 95 % of the rate means the server could not keep up."
  echo
  echo "| rooms x subs | size B | rate from | publications/s | deliveries/s | wsgate p50 ms | wsgate p99 ms | wsgate achieved | node p50 ms | node p99 ms | node achieved |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for layout in $LAYOUTS; do
    subs=${layout#*x}
    for size in $SIZES; do
      for base in "${LAT_BASES[@]}"; do
        lkey="$layout/$size/$base"
        rate=${LRATE[$lkey]:-}
        [[ -n "$rate" ]] || continue
        row="| $layout | $size | $base | $rate | $((rate * subs))"
        for server in wsgate node; do
          if has "$server"; then
            row+=" | $(ms "$(med LP50 "$server,$lkey")") | $(ms "$(med LP99 "$server,$lkey")") | $(cell "$(med LACH "$server,$lkey")")"
          else
            row+=" | n/a | n/a | n/a"
          fi
        done
        echo "$row |"
      done
    done
  done
fi
echo
echo "Results: $RESULTS" >&2
exit $FAILED
