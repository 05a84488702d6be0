#!/usr/bin/env bash
# actionwire vs redis-server, side by side, through the same load generator (`actionwire
# bench`) on loopback. Installs redis-server and openssl from Debian packages if missing,
# starts both servers on free 127.0.0.1 ports, runs each scenario for DURATION after WARMUP,
# prints one table, and stops only the processes it started.
#
#   benches/compare.sh            # DURATION=5s WARMUP=1s IDLE=10000 THREADS=1
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
IDLE=${IDLE:-10000}
THREADS=${THREADS:-1}

# shellcheck source=benches/ports.sh
. benches/ports.sh
need redis-server redis-server
need openssl openssl
need python3 python3

cargo build --release -q
BIN=target/release/actionwire
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); print(v)' "$1"; }

AW_PORT=$(free_port); TLS_PORT=$(free_port); RD_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1

"$BIN" --bind 127.0.0.1 --port "$AW_PORT" --tls-port "$TLS_PORT" \
  --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" --handshake-timeout 0 \
  --log-level error &
AW_PID=$!; PIDS+=("$AW_PID")
redis-server --bind 127.0.0.1 --port "$RD_PORT" --save '' --appendonly no \
  --loglevel warning --maxclients 50000 >/dev/null &
RD_PID=$!; PIDS+=("$RD_PID")
wait_port "$AW_PORT"; wait_port "$TLS_PORT"; wait_port "$RD_PORT"

bench() { timeout 120 "$BIN" bench --json --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" "$@" 2>/dev/null; }
AW=(--target "127.0.0.1:$AW_PORT")
VERB=(--request 'paramView x' --expect '{"status":"OK"')
ACTION=(--request randomNumber --expect '{"randomNumber"')
RD=(--target "127.0.0.1:$RD_PORT" --no-skip-welcome --request PING --expect +PONG --eol $'\r\n')

rows=()
row() { rows+=("$(printf '%-44s %14s %14s %8s   %s' "$@")"); }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else '-')" "$1" "$2"; }
rate() { bench "$@" | json "round(d['per_second'])"; }

echo "running scenarios (${DURATION} each after ${WARMUP} warm-up)..." >&2
a=$(rate "${AW[@]}" "${VERB[@]}" --connections 1); r=$(rate "${RD[@]}" --connections 1)
row "1 conn, verb (paramView) vs PING, req/s" "$a" "$r" "$(ratio "$a" "$r")" "-"
a50=$(rate "${AW[@]}" "${VERB[@]}" --connections 50); r50=$(rate "${RD[@]}" --connections 50)
row "50 conns, verb vs PING, req/s" "$a50" "$r50" "$(ratio "$a50" "$r50")" ">= 1.0"
a=$(rate "${AW[@]}" "${ACTION[@]}" --connections 1)
row "1 conn, action (randomNumber) vs PING, req/s" "$a" "$r" "$(ratio "$a" "$r")" "-"
a=$(rate "${AW[@]}" "${ACTION[@]}" --connections 50)
row "50 conns, action vs PING, req/s" "$a" "$r50" "$(ratio "$a" "$r50")" ">= 1.0"
a=$(rate "${AW[@]}" "${VERB[@]}" --connections 50 --pipeline 16); r=$(rate "${RD[@]}" --connections 50 --pipeline 16)
row "50 conns, pipeline 16, verb vs PING, req/s" "$a" "$r" "$(ratio "$a" "$r")" ">= 0.7"

# Open loop: latency is only meaningful when the generator does not share a core with the
# server, so (with taskset and 2+ cores) both servers go to core 0 and the generator to 1.
half_a=$(( a50 / 2 )); half_r=$(( r50 / 2 ))
PIN=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  taskset -a -p -c 0 "$AW_PID" >/dev/null; taskset -a -p -c 0 "$RD_PID" >/dev/null
  PIN=(taskset -c 1)
fi
open_loop() { timeout 120 "${PIN[@]}" "$BIN" bench --json --duration "$DURATION" --warmup "$WARMUP" "$@" 2>/dev/null; }
oa=$(open_loop "${AW[@]}" "${VERB[@]}" --connections 50 --rate "$half_a")
or=$(open_loop "${RD[@]}" --connections 50 --rate "$half_r")
row "open loop at 50% of max, p50 latency, us" "$(json "d['latency_us']['p50']" <<<"$oa")" "$(json "d['latency_us']['p50']" <<<"$or")" "-" "-"
pa=$(json "d['latency_us']['p99']" <<<"$oa"); pr=$(json "d['latency_us']['p99']" <<<"$or")
row "open loop at 50% of max, p99 latency, us" "$pa" "$pr" "$(ratio "$pa" "$pr")" "aw <= 1000"
if [ ${#PIN[@]} -gt 0 ]; then
  taskset -a -p -c 0-$(( $(nproc) - 1 )) "$AW_PID" >/dev/null; taskset -a -p -c 0-$(( $(nproc) - 1 )) "$RD_PID" >/dev/null
fi

idle_bytes() { # pid, bench args...: RSS growth per idle connection
  local pid=$1; shift
  local before after
  before=$(rss_kib "$pid")
  timeout 120 "$BIN" bench --json --idle "$IDLE" --duration 4s --warmup 0s "$@" >"$TMP/idle.json" 2>"$TMP/idle.err" &
  local b=$!
  # Wait for every connection to be open, then read the RSS while they are held.
  for _ in $(seq 1 300); do
    grep -q "open *$IDLE\$" "$TMP/idle.err" 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
  after=$(rss_kib "$pid")
  wait "$b" || true
  python3 -c "print(round(($after - $before) * 1024 / $IDLE))"
}
ia=$(idle_bytes "$AW_PID" "${AW[@]}")
ir=$(idle_bytes "$RD_PID" --target "127.0.0.1:$RD_PORT" --no-skip-welcome)
row "memory per idle plain connection, bytes" "$ia" "$ir" "$(ratio "$ia" "$ir")" "aw <= 1024"
it=$(IDLE=$((IDLE / 2)) idle_bytes "$AW_PID" --target "127.0.0.1:$TLS_PORT" --tls --ca "$TMP/cert.pem")
row "memory per idle TLS connection, bytes" "$it" "-" "-" "aw <= 7168"
hs=$(bench --target "127.0.0.1:$TLS_PORT" --tls --ca "$TMP/cert.pem" --handshakes --connections 16 | json "round(d['per_second'])")
row "TLS 1.3 full handshakes/s (client on the same 2 cores)" "$hs" "-" "-" ">= 8000 per core"
# A reconnect storm (benches/storm.sh): 1,000 established connections at 10,000 req/s, their
# p99 while 64 connections run full TLS handshakes in a loop over their p99 before it, the
# median of 3 rounds (a single round on a shared machine says little); the server on a core
# of its own.
storm=$(ROUNDS=3 bash benches/storm.sh "$BIN" 2>/dev/null | sed -n 's/^actionwire: median p99 during \/ p99 before = \([0-9.]*\);.*/\1/p')
row "p99 during a 64-client TLS storm / before (median)" "${storm:-failed}" "-" "-" "<= 2.0"

echo
printf '%-44s %14s %14s %8s   %s\n' "scenario" "actionwire" "redis-server" "ratio" "target"
printf '%s\n' "${rows[@]}"
echo
echo "machine: $(nproc) cores; redis $(redis-server --version | awk '{print $3}'); $(date -u +%Y-%m-%d)"
