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
#   --nice N            run gateway A and Redis at nice N (default 0). On a box too small to give
#                       every process its own core (A, B and Redis share the server CPUs), the
#                       scheduler's fair share otherwise starves B, the gateway doing the fan-out,
#                       while A and Redis run in many small slices; nice approximates the
#                       deployment shape where they are on other cores. Their CPU still counts.
#   --cluster           the fleet's Redis is a 3-master Redis Cluster (redis-cli --cluster create;
#                       wsgate with redis+cluster://, SPUBLISH/SSUBSCRIBE); Node is skipped (the
#                       seed's design has no cluster mode)
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
CLUSTER=0
NICE=0
DURATION=4
WARMUP=1
SERVER_CPUS=""
CLIENT_CPUS=""
OUT_DIR=""
BUILD_DIR=""
WSGATE_ARGS=${WSGATE_ARGS:---rate-limit 0 --max-rooms-per-conn 1000}

die() { echo "run_backplane.sh: $*" >&2; exit 2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) SERVERS=wsgate; LAYOUTS="1x100"; DURATION=1; WARMUP=0.3; FRACTIONS="0.3 0.6"; shift ;;
    --servers) SERVERS=${2:?}; shift 2 ;;
    --layouts) LAYOUTS=${2:?}; shift 2 ;;
    --size) SIZE=${2:?}; shift 2 ;;
    --inflight) INFLIGHT=${2:?}; shift 2 ;;
    --fractions) FRACTIONS=${2:?}; shift 2 ;;
    --p99-max) P99_MAX=${2:?}; shift 2 ;;
    --cluster) CLUSTER=1; shift ;;
    --nice) NICE=${2:?}; shift 2 ;;
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

build_paths
REDIS_BIN=${REDIS_BIN:-redis-server}
BASE_PORT=${BASE_PORT:-18300}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/wsgate-backplane.XXXXXX)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

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
  local family=$1 name=$2 port=$3 redis=${4:-} niceness=${5:-0} extra
  read -r -a extra <<< "$WSGATE_ARGS"
  case "$family" in
    wsgate) launch_server "$name" "$port" nice -n "$niceness" taskset -c "$SERVER_CPUS" "$WSGATE_BIN" --listen "127.0.0.1:$port" \
              --threads "$THREADS" "${extra[@]}" ${redis:+--redis "$REDIS_SCHEME://127.0.0.1:$redis" --server-id "$name"} ;;
    node) launch_server "$name" "$port" nice -n "$niceness" taskset -c "$SERVER_CPUS" "$NODE_BIN" "$ROOT/bench/peers/node-rooms.mjs" \
            "$port" 127.0.0.1 ${redis:+--redis "redis://127.0.0.1:$redis"} ;;
  esac
}

REDIS_SCHEME=redis
[[ $CLUSTER -eq 0 ]] || REDIS_SCHEME=redis+cluster
REDIS_PORTS=()

# start_redis PORT: one redis-server, or with --cluster three masters on PORT.. joined into a
# cluster; fills REDIS_PORTS.
start_redis() {
  local base=$1 p
  REDIS_PORTS=()
  if [[ $CLUSTER -eq 0 ]]; then
    launch_server redis "$base" nice -n "$NICE" taskset -c "$SERVER_CPUS" "$REDIS_BIN" --port "$base" --bind 127.0.0.1 \
      --save "" --appendonly no
    REDIS_PORTS=("$base")
    return
  fi
  for p in "$base" "$((base + 1))" "$((base + 2))"; do
    mkdir -p "$OUT_DIR/redis-$p"
    rm -f "$OUT_DIR/redis-$p/nodes.conf"
    launch_server "redis-$p" "$p" nice -n "$NICE" taskset -c "$SERVER_CPUS" "$REDIS_BIN" --port "$p" --bind 127.0.0.1 \
      --save "" --appendonly no --cluster-enabled yes --cluster-config-file "$OUT_DIR/redis-$p/nodes.conf"
    REDIS_PORTS+=("$p")
  done
  redis-cli --cluster create "${REDIS_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$OUT_DIR/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed (see $OUT_DIR/cluster-create.log)"
  for _ in $(seq 1 100); do
    redis-cli -p "$base" CLUSTER INFO | grep -q cluster_state:ok && return
    sleep 0.1
  done
  die "the cluster did not converge"
}

