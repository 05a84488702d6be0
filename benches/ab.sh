#!/usr/bin/env bash
# A/B two actionwire builds on the per-request hot path, alternating runs so that drift on a
# shared machine hits both alike. Each round starts both servers on free 127.0.0.1 ports
# (pinned to core 0 when taskset is there) and drives them with the same load generator
# (pinned to core 1), 50 connections, closed loop: a verb answered on the loop, and an
# action on the worker pool. Prints one line per run and the medians; stops only what it
# started.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY     # ROUNDS=5 DURATION=5s WARMUP=1s
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: benches/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
A=$1; B=$2
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5s}; WARMUP=${WARMUP:-1s}
cargo build --release -q
GEN=target/release/actionwire
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=benches/ports.sh
. benches/ports.sh
PIN_SERVER=(); PIN_GEN=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then PIN_SERVER=(taskset -c 0); PIN_GEN=(taskset -c 1); fi
run() { # binary, request, expect
  local port pid
  port=$(free_port)
  "${PIN_SERVER[@]}" "$1" --bind 127.0.0.1 --port "$port" --workers 1 --log-level error & pid=$!; PIDS+=("$pid")
  wait_port "$port"
  timeout 120 "${PIN_GEN[@]}" "$GEN" bench --json --target "127.0.0.1:$port" --connections 50 \
    --duration "$DURATION" --warmup "$WARMUP" --request "$2" --expect "$3" 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["per_second"]))'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
declare -A got
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    v=$(run "$bin" 'paramView x' '{"status":"OK"'); a=$(run "$bin" randomNumber '{"randomNumber"')
    got[$side-verb]+="$v "; got[$side-action]+="$a "
    echo "round $r $side: verb $v/s, action $a/s"
  done
done
median() { python3 -c 'import statistics,sys; print(round(statistics.median(map(int,sys.argv[1:]))))' $1; }
for k in verb action; do
  ma=$(median "${got[A-$k]}"); mb=$(median "${got[B-$k]}")
  echo "median $k: A $ma/s, B $mb/s, B/A $(python3 -c "print(f'{$mb/$ma:.3f}')")"
done
