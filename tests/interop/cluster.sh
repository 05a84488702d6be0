#!/usr/bin/env bash
# The cluster against a real actionhero 20.0.0 node: one actionhero node (socket and web
# servers) and one actionwire node (the `cache_actions` example: the server plus actions
# over its cache) on one private Redis. Chat, roomView and cache entries cross between them
# in both directions, and each side's cache locks hold against the other.
#
#   tests/interop/cluster.sh     # installs redis-server, node and actionhero when missing
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/interop/lib.sh
. tests/interop/lib.sh

install_actionhero
cargo build -q --locked --example cache_actions
start_redis
AH_TCP=1 start_actionhero cluster
wait_port "$AH_SOCKET" || { tail -20 "$AH_LOG" >&2; exit 1; }

AW=$(free_port)
"$PWD/target/debug/examples/cache_actions" --bind 127.0.0.1 --port "$AW" \
  --redis "redis://127.0.0.1:$REDIS_PORT" --log-level info >"$INTEROP_TMP/actionwire.log" 2>&1 &
INTEROP_PIDS+=($!)
wait_port "$AW" || { tail -20 "$INTEROP_TMP/actionwire.log" >&2; exit 1; }
for _ in $(seq 100); do grep -q "cluster: linked" "$INTEROP_TMP/actionwire.log" && break; sleep 0.1; done
grep -q "cluster: linked" "$INTEROP_TMP/actionwire.log" \
  || { echo "interop: actionwire never linked to Redis" >&2; cat "$INTEROP_TMP/actionwire.log" >&2; exit 1; }

python3 - "$AH_SOCKET" "$AH_WEB" "$AW" <<'PY' || { echo "interop: failed; actionhero's log:" >&2; tail -30 "$AH_LOG" >&2; echo "actionwire's log:" >&2; tail -30 "$INTEROP_TMP/actionwire.log" >&2; exit 1; }
import json, socket, sys, urllib.request
ah_socket, ah_web, aw = (int(a) for a in sys.argv[1:4])

class Client:
    """A socket client; chat lines are kept aside so replies can be read in order."""
    def __init__(self, port, name):
        self.name = name
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf, self.chat = b"", []
        welcome = self.line()
        assert welcome.get("context") == "api" and "welcome" in welcome, (name, welcome)
        self.id = self.details()["id"]
    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "%s closed the connection" % self.name
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return json.loads(raw)
    def reply(self):
        while True:
            m = self.line()
            if m.get("context") == "user":
                self.chat.append(m)
            elif m.get("context") == "response":
                return m
    def ask(self, text):
        self.s.sendall(text.encode() + b"\n")
        return self.reply()
    def details(self):
        r = self.ask("detailsView")
        assert r.get("status") == "OK", (self.name, r)
        return r["data"]
    def chat_line(self):
        """The next chat line (one read while waiting for a reply first, else the socket)."""
        if self.chat:
            return self.chat.pop(0)
        while True:
            m = self.line()
            if m.get("context") == "user":
                return m

def ok(r, what):
    assert r.get("status") == "OK", (what, r)
    return r.get("data")

def http(action, **params):
    req = urllib.request.Request("http://127.0.0.1:%d/api/%s" % (ah_web, action),
                                 data=json.dumps(params).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)

ah, aw_c = Client(ah_socket, "actionhero"), Client(aw, "actionwire")

# 1. Chat both ways in defaultRoom.
ok(ah.ask("roomAdd defaultRoom"), "roomAdd on actionhero")
ok(aw_c.ask("roomAdd defaultRoom"), "roomAdd on actionwire")
ok(aw_c.ask("say defaultRoom hello from actionwire"), "say on actionwire")
m = ah.chat_line()
assert (m["message"], m["room"], m["from"]) == ("hello from actionwire", "defaultRoom", aw_c.id), m
print("actionwire -> actionhero chat:", json.dumps(m))
ok(ah.ask("say defaultRoom hello from actionhero"), "say on actionhero")
m = aw_c.chat_line()
while m["from"] != ah.id:  # actionwire's own line, delivered to its member at once
    m = aw_c.chat_line()
assert (m["message"], m["room"]) == ("hello from actionhero", "defaultRoom"), m
print("actionhero -> actionwire chat:", json.dumps(m))

# 2. roomView on each node lists both nodes' members.
for c in (ah, aw_c):
    view = ok(c.ask("roomView defaultRoom"), "roomView on " + c.name)
    assert sorted(view["members"]) == sorted([ah.id, aw_c.id]), (c.name, view)
    assert view["membersCount"] == 2, view
print("roomView lists both members on both nodes")
ok(aw_c.ask("roomLeave defaultRoom"), "roomLeave on actionwire")
view = ok(ah.ask("roomView defaultRoom"), "roomView on actionhero after the leave")
assert sorted(view["members"]) == [ah.id], view

# 3. The cache: an entry saved on one node is loaded on the other, both ways.
value = {"nested": [1, "two", None], "z": True}
r = aw_c.ask(json.dumps({"action": "cacheSave", "params": {"key": "fromAW", "value": value, "ttl": 60000}}))
assert r.get("saved") is True, r
r = http("cacheLoad", key="fromAW")
e = r.get("entry")
assert e and e["value"] == value and e["key"] == "fromAW" and e["lastReadAt"] is None, r
assert e["expireTimestamp"] - e["createdAt"] == 60000, e
print("actionwire -> actionhero cache entry:", json.dumps(e))
r = http("cacheSave", key="fromAH", value="from actionhero")
assert r.get("saved") is True, r
r = aw_c.ask('{"action":"cacheLoad","params":{"key":"fromAH"}}')
e = r.get("entry")
assert e and e["value"] == "from actionhero" and e["expireTimestamp"] is None, r
assert e["lastReadAt"] is None, e
r = http("cacheLoad", key="fromAH")
assert r["entry"]["lastReadAt"] is not None and r["entry"]["lastReadAt"] >= e["createdAt"], r
print("actionhero -> actionwire cache entry:", json.dumps(e))

# 4. Locks hold across: each node's save fails while the other holds the key's lock.
assert http("cacheLock", key="fromAW").get("locked") is True
r = aw_c.ask('{"action":"cacheSave","params":{"key":"fromAW","value":1}}')
assert r.get("error") == "Object locked", r
assert http("cacheUnlock", key="fromAW").get("unlocked") is True
r = aw_c.ask('{"action":"cacheSave","params":{"key":"fromAW","value":2}}')
assert r.get("saved") is True, r
r = aw_c.ask('{"action":"cacheLock","params":{"key":"fromAH"}}')
assert r.get("locked") is True, r
r = http("cacheSave", key="fromAH", value="blocked")
assert r.get("error") == "Object locked", r
print("locks: actionwire refused with", json.dumps(r["error"]), "both ways")

# 5. cacheTest on both nodes counts the same cluster-wide entries (the two above + its own).
for name, r in (("actionwire", aw_c.ask('{"action":"cacheTest","params":{"key":"abc","value":"defg"}}')),
                ("actionhero", http("cacheTest", key="abc", value="defg"))):
    res = r.get("cacheTestResults")
    assert res and res["sizeResp"] == 3 and res["loadResp"]["value"] == "defg", (name, r)
print("interop cluster: passed against actionhero 20.0.0")
PY
