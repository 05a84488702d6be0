#!/usr/bin/env bash
# An action on the loop against redis-server's PING, in alternating rounds so that drift on a
# shared machine hits every side alike: `randomNumber` (an inline action), `paramView x` (a
# verb) and redis PING, 50 connections each, closed loop, through the same load generator
# (`actionwire bench`). Besides requests per second it reports each server's CPU time per
# request (user + system, from /proc), which a noisy neighbour moves much less than
# throughput. Installs redis-server when missing; starts both servers on free 127.0.0.1
# ports and stops only what it started.
#
#   benches/actions.sh        # ROUNDS=9 DURATION=3s WARMUP=1s CONNECTIONS=50 PIN=0
#   PIN=1 benches/actions.sh  # servers on core 0, the load generator on core 1
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-9}; DURATION=${DURATION:-3s}; WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-50}; PIN=${PIN:-0}

# shellcheck source=benches/ports.sh
. benches/ports.sh
need redis-server redis-server
need python3 python3

cargo build --release -q
BIN=target/release/actionwire
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

PIN_SERVER=(); PIN_GEN=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_GEN=(taskset -c 1)
fi
AW_PORT=$(free_port); RD_PORT=$(free_port)
"${PIN_SERVER[@]}" "$BIN" --bind 127.0.0.1 --port "$AW_PORT" --log-level error & AW_PID=$!; PIDS+=("$AW_PID")
"${PIN_SERVER[@]}" redis-server --bind 127.0.0.1 --port "$RD_PORT" --save '' --appendonly no \
  --loglevel warning >/dev/null & RD_PID=$!; PIDS+=("$RD_PID")
wait_port "$AW_PORT"; wait_port "$RD_PORT"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of the whole process
run() { # pid, bench args...: prints "<requests/s> <server CPU µs per request>"
  local pid=$1; shift
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$(timeout 120 "${PIN_GEN[@]}" "$BIN" bench --json --connections "$CONNECTIONS" \
    --duration "$DURATION" --warmup "$WARMUP" "$@" 2>/dev/null)
  t1=$(ticks "$pid")
  # The ticks cover the warm-up too: divide by every request answered in both.
  python3 -c '
import json, os, sys
d = json.loads(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK")
rate = d["per_second"]
warm = float(sys.argv[4]); dur = float(sys.argv[5])
requests = rate * (dur + warm)
print(round(rate), round((int(sys.argv[3]) - int(sys.argv[2])) / hz * 1e6 / requests, 2))
' "$out" "$t0" "$t1" "${WARMUP%s}" "${DURATION%s}"
}

declare -A rate cpu
echo "round   PING req/s (µs CPU)   randomNumber req/s (µs CPU)   paramView req/s (µs CPU)" >&2
for r in $(seq 1 "$ROUNDS"); do
  read -r p pc < <(run "$RD_PID" --target "127.0.0.1:$RD_PORT" --no-skip-welcome --request PING --expect +PONG --eol $'\r\n')
  read -r a ac < <(run "$AW_PID" --target "127.0.0.1:$AW_PORT" --request randomNumber --expect '{"randomNumber"')
  read -r v vc < <(run "$AW_PID" --target "127.0.0.1:$AW_PORT" --request 'paramView x' --expect '{"status":"OK"')
  rate[ping]+="$p "; rate[action]+="$a "; rate[verb]+="$v "
  cpu[ping]+="$pc "; cpu[action]+="$ac "; cpu[verb]+="$vc "
  printf '%5s   %10s (%5s)        %10s (%5s)              %10s (%5s)\n' "$r" "$p" "$pc" "$a" "$ac" "$v" "$vc" >&2
done
median() { python3 -c 'import statistics,sys; print(statistics.median(map(float,sys.argv[1:])))' $1; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
mp=$(median "${rate[ping]}"); ma=$(median "${rate[action]}"); mv=$(median "${rate[verb]}")
cp=$(median "${cpu[ping]}"); ca=$(median "${cpu[action]}"); cv=$(median "${cpu[verb]}")
printf '%-34s %12s %12s %12s\n' "median of $ROUNDS rounds" "PING" "randomNumber" "paramView"
printf '%-34s %12.0f %12.0f %12.0f\n' "requests/s" "$mp" "$ma" "$mv"
printf '%-34s %12s %12s %12s\n' "× PING" "1.00" "$(ratio "$ma" "$mp")" "$(ratio "$mv" "$mp")"
printf '%-34s %12s %12s %12s\n' "server CPU per request, µs" "$cp" "$ca" "$cv"
