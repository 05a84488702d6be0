#!/usr/bin/env bash
# Handshake storm: latency of established clients while new TLS clients pour in, for one or
# two builds. Per binary: a plain listener under a steady open-loop load (1,000 connections,
# RATE requests/s, `paramView x`) measured alone, then again while a second generator runs
# full TLS handshakes as fast as it can (STORM connections at a time, each connect →
# handshake → welcome → close, over and over). Prints p50/p99 before and during, the
# handshakes per second the storm got, and the server's loop turns longer than 250 µs alone
# and during the storm ("long turns"). Loopback only; stops only what it started.
#
#   benches/storm.sh [SERVER ...]      # default target/release/actionwire; RATE=10000 STORM=64 ROUNDS=3
#   a SERVER is "[NAME=]BINARY [FLAG ...]", e.g. "loop=target/release/actionwire --handshake-threads 0"
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10000}; STORM=${STORM:-64}; DURATION=${DURATION:-8s}; ROUNDS=${ROUNDS:-3}
STORM_FOR=$(( ${DURATION%s} + 4 ))s # the storm outlasts the measured run (its warm-up included)
# shellcheck source=benches/ports.sh
. benches/ports.sh
need openssl openssl
cargo build --release -q
GEN=target/release/actionwire
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || BINS=(target/release/actionwire)
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
# The server must own its core for what is measured to be how it shares that core between
# old and new clients, not how it shares it with the clients' processes. With taskset and
# 2+ cores: the server on core 0 at a real-time priority (chrt -f 1: nothing else runs there
# while it has work), the measuring generator on core 1, and the storm's client at idle
# priority (SCHED_IDLE) on any core: it gets every cycle the other two leave, so the storm is
# as strong as the machine allows, and the measuring generator never waits for it.
PIN_S=(); PIN_G=(); STORM_PRIO=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi
if command -v chrt >/dev/null 2>&1 && chrt -f 1 true 2>/dev/null; then
  PIN_S=(chrt -f 1 "${PIN_S[@]}"); STORM_PRIO=(chrt --idle 0)
fi
load() { timeout 120 "${PIN_G[@]}" "$GEN" bench --json --target "127.0.0.1:$1" --connections 1000 --rate "$RATE" \
  --duration "$DURATION" --warmup 1s --request 'paramView x' --expect '{"status":"OK"' 2>/dev/null; }
# Loop turns longer than 250 µs so far (the server's /metrics): a p99 the loop's turns do not
# explain came from outside them (waking the loop, the kernel, the host).
long_turns() {
  python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
b = {l.split('le="')[1].split('"')[0]: float(l.split()[-1]) for l in text.splitlines()
     if l.startswith("actionwire_loop_turn_seconds_bucket")}
print(int(b["+Inf"] - b["0.00025"]))
PY
}
printf '%-28s %6s %10s %10s %10s %10s %14s %8s %12s\n' binary round "p50 before" "p99 before" "p50 during" "p99 during" "handshakes/s" "failed" "long turns"
# Every server runs from the start (each idle but for its own rounds); rounds alternate
# between them, so that a shared machine's noisy minutes hit them alike.
NAMES=(); PORTS=(); TLSS=(); WEBS=()
for spec in "${BINS[@]}"; do
  read -ra words <<<"$spec"; bin=${words[0]#*=}; name=${words[0]%%=*}; extra=("${words[@]:1}")
  [ "$name" != "${words[0]}" ] || name=$(basename "$bin")
  port=$(free_port); tls=$(free_port); web=$(free_port)
  "${PIN_S[@]}" "$bin" "${extra[@]}" --bind 127.0.0.1 --port "$port" --tls-port "$tls" --tls-cert "$TMP/cert.pem" \
    --tls-key "$TMP/key.pem" --web-port "$web" --handshake-timeout 0 --log-level error & PIDS+=("$!")
  wait_port "$port"; wait_port "$tls"; wait_port "$web"
  NAMES+=("$name"); PORTS+=("$port"); TLSS+=("$tls"); WEBS+=("$web")
done
declare -A RATIOS BEFORES DURINGS
# Alone and during a storm, ROUNDS times over: the rounds disagree on a shared machine. The
# summary gives the medians and the best round of each (the least touched by the host: when
# a neighbour takes the machine, p99 alone moves tenfold between rounds).
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}; port=${PORTS[$i]}; tls=${TLSS[$i]}; web=${WEBS[$i]}
    turnsa=$(long_turns "$web")
    before=$(load "$port")
    turns0=$(long_turns "$web")
    timeout 120 "${STORM_PRIO[@]}" "$GEN" bench --json --target "127.0.0.1:$tls" --tls --ca "$TMP/cert.pem" --handshakes \
      --connections "$STORM" --duration "$STORM_FOR" --warmup 0s >"$TMP/storm.json" 2>/dev/null & storm=$!
    during=$(load "$port")
    turns1=$(long_turns "$web")
    wait "$storm" || true
    b99=$(json "d['latency_us']['p99']" <<<"$before"); d99=$(json "d['latency_us']['p99']" <<<"$during")
    RATIOS[$name]+="$(python3 -c "print($d99 / $b99)") "; BEFORES[$name]+="$b99 "; DURINGS[$name]+="$d99 "
    printf '%-28s %6s %10s %10s %10s %10s %14s %8s %12s\n' "$name" "$r" \
      "$(json "d['latency_us']['p50']" <<<"$before")" "$b99" \
      "$(json "d['latency_us']['p50']" <<<"$during")" "$d99" \
      "$(json "round(d['per_second'])" <"$TMP/storm.json")" \
      "$(json "d['errors'] + d['connect_errors']" <"$TMP/storm.json")" "$((turns0 - turnsa))/$((turns1 - turns0))"
  done
done
for name in "${NAMES[@]}"; do
  python3 -c '
import statistics, sys
name = sys.argv[1]
r, b, d = (list(map(float, a.split())) for a in sys.argv[2:5])
print("%s: median p99 during / p99 before = %.2f; median p99 before %.0f us, during %.0f us (%.2f);"
      " best p99 before %.0f us, during %.0f us (%.2f)"
      % (name, statistics.median(r), statistics.median(b), statistics.median(d), statistics.median(d) / statistics.median(b),
         min(b), min(d), min(d) / min(b)))
' "$name" "${RATIOS[$name]}" "${BEFORES[$name]}" "${DURINGS[$name]}"
done