redis_pids() { # comma list of the redis-server pids
  local n out=""
  for n in "${!PID[@]}"; do [[ "$n" == redis* ]] && out+="${out:+,}${PID[$n]}"; done
  echo "$out"
}

rsum() { # rsum FIELD -> sum over the Redis nodes of a number from INFO ("name:" or "name:key=")
  local p t=0 v
  for p in "${REDIS_PORTS[@]}"; do
    v=$(redis-cli -p "$p" INFO all | tr -d '\r' | sed -n "s/^$1[:=]\([0-9]*\).*/\1/p" | head -n 1)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

cpu_ticks() { # cpu_ticks PID,PID.. -> utime + stime summed, in clock ticks
  local p t=0
  for p in ${1//,/ }; do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  echo "$t"
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
    # --- fleet: Redis (or a 3-master cluster) + A + B
    if [[ $CLUSTER -eq 1 && "$family" != wsgate ]]; then
      echo "   ($family has no Redis Cluster mode: fleet skipped)" >&2
      continue
    fi
    rport=$((port + 100))
    start_redis "$rport"
    start "$family" "$family-A" "$((port + 2))" "$rport" "$NICE"
    start "$family" "$family-B" "$((port + 3))" "$rport"
    rpids=$(redis_pids)
    pids="${PID[$family-A]},${PID[$family-B]},$rpids"
    best=""
    for f in $FRACTIONS; do
      rate=$(awk -v r="$s_pps" -v f="$f" 'BEGIN { v = r * f; if (v < 1) v = 1; printf "%d", v }')
      for p in "${REDIS_PORTS[@]}"; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
      c0=$(rsum total_commands_processed)
      t0=$(cpu_ticks "$rpids"); w0=$(date +%s.%N)
      if ! bench "$family fleet $layout x$f" --url "ws://127.0.0.1:$((port + 3))/ws" \
           --publish-url "ws://127.0.0.1:$((port + 2))/ws" --rooms "$rooms" --subscribers "$subs" \
           --rate "$rate" --inflight $((INFLIGHT * 4)) --settle 0.5 --pid "$pids"; then
        FAILED=1; continue
      fi
      t1=$(cpu_ticks "$rpids"); w1=$(date +%s.%N)
      rcpu=$(awk -v a="$t0" -v b="$t1" -v x="$w0" -v y="$w1" -v hz="$(getconf CLK_TCK)" \
               'BEGIN { printf "%.1f", 100 * (b - a) / hz / (y - x) }')
      c1=$(rsum total_commands_processed)
      npub=$(( $(rsum cmdstat_publish:calls) + $(rsum cmdstat_spublish:calls) ))
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
           "lost $lost, Redis CPU $rcpu % (over the whole run), $ppp PUBLISH and $cpp Redis commands/publication," \
           "sustained: $ok" >&2
      ROWS+=("| $family | $layout | $f | $rate | $dps | $core | $(awk -v u="$p50" 'BEGIN{printf "%.2f", u/1000}') | $(awk -v u="$p99" 'BEGIN{printf "%.2f", u/1000}') | $rcpu | $ppp | $cpp | $ok |")
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
echo "Fan-out across two gateways and $([[ $CLUSTER -eq 1 ]] && echo "a 3-master Redis Cluster" || echo "one Redis") vs one gateway: servers on CPUs $SERVER_CPUS ($THREADS thread(s) each), wsgate-bench on CPUs $CLIENT_CPUS, $SIZE B, ${DURATION}s per run (+${WARMUP}s warmup)$([[ $NICE == 0 ]] || echo ", gateway A and Redis at nice $NICE"). Fleet CPU = gateway A + gateway B + Redis. Redis CPU % is over the whole run (setup and drain included)."
echo
echo "| server | rooms x subs | fraction | publications/s | deliveries/s | deliveries/s per core | p50 ms | p99 ms | Redis CPU % | (S)PUBLISH/publication | Redis commands/publication | sustained |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
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
