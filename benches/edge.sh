#!/usr/bin/env bash
# Edge mode: an action (a) answered locally, (b) forwarded from an edge to a second
# actionwire's HTTP front door, (c) forwarded to an actionhero 20.0.0 app's web server, beside
# each backend's own HTTP numbers (wrk), 50 connections, closed loop; then the edge's memory
# per forwarded call in flight (a backend that answers after 30 s, N calls outstanding, RSS
# before and after). Everything runs on free 127.0.0.1 ports on this machine and stops when
# the script does.
#
#   benches/edge.sh   # DURATION=10s CALLS=20000; installs wrk, redis-server, node and
#                     # actionhero 20.0.0 (npm, into target/interop) when missing
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}; CALLS=${CALLS:-20000}
# shellcheck source=tests/interop/lib.sh
. tests/interop/lib.sh
need wrk wrk
install_actionhero
cargo build --release -q
BIN=target/release/actionwire

bport=$(free_port); bweb=$(free_port)
"$BIN" --bind 127.0.0.1 --port "$bport" --web-port "$bweb" --log-level error & INTEROP_PIDS+=($!)
wait_port "$bport"; wait_port "$bweb"
start_redis
start_actionhero bench

edge() { # upstream-url: starts an edge forwarding randomNumber and sleepTest; sets EDGE, EDGE_PID
  EDGE=$(free_port)
  cat > "$INTEROP_TMP/edge-$EDGE.json" <<JSON
{"upstream":{"url":"$1","actions":["randomNumber","sleepTest"],"timeout":60000,"maxQueued":100000},
 "general":{"simultaneousActions":1000}}
JSON
  "$BIN" --config "$INTEROP_TMP/edge-$EDGE.json" --bind 127.0.0.1 --port "$EDGE" --log-level error &
  EDGE_PID=$!; INTEROP_PIDS+=("$EDGE_PID")
  wait_port "$EDGE"
}
load() { # target port
  timeout 120 "$BIN" bench --json --target "127.0.0.1:$1" --connections 50 --duration "$DURATION" \
    --request randomNumber --expect '{"randomNumber"' 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_us"]; print("%7d/s  p50 %6.0f us  p99 %6.0f us" % (d["per_second"], l["p50"], l["p99"]))'
}
direct() { # url: the backend's own HTTP numbers
  wrk -t1 -c50 -d"$DURATION" --latency "$1" | awk '/Requests\/sec/{r=$2} / 50%/{p50=$2} / 99%/{p99=$2} END{printf "%7d/s  p50 %9s  p99 %9s\n", r, p50, p99}'
}
echo "(a) local, socket protocol:                        $(load "$bport")"
edge "http://127.0.0.1:$bweb/api"; actionwire_edge=$EDGE; actionwire_edge_pid=$EDGE_PID
echo "(b) forwarded by the edge to actionwire's HTTP:    $(load "$actionwire_edge")"
echo "    that backend's own HTTP front door (wrk):      $(direct "http://127.0.0.1:$bweb/api/randomNumber")"
edge "http://127.0.0.1:$AH_WEB/api"
echo "(c) forwarded by the edge to actionhero 20.0.0:    $(load "$EDGE")"
echo "    actionhero's own web server (wrk):             $(direct "http://127.0.0.1:$AH_WEB/api/randomNumber")"

# Memory per call in flight: CALLS calls to a backend action that answers after 30 s
# (the backend holds 256 of them on its connections, the edge queues the rest).
python3 - "$actionwire_edge" "$CALLS" "$actionwire_edge_pid" <<'PY'
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
