#!/usr/bin/env python3
"""Memory per idle connection: RSS delta of a running actionwire over N idle clients.

Usage: benches/idle_rss.py [N] [--tls]   (default N = 10000)

Starts target/release/actionwire on a free loopback port, reads its RSS, opens N
connections that each read their welcome line (over TLS with --tls, after a full
handshake), reads the RSS again and prints the growth per connection. With --tls a
throw-away certificate is made with the `openssl` command (Debian package `openssl`).
Everything is loopback and time-bounded.
"""
import os, re, socket, ssl, subprocess, sys, tempfile, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
TLS = "--tls" in sys.argv
N = int(args[0]) if args else 10000
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "actionwire")

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

cmd = [BIN, "--port", "0", "--bind", "127.0.0.1", "--workers", "1", "--handshake-timeout", "0"]
ctx = None
tmp = tempfile.TemporaryDirectory()
if TLS:
    cert, key = os.path.join(tmp.name, "cert.pem"), os.path.join(tmp.name, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True, timeout=30)
    cmd += ["--tls-cert", cert, "--tls-key", key]
    ctx = ssl.create_default_context(cafile=cert)

def connect(addr):
    s = socket.create_connection(addr, timeout=10)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    if len(s.recv(4096)) == 0:
        raise SystemExit("connection closed early")
    return s

server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
try:
    deadline = time.time() + 10
    addr = None
    while addr is None and time.time() < deadline:
        m = re.search(r"listening on ([\d.]+):(\d+)", server.stderr.readline())
        if m:
            addr = (m.group(1), int(m.group(2)))
    assert addr, "server did not report its address"
    connect(addr).close()  # warm up lazily allocated loop and TLS state
    time.sleep(0.5)
    before = rss_kib(server.pid)
    socks = [connect(addr) for _ in range(N)]
    time.sleep(1.0)
    after = rss_kib(server.pid)
    per = (after - before) * 1024 / N
    kind = "tls" if TLS else "plain"
    print(f"transport={kind} connections={N} rss_before_kib={before} rss_after_kib={after} "
          f"bytes_per_connection={per:.0f}")
    for s in socks:
        s.close()
finally:
    server.terminate()
    server.wait(timeout=10)
