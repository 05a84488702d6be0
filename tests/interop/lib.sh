# Shared by the interop scripts (sourced): installs what they need, starts a private Redis and
# an actionhero 20.0.0 app on free 127.0.0.1 ports, and stops only what it started.
#
# actionhero is installed from npm into a scratch directory (default
# target/interop/actionhero-20.0.0, reused by later runs; set ACTIONHERO_DIR to move it) and
# its project is generated there with `actionhero generate`, exactly as its users start one,
# plus actionhero's own example action `randomNumber` for the benchmarks.

INTEROP_PIDS=()
interop_cleanup() {
  local p
  for p in "${INTEROP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$INTEROP_TMP"
}
# A scratch directory for logs and files, removed at exit with every process started here.
INTEROP_TMP=$(mktemp -d)
trap interop_cleanup EXIT

# need COMMAND PACKAGE: installs a Debian package when COMMAND is missing, or fails loudly.
need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "interop: installing $2 (Debian package)..." >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "interop: $1 is still missing after installing $2" >&2; exit 1; }
}

# free_port and wait_port PORT (at most 10 s) come from the benchmarks' helper.
# shellcheck source=benches/ports.sh
. benches/ports.sh

# wait_http URL SECONDS LOG: until URL answers 200, or fail showing the tail of LOG.
wait_http() {
  python3 - "$1" "$2" <<'PY' || { echo "interop: $1 did not answer; last lines of $3:" >&2; tail -20 "$3" >&2; exit 1; }
import sys, time, urllib.request
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

# install_actionhero: sets AH_DIR to a generated actionhero 20.0.0 project.
install_actionhero() {
  need python3 python3
  need node nodejs
  need npm npm
  AH_DIR=${ACTIONHERO_DIR:-$PWD/target/interop/actionhero-20.0.0}
  if [ ! -f "$AH_DIR/.generated" ]; then
    echo "interop: installing actionhero 20.0.0 from npm into $AH_DIR..." >&2
    rm -rf "$AH_DIR"; mkdir -p "$AH_DIR"
    (cd "$AH_DIR" && npm install --no-audit --no-fund --loglevel=error actionhero@20.0.0 >/dev/null \
      && ./node_modules/.bin/actionhero generate >/dev/null \
      && npm install --no-audit --no-fund --loglevel=error >/dev/null) \
      || { echo "interop: installing actionhero failed" >&2; exit 1; }
    # Loopback only: the generated project listens on 0.0.0.0.
    sed -i "s/bindIP: '0.0.0.0'/bindIP: '127.0.0.1'/" "$AH_DIR/config/servers/web.js"
    # actionhero's own example action `randomNumber` (not generated) for the benchmarks.
    sed "s|require('./../index.js')|require('actionhero')|" \
      "$AH_DIR/node_modules/actionhero/actions/randomNumber.js" >"$AH_DIR/actions/randomNumber.js"
    touch "$AH_DIR/.generated"
  fi
  # The socket server on a port of our choosing, loopback only (enabled by
  # ENABLE_TCP_SERVER), and actions over actionhero's cache for the cluster script: written
  # every time, so a project installed by an older script gets them too.
  sed -i -e "s/port: 5000,/port: parseInt(process.env.SOCKET_PORT || 5000),/" \
    -e "s/bindIP: '0.0.0.0'/bindIP: '127.0.0.1'/" "$AH_DIR/config/servers/socket.js"
  # actionhero's own example action `cacheTest` (not generated either).
  sed "s|require('./../index.js')|require('actionhero')|" \
    "$AH_DIR/node_modules/actionhero/actions/cacheTest.js" >"$AH_DIR/actions/cacheTest.js"
  local name call
  for name in Save Load Lock Unlock; do
    case $name in
      Save) call="response.saved = await api.cache.save(params.key, params.value, params.ttl ? parseInt(params.ttl) : null)" ;;
      Load) call="response.entry = await api.cache.load(params.key)" ;;
      Lock) call="response.locked = await api.cache.lock(params.key, null)" ;;
      Unlock) call="response.unlocked = await api.cache.unlock(params.key)" ;;
    esac
    cat >"$AH_DIR/actions/cache$name.js" <<JS
'use strict'
const { Action, api } = require('actionhero')

module.exports = class Cache$name extends Action {
  constructor () {
    super()
    this.name = 'cache$name'
    this.description = 'interop: api.cache on this node'
    this.inputs = { key: { required: true }, value: { required: false }, ttl: { required: false } }
    this.outputExample = {}
  }

  async run ({ params, response }) {
    $call
  }
}
JS
  done
}

# start_redis: sets REDIS_PORT to a private redis-server on 127.0.0.1 (no persistence).
start_redis() {
  need redis-server redis-server
  REDIS_PORT=$(free_port)
  local log="$INTEROP_TMP/redis.log"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$log" 2>&1 &
  INTEROP_PIDS+=($!)
  wait_port "$REDIS_PORT" || { tail -20 "$log" >&2; exit 1; }
}

# start_actionhero NAME: an actionhero node of the generated app on REDIS_PORT; sets AH_WEB
# (its web server's port), AH_SOCKET (its socket server's, when AH_TCP=1) and AH_LOG. NAME
# tells nodes apart in the logs.
start_actionhero() {
  AH_WEB=$(free_port)
  AH_SOCKET=$(free_port)
  AH_LOG="$INTEROP_TMP/actionhero-$1.log"
  local tcp=()
  [ "${AH_TCP:-0}" = 1 ] && tcp=(ENABLE_TCP_SERVER=1)
  (cd "$AH_DIR" && exec env "${tcp[@]}" PORT="$AH_WEB" SOCKET_PORT="$AH_SOCKET" \
    REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT" node ./node_modules/.bin/actionhero start) \
    >"$AH_LOG" 2>&1 &
  INTEROP_PIDS+=($!)
  wait_http "http://127.0.0.1:$AH_WEB/api/status" 60 "$AH_LOG"
}
