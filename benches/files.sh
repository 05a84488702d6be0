#!/usr/bin/env bash
# `file` beside other clients: 50 connections answer `paramView x` (closed loop, measured)
# while D clients download a large file with `file` over and over; then the same without the
# downloads. Shows whether serving files (opening, checking, reading) holds up the loop.
# Everything on free 127.0.0.1 ports; stops what it started.
#
#   benches/files.sh [BIN]   # BIN defaults to target/release/actionwire (built)
#                            # DURATION=10s DOWNLOADERS=8 SIZE_MB=64
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}; DOWNLOADERS=${DOWNLOADERS:-8}; SIZE_MB=${SIZE_MB:-64}
BIN=${1:-}
if [ -z "$BIN" ]; then cargo build --release -q --locked; BIN=target/release/actionwire; fi
# shellcheck source=benches/ports.sh
. benches/ports.sh
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
mkdir -p "$TMP/public"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$TMP/public/big.bin"
port=$(free_port)
"$BIN" --bind 127.0.0.1 --port "$port" --log-level error --workers 1 \
  --config <(echo "{\"general\":{\"paths\":{\"public\":[\"$TMP/public\"]}}}") & PIDS+=($!)
wait_port "$port"
load() { "$BIN" bench --target "127.0.0.1:$port" --connections 50 --duration "$DURATION" \
  --warmup 1s --request 'paramView x' 2>/dev/null | grep -E "requests:|latency"; }
echo "== paramView x, 50 connections, no downloads"
load
python3 - "$port" "$DOWNLOADERS" "$((SIZE_MB * 1024 * 1024))" "$TMP/stop" "$TMP/downloaded" <<'PY' & PIDS+=($!)
import os, socket, sys, threading, time
port, n, size, stop, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
total = [0]
def download():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")
    f.readline()  # welcome
    while not os.path.exists(stop):
        s.sendall(b"file big.bin\n")
        left = size
        while left:
            chunk = f.read(min(left, 1 << 20))
            assert chunk, "closed"
            left -= len(chunk)
            total[0] += len(chunk)
for _ in range(n):
    threading.Thread(target=download, daemon=True).start()
while True:  # the bytes downloaded so far, for the shell to sample
    with open(out + ".tmp", "w") as f:
        f.write(str(total[0]))
    os.replace(out + ".tmp", out)
    time.sleep(0.2)
PY
sleep 1
echo "== paramView x, 50 connections, while $DOWNLOADERS clients download a ${SIZE_MB} MiB file in a loop"
start_bytes=$(cat "$TMP/downloaded"); start_t=$(date +%s.%N)
load
end_bytes=$(cat "$TMP/downloaded"); end_t=$(date +%s.%N)
python3 -c "import sys; b=(int(sys.argv[2])-int(sys.argv[1]))/(float(sys.argv[4])-float(sys.argv[3])); print('downloads meanwhile: %.0f MiB/s' % (b/2**20))" \
  "$start_bytes" "$end_bytes" "$start_t" "$end_t"
touch "$TMP/stop"
