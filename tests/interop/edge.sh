#!/usr/bin/env bash
# Edge mode against a real actionhero 20.0.0 app: an actionwire edge forwards the actions it
# does not define to actionhero's web server, and a socket client is answered by actions that
# exist only there (`createChatRoom`), replies shaped exactly like local ones.
#
#   tests/interop/edge.sh     # installs redis-server, node and actionhero when missing
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/interop/lib.sh
. tests/interop/lib.sh

install_actionhero
cargo build -q --locked --bin actionwire
start_redis
start_actionhero edge

EDGE=$(free_port)
# 50 pipelined calls below: a client may have that many in flight (the default is 5).
echo '{"general":{"simultaneousActions":50}}' >"$INTEROP_TMP/edge.json"
"$PWD/target/debug/actionwire" --config "$INTEROP_TMP/edge.json" --bind 127.0.0.1 --port "$EDGE" \
  --upstream "http://127.0.0.1:$AH_WEB/api" --log-level info >"$INTEROP_TMP/edge.log" 2>&1 &
INTEROP_PIDS+=($!)
wait_port "$EDGE" || { tail -20 "$INTEROP_TMP/edge.log" >&2; exit 1; }
# The edge asks actionhero for its documentation once at start; wait for that line so the
# `documentation` check below is not a race.
for _ in $(seq 100); do grep -q "forwarded actions" "$INTEROP_TMP/edge.log" && break; sleep 0.1; done
grep "forwarded actions" "$INTEROP_TMP/edge.log" || { echo "interop: the edge never fetched actionhero's documentation" >&2; cat "$INTEROP_TMP/edge.log" >&2; exit 1; }

python3 - "$EDGE" "$REDIS_PORT" <<'PY'
import json, socket, subprocess, sys
edge, redis_port = int(sys.argv[1]), int(sys.argv[2])

class Client:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", edge), timeout=20)
        self.buf = b""
        welcome = dict(self.line())
        assert welcome["context"] == "api" and "welcome" in welcome, welcome
    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "the edge closed the connection"
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return json.loads(raw, object_pairs_hook=lambda pairs: pairs)  # keeps field order
    def ask(self, text):
        self.s.sendall(text.encode() + b"\n")
        return self.line()

def keys(pairs): return [k for k, _ in pairs]
def value(pairs, key): return dict(pairs)[key]

def redis(*args):
    return subprocess.run(["redis-cli", "-p", str(redis_port), *args], check=True,
                          capture_output=True, text=True, timeout=10).stdout.split()

c = Client()
# 1. An action defined only in actionhero, answered through the edge like a local action:
#    actionhero's metadata blocks dropped, then context and this connection's counters.
r = c.ask('{"action":"createChatRoom","params":{"name":"interopRoom","messageId":"m1"}}')
assert keys(r) == ["didCreate", "context", "messageCount", "messageId"], r
assert value(r, "didCreate") == 1 and value(r, "context") == "response", r
assert value(r, "messageCount") == 1 and value(r, "messageId") == "m1", r
print("createChatRoom through the edge:", json.dumps(dict(r)))
# It ran in actionhero: the room is in actionhero's Redis set.
assert "interopRoom" in redis("SMEMBERS", "actionhero:chatRoom:rooms"), "room not in Redis"
# A second time: the room exists, and actionhero's thrown error is an error reply.
r = c.ask('{"action":"createChatRoom","params":{"name":"interopRoom"}}')
assert keys(r) == ["error", "context", "messageCount", "messageId"], r
assert value(r, "error") == "room exists" and value(r, "messageCount") == 2, r
# 2. actionhero's own error (a missing required param) is an error reply.
r = c.ask('{"action":"createChatRoom","params":{}}')
assert keys(r) == ["error", "context", "messageCount", "messageId"], r
assert value(r, "error") == "name is a required parameter for this action", r
print("missing param:", json.dumps(dict(r)))
# 3. A bare call takes the connection's sticky params, as for a local action.
r = c.ask("paramAdd name=stickyRoom")
assert value(r, "status") == "OK", r
r = c.ask("createChatRoom")
assert value(r, "didCreate") == 1 and value(r, "messageCount") == 5, r
assert "stickyRoom" in redis("SMEMBERS", "actionhero:chatRoom:rooms"), "sticky room not in Redis"
# 4. An action neither side defines: actionhero's unknown-action error.
r = c.ask('{"action":"noSuchAction"}')
assert value(r, "error") == "unknown action or invalid apiVersion", r
# 5. `documentation` lists actionhero's actions beside the edge's own.
r = c.ask("documentation")
docs = dict(value(r, "data"))
assert "createChatRoom" in docs and "randomNumber" in docs and "status" in docs, sorted(docs)
# 6. Pipelined calls on one connection: every one answered, each with its own messageId and
#    the counter it was given when read (replies may come in any order).
n = 50
c.s.sendall("".join('{"action":"createChatRoom","params":{"name":"p%d","messageId":"p%d"}}\n' % (i, i)
                    for i in range(n)).encode())
seen = {}
for _ in range(n):
    r = dict(c.line())
    assert r.get("didCreate") == 1, r
    seen[r["messageId"]] = r["messageCount"]
assert sorted(seen) == sorted("p%d" % i for i in range(n)), seen
base = 7
assert all(seen["p%d" % i] == base + 1 + i for i in range(n)), seen
r = c.ask("quit")
assert value(r, "status") == "Bye!", r
print("interop edge: passed against actionhero 20.0.0 (%d pipelined calls answered)" % n)
PY
