#!/usr/bin/env python3
"""Memory per idle connection: RSS delta of a running actionwire over N idle clients.

Usage: benches/idle_rss.py [N] (default 10000). Starts target/release/actionwire on a free
loopback port, reads its RSS, opens N connections (each reads its welcome line), reads the
RSS again, and prints the delta per connection. Everything is loopback and time-bounded.
"""
import os, re, selectors, socket, subprocess, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "actionwire")

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

server = subprocess.Popen([BIN, "--port", "0", "--bind", "127.0.0.1", "--workers", "1"],
                          stderr=subprocess.PIPE, text=True)
try:
    deadline = time.time() + 10
    addr = None
    while addr is None and time.time() < deadline:
        m = re.search(r"listening on ([\d.]+):(\d+)", server.stderr.readline())
        if m:
            addr = (m.group(1), int(m.group(2)))
    assert addr, "server did not report its address"
    # Warm up: one connection round trip so lazily allocated loop state exists.
    w = socket.create_connection(addr); w.recv(4096); w.close()
    time.sleep(0.5)
    before = rss_kib(server.pid)
    socks = []
    sel = selectors.DefaultSelector()
    for i in range(N):
        s = socket.create_connection(addr)
        socks.append(s)
        s.settimeout(10)
        if len(s.recv(4096)) == 0:
            raise SystemExit("connection closed early")
    time.sleep(1.0)
    after = rss_kib(server.pid)
    per = (after - before) * 1024 / N
    print(f"connections={N} rss_before_kib={before} rss_after_kib={after} bytes_per_connection={per:.0f}")
    for s in socks:
        s.close()
finally:
    server.terminate()
    server.wait(timeout=10)
