#!/usr/bin/env bash
# Full TLS 1.3 handshakes per second per core of server CPU, over real sockets: for each
# server build and certificate key type, `actionwire bench --handshakes` (16 connections,
# each connect → full handshake → welcome → close, in a loop; the client keeps no sessions,
# so it never resumes: the server's `actionwire_tls_handshakes_resumed_total` stays 0)
# against the server, and the server's own CPU time (user + system, from /proc) over the run.
# handshakes / server CPU seconds is what one core of server buys, whatever the client
# costs on the same machine. Cases alternate over ROUNDS rounds so that drift on a shared
# machine hits them alike; the median round is printed. Loopback only; stops only what it
# started.
#
#   benches/handshakes.sh [NAME=BINARY [FLAG ...] ...]   # ROUNDS=5 DURATION=4s GEN=BINARY
#   e.g. "loop=target/release/actionwire --handshake-threads 0" (quoted: one argument each)
#   default: ring=target/release/actionwire, and aws-lc=<a build with --features aws-lc>
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-4s}
# shellcheck source=benches/ports.sh
. benches/ports.sh
need openssl openssl
cargo build --release -q
# The load generator: GEN=target/aws-lc/release/actionwire (its TLS from aws-lc-rs) keeps
# the server busier, as a full handshake costs the client less.
GEN=${GEN:-target/release/actionwire}
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
BUILDS=("$@")
if [ ${#BUILDS[@]} -eq 0 ]; then
  echo "building the aws-lc variant (target/aws-lc)..." >&2
  CARGO_TARGET_DIR=target/aws-lc cargo build --release -q --features aws-lc
  BUILDS=(ring=target/release/actionwire aws-lc=target/aws-lc/release/actionwire)
fi

san=(-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$TMP/p256.key" -out "$TMP/p256.pem" "${san[@]}" >/dev/null 2>&1
openssl req -x509 -newkey ed25519 -nodes -days 1 \
  -keyout "$TMP/ed25519.key" -out "$TMP/ed25519.pem" "${san[@]}" >/dev/null 2>&1

# With taskset and 2+ cores the server gets core 0 and the load generator core 1: the
# server's threads (loop and handshake threads) share one core, as one process per core
# does in production, and never wait for the generator.
PIN_S=(); PIN_G=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A got
CASES=()
# `plain`: the same connect → welcome → close without TLS, the kernel's and the loop's part
# of each connection (what is left of a handshake's budget is the TLS part's).
for b in "${BUILDS[@]}"; do for k in p256 ed25519 plain; do CASES+=("${b%%=*}/$k=${b#*=}"); done; done
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    name=${c%%=*}; key=${name#*/}; read -ra words <<<"${c#*=}"; bin=${words[0]}; extra=("${words[@]:1}")
    port=$(free_port); web=$(free_port)
    tls_s=(--tls-cert "$TMP/$key.pem" --tls-key "$TMP/$key.key"); tls_g=(--tls --ca "$TMP/$key.pem")
    if [ "$key" = plain ]; then tls_s=(); tls_g=(); fi
    "${PIN_S[@]}" "$bin" "${extra[@]}" --bind 127.0.0.1 --port "$port" "${tls_s[@]}" \
      --web-port "$web" --handshake-timeout 0 --log-level error & pid=$!; PIDS+=("$pid")
    wait_port "$port"
    t0=$(ticks "$pid")
    out=$(timeout 120 "${PIN_G[@]}" "$GEN" bench --json --target "127.0.0.1:$port" "${tls_g[@]}" \
      --handshakes --connections 16 --duration "$DURATION" --warmup 0s 2>/dev/null)
    t1=$(ticks "$pid")
    # Full handshakes only: a resumed one skips the certificate signature.
    resumed=$(python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
print(next(l.split()[1] for l in text.splitlines() if l.startswith("actionwire_tls_handshakes_resumed_total ")))
' "$web")
    if [ "$resumed" != 0 ]; then echo "$name: $resumed handshakes resumed; this measures full ones" >&2; exit 1; fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    v=$(python3 -c '
import json, os, sys
d = json.loads(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK")
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / hz
total = d["per_second"] * float(sys.argv[4])
print(round(d["per_second"]), round(total / cpu) if cpu else 0)
' "$out" "$t0" "$t1" "${DURATION%s}")
    got[$name]+="${v// /:} "
    echo "round $r $name: handshakes/s ${v% *}, per core of server CPU ${v#* }" >&2
  done
done
printf '%-22s %16s %30s\n' "build/key" "handshakes/s" "handshakes/s per server core"
for c in "${CASES[@]}"; do
  name=${c%%=*}
  python3 -c '
import statistics, sys
pairs = [tuple(map(int, p.split(":"))) for p in sys.argv[2].split()]
print("%-22s %16d %30d" % (sys.argv[1], statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)))
' "$name" "${got[$name]}"
done
