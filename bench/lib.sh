# bench/lib.sh — server lifecycle shared by run_echo.sh and run_fanout.sh (sourced).
#
# The sourcing script defines ROOT and die() before sourcing, and OUT_DIR before starting servers. Servers it starts are tracked in
# the associative array PID (name -> pid) and stopped on exit.

declare -A PID

# build_paths: BUILD_DIR (default build/release, relative to the repository) and the binaries the
# scripts run, each overridable from the environment: WSGATE_BIN, BENCH_BIN, RAW_BIN, NODE_BIN.
build_paths() {
  BUILD_DIR=${BUILD_DIR:-build/release}
  [[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
  WSGATE_BIN=${WSGATE_BIN:-$BUILD_DIR/wsgate}
  BENCH_BIN=${BENCH_BIN:-$BUILD_DIR/bench/wsgate-bench}
  RAW_BIN=${RAW_BIN:-$BUILD_DIR/bench/raw-echo-server}
  NODE_BIN=${NODE_BIN:-node}
}

# default_cpus: SERVER_CPUS and CLIENT_CPUS, unless set: on <= 3 CPUs the server gets CPU 0 and
# the load generator the rest, otherwise each gets half. Sets NCPU.
default_cpus() {
  NCPU=$(nproc)
  if [[ -z "$SERVER_CPUS" ]]; then
    if [[ $NCPU -le 3 ]]; then SERVER_CPUS=0; else SERVER_CPUS="0-$((NCPU / 2 - 1))"; fi
  fi
  if [[ -z "$CLIENT_CPUS" ]]; then
    if [[ $NCPU -eq 1 ]]; then CLIENT_CPUS=0
    elif [[ $NCPU -le 3 ]]; then CLIENT_CPUS="1-$((NCPU - 1))"
    else CLIENT_CPUS="$((NCPU / 2))-$((NCPU - 1))"; fi
    [[ "$CLIENT_CPUS" == "1-1" ]] && CLIENT_CPUS=1
  fi
}

# stop_servers: SIGTERM every server, give each 3 s, then SIGKILL.
stop_servers() {
  local name pid
  for name in "${!PID[@]}"; do
    kill -TERM "${PID[$name]}" 2>/dev/null || true
  done
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
  done
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# launch_server NAME PORT COMMAND...: runs COMMAND in the background (output to
# $OUT_DIR/NAME.log), records it in PID, and waits until 127.0.0.1:PORT accepts.
# Exits 2 with the log's tail if the server dies or does not listen within 10 s.
launch_server() {
  local name=$1 port=$2 log="$OUT_DIR/$1.log" pid
  shift 2
  if port_open "$port"; then
    die "port $port is already in use (set BASE_PORT)"
  fi
  "$@" >"$log" 2>&1 &
  pid=$!
  PID[$name]=$pid
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$(basename "$0"): $name exited during startup; log ($log):" >&2
      tail -n 20 "$log" >&2
      exit 2
    fi
    if port_open "$port"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$(basename "$0"): $name did not listen on 127.0.0.1:$port within 10 s; log ($log):" >&2
  tail -n 20 "$log" >&2
  exit 2
}

# json_field KEY < json  -> the value of the first "KEY" in a flat JSON object, or empty.
json_field() {
  sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1
}
