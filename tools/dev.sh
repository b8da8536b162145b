#!/usr/bin/env bash
# The project's one entry point for newcomers and CI.
#
#   tools/dev.sh run [wsgate flags]   install what is missing, build (Release), run the gateway
#                                     (single node, /echo and the demo page at / on)
#   tools/dev.sh test                 install what is missing, build Release and ASan+UBSan, run every test in both
#   tools/dev.sh build                install what is missing, build Release only
#   tools/dev.sh deps                 install what is missing, nothing else
#   tools/dev.sh bench [args]         build Release, run the echo benchmark table (bench/run_echo.sh)
#
# Needs Debian 12 and root (or sudo) for apt-get. Every dependency is a Debian
# package; the Node `ws` peer for benchmarks comes from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)

debian_packages=(
  build-essential cmake pkg-config git
  liburing-dev libwslay-dev libhiredis-dev libsimdjson-dev libjemalloc-dev
  libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  zlib1g-dev libdeflate-dev libssl-dev libtomlplusplus-dev libsystemd-dev
  python3 python3-websockets redis-server procps util-linux curl nginx haproxy systemd chromium
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
  local missing=() p
  local want=("${debian_packages[@]}")
  command -v node >/dev/null 2>&1 || want+=(nodejs)
  command -v npm >/dev/null 2>&1 || want+=(npm)
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ -f bench/node/package.json ] && [ ! -d bench/node/node_modules/ws ]; then
    (cd bench/node && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
  fi
  # playwright-core drives Debian's chromium in the demo page's browser test.
  if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
  fi
}

configure_build() {  # dir, cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

release() { configure_build build/release -DCMAKE_BUILD_TYPE=Release -DWSGATE_BENCH=ON -DWSGATE_TESTS=ON; }
asan() { configure_build build/asan -DCMAKE_BUILD_TYPE=Debug -DWSGATE_SANITIZE=ON -DWSGATE_BENCH=OFF -DWSGATE_TESTS=ON; }

raise_fd_limit() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

cmd=${1:-help}
shift || true
case "$cmd" in
  deps) deps ;;
  build) deps; release ;;
  run)
    deps; release; raise_fd_limit
    listen=${WSGATE_LISTEN:-0.0.0.0:8080}
    echo "dev.sh: starting wsgate on $listen: the demo page is http://127.0.0.1:${listen##*:}/ (Ctrl-C stops it)"
    exec build/release/wsgate --listen "$listen" --echo --demo "$@"
    ;;
  test)
    deps; raise_fd_limit
    release
    ctest --test-dir build/release --output-on-failure --timeout 900
    asan
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --test-dir build/asan --output-on-failure --timeout 1200
    ;;
  bench)
    deps; release; raise_fd_limit
    exec bench/run_echo.sh build/release "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
