#!/usr/bin/env bash
# run_backplane.sh — fan-out across a fleet: two gateways behind one Redis against one gateway alone,
# for wsgate and for the seed design on Node (node-rooms.mjs --redis: node-redis, as in the seed).
#
# Per server family F (wsgate, node), on the same server CPUs:
#   single  one F process: flat out (K publications in flight per room) -> its maximum rate R.
#   fleet   redis-server + F "A" + F "B" pinned together: publishers connect to A, subscribers to B
#           (wsgate-bench fanout --publish-url), so every delivery crossed Redis. A's acks do not
#           wait for B, so a flat-out run would only measure A; the fleet is driven open-loop at
#           fractions of R instead, and its sustained rate is the highest one delivered in full
#           (>= 95 % of the target deliveries/s, nothing lost; with --p99-max also p99 under it).
# Reported: deliveries/s and deliveries per server-CPU second (A + B + Redis summed for the fleet),
# p50/p99, Redis PUBLISH commands per publication and all Redis commands per publication (INFO
# around each run: joins, presence and subscriptions of the run's connections included),
# fleet/single ratios.
#
# Usage: bench/run_backplane.sh [options] [BUILD_DIR]      (BUILD_DIR: build/release)
#   --quick             smoke test: wsgate only, 1x100, 1 s runs, fractions "0.3 0.6"
#   --servers LIST      comma list of wsgate,node (default both)
#   --layouts "RxS ..." rooms x subscribers per room (default "1x1000 100x100")
#   --size B            publication size in bytes (default 16)
#   --inflight K        single-node flat-out window per room (default 32)
#   --fractions "F ..." fleet rates as fractions of the single node's maximum (default "0.5 0.7 0.85 1.0")
#   --p99-max MS        also require p99 <= MS for the sustained rate (default: no bound)
#   --duration S        measured seconds per run (default 4)
#   --warmup S          warmup seconds per run (default 1)
#   --server-cpus LIST  CPUs for every server process (default 0 on <= 3 CPUs, else the lower half)
#   --client-cpus LIST  CPUs for wsgate-bench (default the other CPUs)
#   --out DIR           where logs and results.jsonl go (default: a new temp dir)
# Environment: WSGATE_BIN, BENCH_BIN, NODE_BIN, REDIS_BIN, BASE_PORT (default 18300),
#   WSGATE_ARGS (default "--rate-limit 0 --max-rooms-per-conn 1000").
# Exit status: 0 if every run succeeded, 1 if any failed, 2 on setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVERS=wsgate,node
LAYOUTS="1x1000 100x100"
SIZE=16
INFLIGHT=32
FRACTIONS="0.5 0.7 0.85 1.0"
P99_MAX=0
DURATION=4
WARMUP=1
SERVER_CPUS=""
CLIENT_CPUS=""
OUT_DIR=""
BUILD_DIR=""
WSGATE_ARGS=${WSGATE_ARGS:---rate-limit 0 --max-rooms-per-conn 1000}

die() { echo "run_backplane.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) SERVERS=wsgate; LAYOUTS="1x100"; DURATION=1; WARMUP=0.3; FRACTIONS="0.3 0.6"; shift ;;
    --servers) SERVERS=${2:?}; shift 2 ;;
    --layouts) LAYOUTS=${2:?}; shift 2 ;;
    --size) SIZE=${2:?}; shift 2 ;;
    --inflight) INFLIGHT=${2:?}; shift 2 ;;
    --fractions) FRACTIONS=${2:?}; shift 2 ;;
    --p99-max) P99_MAX=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --server-cpus) SERVER_CPUS=${2:?}; shift 2 ;;
    --client-cpus) CLIENT_CPUS=${2:?}; shift 2 ;;
    --out) OUT_DIR=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done

BUILD_DIR=${BUILD_DIR:-build/release}
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
WSGATE_BIN=${WSGATE_BIN:-$BUILD_DIR/wsgate}
BENCH_BIN=${BENCH_BIN:-$BUILD_DIR/bench/wsgate-bench}
NODE_BIN=${NODE_BIN:-node}
REDIS_BIN=${REDIS_BIN:-redis-server}
BASE_PORT=${BASE_PORT:-18300}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/wsgate-backplane.XXXXXX)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
default_cpus
THREADS=$(taskset -c "$SERVER_CPUS" nproc)
CLIENT_THREADS=$(taskset -c "$CLIENT_CPUS" nproc)

