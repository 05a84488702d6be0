# Shared by the benchmark scripts (sourced): installing a missing tool, free loopback ports
# and waiting for a listener.
need() { # command package
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (Debian package)..." >&2
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$2" >/dev/null
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port: wait until it accepts, at most 10 s
  python3 - "$1" <<'PY'
import socket, sys, time
end = time.time() + 10
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("port %s did not open" % sys.argv[1])
PY
}
