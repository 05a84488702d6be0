#!/usr/bin/env bash
# Edge mode: an action (a) answered locally, (b) forwarded from an edge to a second
# actionwire's HTTP front door, beside (c) that backend's own HTTP numbers (wrk), 50
# connections, closed loop; then the edge's memory per forwarded call in flight (a backend
# that answers after 30 s, N calls outstanding, RSS before and after). Everything runs on
# free 127.0.0.1 ports on this machine and stops when the script does.
#
#   benches/edge.sh        # DURATION=10s CALLS=20000; installs wrk with apt-get if missing
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}; CALLS=${CALLS:-20000}
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }; }
cargo build --release -q
BIN=target/release/actionwire
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=benches/ports.sh
. benches/ports.sh
TMP=$(mktemp -d)
bport=$(free_port); bweb=$(free_port); eport=$(free_port)
"$BIN" --bind 127.0.0.1 --port "$bport" --web-port "$bweb" --log-level error & PIDS+=($!)
wait_port "$bport"; wait_port "$bweb"
cat > "$TMP/edge.json" <<JSON
{"upstream":{"url":"http://127.0.0.1:$bweb/api","actions":["randomNumber","sleepTest"],"timeout":60000,"maxQueued":100000},
 "general":{"simultaneousActions":1000}}
JSON
"$BIN" --config "$TMP/edge.json" --bind 127.0.0.1 --port "$eport" --log-level error & epid=$!; PIDS+=("$epid")
wait_port "$eport"
load() { # target port
  timeout 120 "$BIN" bench --json --target "127.0.0.1:$1" --connections 50 --duration "$DURATION" \
    --request randomNumber --expect '{"randomNumber"' 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_us"]; print("%7d/s  p50 %6.0f us  p99 %6.0f us" % (d["per_second"], l["p50"], l["p99"]))'
}
echo "(a) local, socket protocol:            $(load "$bport")"
echo "(b) forwarded by the edge (socket):    $(load "$eport")"
echo "(c) backend's HTTP front door (wrk):"
wrk -t1 -c50 -d"$DURATION" --latency "http://127.0.0.1:$bweb/api/randomNumber" | grep -E "Requests/sec|50%|99%"

# Memory per call in flight: CALLS calls to a backend action that answers after 30 s
# (the backend holds 256 of them on its connections, the edge queues the rest).
python3 - "$eport" "$CALLS" "$epid" <<'PY'
import socket, sys, time
port, calls, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rss = lambda: int([l.split()[1] for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0])
before = rss()
per = 1000
socks = []
for _ in range(calls // per):
    s = socket.create_connection(("127.0.0.1", port)); s.recv(4096)
    s.sendall(b'{"action":"sleepTest","params":{"sleepDuration":30000}}\n' * per)
    socks.append(s)
# The edge reads them all within a few turns; RSS is sampled until it stops growing.
last, stable = 0, 0
while stable < 5:
    time.sleep(0.2)
    now = rss(); stable = stable + 1 if now == last else 0; last = now
print("edge RSS with %d forwarded calls in flight: %d KiB -> %d KiB (%d B per call, connections included)"
      % (calls, before, last, (last - before) * 1024 // calls))
PY
