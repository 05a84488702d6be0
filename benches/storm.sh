#!/usr/bin/env bash
# Handshake storm: latency of established clients while new TLS clients pour in, for one or
# two builds. Per binary: a plain listener under a steady open-loop load (1,000 connections,
# RATE requests/s, `paramView x`) measured alone, then again while a second generator runs
# full TLS handshakes as fast as it can (STORM connections at a time, each connect →
# handshake → welcome → close, over and over). Prints p50/p99 before and during, and the
# handshakes per second the storm got. Loopback only; stops only what it started.
#
#   benches/storm.sh [BINARY ...]      # default target/release/actionwire; RATE=10000 STORM=64
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10000}; STORM=${STORM:-64}; DURATION=${DURATION:-8s}
command -v openssl >/dev/null 2>&1 || { echo "needs openssl (Debian package openssl)" >&2; exit 2; }
cargo build --release -q
GEN=target/release/actionwire
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || BINS=(target/release/actionwire)
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
# shellcheck source=benches/ports.sh
. benches/ports.sh
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
# With taskset and 2+ cores the server gets core 0 and both generators core 1, so that what
# is measured is how the server shares its own core between old and new clients.
PIN_S=(); PIN_G=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi
load() { timeout 120 "${PIN_G[@]}" "$GEN" bench --json --target "127.0.0.1:$1" --connections 1000 --rate "$RATE" \
  --duration "$DURATION" --warmup 1s --request 'paramView x' --expect '{"status":"OK"' 2>/dev/null; }
printf '%-28s %10s %10s %10s %10s %14s\n' binary "p50 before" "p99 before" "p50 during" "p99 during" "handshakes/s"
for bin in "${BINS[@]}"; do
  port=$(free_port); tls=$(free_port)
  "${PIN_S[@]}" "$bin" --bind 127.0.0.1 --port "$port" --tls-port "$tls" --tls-cert "$TMP/cert.pem" \
    --tls-key "$TMP/key.pem" --handshake-timeout 0 --log-level error & pid=$!; PIDS+=("$pid")
  wait_port "$port"; wait_port "$tls"
  before=$(load "$port")
  timeout 120 "${PIN_G[@]}" "$GEN" bench --json --target "127.0.0.1:$tls" --tls --ca "$TMP/cert.pem" --handshakes \
    --connections "$STORM" --duration 12s --warmup 0s >"$TMP/storm.json" 2>/dev/null & storm=$!
  during=$(load "$port")
  wait "$storm" || true
  printf '%-28s %10s %10s %10s %10s %14s\n' "$(basename "$bin")" \
    "$(json "d['latency_us']['p50']" <<<"$before")" "$(json "d['latency_us']['p99']" <<<"$before")" \
    "$(json "d['latency_us']['p50']" <<<"$during")" "$(json "d['latency_us']['p99']" <<<"$during")" \
    "$(json "round(d['per_second'])" <"$TMP/storm.json")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