command -v taskset >/dev/null || die "taskset not found (util-linux)"
command -v "$REDIS_BIN" >/dev/null || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"
[[ -x "$BENCH_BIN" ]] || die "load generator not found at $BENCH_BIN (cmake --build $BUILD_DIR --target wsgate-bench)"
IFS=',' read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case "$s" in
    wsgate) [[ -x "$WSGATE_BIN" ]] || die "wsgate not found at $WSGATE_BIN" ;;
    node)
      command -v "$NODE_BIN" >/dev/null || die "node not found (set NODE_BIN or use --servers wsgate)"
      if [[ ! -d "$ROOT/bench/peers/node_modules/redis" ]]; then
        echo "run_backplane.sh: installing the Node peer's dependencies (npm ci --prefix bench/peers)" >&2
        npm ci --prefix "$ROOT/bench/peers" --prefer-offline --no-audit --no-fund >&2 ||
          die "npm ci --prefix bench/peers failed (no network and no npm cache?)"
      fi ;;
    *) die "unknown server '$s' (wsgate, node)" ;;
  esac
done

# start FAMILY NAME PORT [REDIS_PORT]: one server process, pinned to the server CPUs.
start() {
  local family=$1 name=$2 port=$3 redis=${4:-} extra
  read -r -a extra <<< "$WSGATE_ARGS"
  case "$family" in
    wsgate) launch_server "$name" "$port" taskset -c "$SERVER_CPUS" "$WSGATE_BIN" --listen "127.0.0.1:$port" \
              --threads "$THREADS" "${extra[@]}" ${redis:+--redis "redis://127.0.0.1:$redis" --server-id "$name"} ;;
    node) launch_server "$name" "$port" taskset -c "$SERVER_CPUS" "$NODE_BIN" "$ROOT/bench/peers/node-rooms.mjs" \
            "$port" 127.0.0.1 ${redis:+--redis "redis://127.0.0.1:$redis"} ;;
  esac
}

rstat() { # rstat PORT FIELD -> a number from INFO
  redis-cli -p "$1" INFO all | tr -d '\r' | sed -n "s/^$2:\([0-9]*\).*/\1/p" | head -n 1
}

FAILED=0
LAST_OUT=""
# bench TAG ARGS...: one wsgate-bench fanout run; JSON into results.jsonl and LAST_OUT.
bench() {
  local tag=$1 rc limit
  shift
  local cmd=(taskset -c "$CLIENT_CPUS" "$BENCH_BIN" fanout --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP"
             --drain 2 --threads "$CLIENT_THREADS" --cpus "$CLIENT_CPUS" --user-param --json "$@")
  echo "   [$tag] ${cmd[*]}" >&2
  limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 150 }')
  set +e
  LAST_OUT=$(timeout "$limit" "${cmd[@]}" 2>>"$OUT_DIR/bench.stderr")
  rc=$?
  set -e
  [[ -z "$LAST_OUT" ]] || echo "{\"tag\":\"$tag\",${LAST_OUT#\{}" >> "$RESULTS"
  if [[ $rc -ne 0 ]]; then
    echo "   FAILED (exit $rc): $(echo "$LAST_OUT" | json_field first_problem)" >&2
    return 1
  fi
}

ROWS=()
SUMMARY=()
declare -A SUST
port=$BASE_PORT
for family in "${SERVER_LIST[@]}"; do
  for layout in $LAYOUTS; do
    rooms=${layout%x*}; subs=${layout#*x}
    # --- single node, flat out
    port=$((port + 4))
    start "$family" "$family-single" "$port"
    if ! bench "$family single $layout" --url "ws://127.0.0.1:$port/ws" --rooms "$rooms" --subscribers "$subs" \
         --inflight "$INFLIGHT" --pid "${PID[$family-single]}"; then
      FAILED=1; stop_servers; continue
    fi
    s_pps=$(echo "$LAST_OUT" | json_field publications_per_s)
    s_dps=$(echo "$LAST_OUT" | json_field deliveries_per_s)
    s_core=$(echo "$LAST_OUT" | json_field deliveries_per_server_cpu_s)
    s_p99=$(echo "$LAST_OUT" | json_field latency_us_p99)
    echo "   single: $s_dps deliveries/s, $s_core per core, p99 $s_p99 us" >&2
    stop_servers
    # --- fleet: Redis + A + B
    rport=$((port + 1))
    launch_server "redis" "$rport" taskset -c "$SERVER_CPUS" "$REDIS_BIN" --port "$rport" --bind 127.0.0.1 \
      --save "" --appendonly no
    start "$family" "$family-A" "$((port + 2))" "$rport"
    start "$family" "$family-B" "$((port + 3))" "$rport"
    pids="${PID[$family-A]},${PID[$family-B]},${PID[redis]}"
    best=""
    for f in $FRACTIONS; do
      rate=$(awk -v r="$s_pps" -v f="$f" 'BEGIN { v = r * f; if (v < 1) v = 1; printf "%d", v }')
      redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
      c0=$(rstat "$rport" total_commands_processed)
      if ! bench "$family fleet $layout x$f" --url "ws://127.0.0.1:$((port + 3))/ws" \
           --publish-url "ws://127.0.0.1:$((port + 2))/ws" --rooms "$rooms" --subscribers "$subs" \
           --rate "$rate" --inflight $((INFLIGHT * 4)) --settle 0.5 --pid "$pids"; then
        FAILED=1; continue
      fi
      c1=$(rstat "$rport" total_commands_processed)
      npub=$(redis-cli -p "$rport" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_publish:calls=\([0-9]*\).*/\1/p')
      dps=$(echo "$LAST_OUT" | json_field deliveries_per_s)
      core=$(echo "$LAST_OUT" | json_field deliveries_per_server_cpu_s)
      p50=$(echo "$LAST_OUT" | json_field latency_us_p50)
      p99=$(echo "$LAST_OUT" | json_field latency_us_p99)
      lost=$(echo "$LAST_OUT" | json_field lost)
      pubs=$(echo "$LAST_OUT" | json_field publications_total)
      cpp=$(awk -v a="$c0" -v b="$c1" -v p="$pubs" 'BEGIN { if (p > 0) printf "%.2f", (b - a) / p; else print "n/a" }')
      ppp=$(awk -v n="${npub:-0}" -v p="$pubs" 'BEGIN { if (p > 0) printf "%.2f", n / p; else print "n/a" }')
      ok=$(awk -v d="$dps" -v r="$rate" -v s="$subs" -v q="$p99" -v m="$P99_MAX" -v l="$lost" \
             'BEGIN { print (d >= 0.95 * r * s && (m == 0 || q <= m * 1000) && l == 0) ? "yes" : "no" }')
      echo "   fleet x$f ($rate pub/s): $dps deliveries/s, $core per core, p50 $p50 us, p99 $p99 us," \
           "lost $lost, $ppp PUBLISH and $cpp Redis commands/publication, sustained: $ok" >&2
      ROWS+=("| $family | $layout | $f | $rate | $dps | $core | $(awk -v u="$p50" 'BEGIN{printf "%.2f", u/1000}') | $(awk -v u="$p99" 'BEGIN{printf "%.2f", u/1000}') | $ppp | $cpp | $ok |")
      [[ "$ok" == yes ]] && best="$dps $core $p99 $f"
    done
    stop_servers
    if [[ -n "$best" ]]; then
      read -r b_dps b_core b_p99 b_f <<< "$best"
      SUMMARY+=("| $family | $layout | $s_dps | $s_core | $b_dps (x$b_f) | $b_core | $(awk -v a="$b_dps" -v b="$s_dps" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$b_core" -v b="$s_core" 'BEGIN{printf "%.2f", a/b}') |")
      SUST["$family,$layout"]=$b_core
    else
      SUMMARY+=("| $family | $layout | $s_dps | $s_core | none sustained | n/a | n/a | n/a |")
    fi
  done
done

echo
echo "Fan-out across two gateways and one Redis vs one gateway: servers on CPUs $SERVER_CPUS ($THREADS thread(s) each), wsgate-bench on CPUs $CLIENT_CPUS, $SIZE B, ${DURATION}s per run (+${WARMUP}s warmup). Fleet CPU = gateway A + gateway B + redis-server."
echo
echo "| server | rooms x subs | fraction | publications/s | deliveries/s | deliveries/s per core | p50 ms | p99 ms | PUBLISH/publication | Redis commands/publication | sustained |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Sustained fleet rate (the highest delivered in full$([[ $P99_MAX == 0 ]] || echo " with p99 <= $P99_MAX ms")) against the single node flat out:"
echo
echo "| server | rooms x subs | single deliveries/s | single per core | fleet deliveries/s | fleet per core | fleet/single deliveries | fleet/single per core |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${SUMMARY[@]}"
for layout in $LAYOUTS; do
  w=${SUST["wsgate,$layout"]:-}; n=${SUST["node,$layout"]:-}
  if [[ -n "$w" && -n "$n" ]]; then
    echo
    echo "$layout: wsgate fleet / Node fleet per core = $(awk -v a="$w" -v b="$n" 'BEGIN{printf "%.1f", a/b}')x"
  fi
done
echo "Results: $RESULTS" >&2
exit $FAILED
