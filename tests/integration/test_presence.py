"""Presence in Redis across a fleet (docs/backplane.md, "Presence that heals after SIGKILL").

Three gateway processes (two workers each) share one real redis-server. Checked:
`presence` and `online` asked on any gateway answer for the whole fleet; a user with
connections on two gateways stays present and online when one of them leaves or
disconnects, and goes when the last one does; the seed's keys hold what the seed
says (`connection:{user}` JSON with a TTL, `server:{id}:connections`,
`room:{id}:members`); a gateway killed with SIGKILL leaves no ghost once the
presence TTL has passed, without anyone cleaning up; activity refreshes are
coalesced (one record write per user per refresh period, however many messages);
after a Redis restart (empty data) every gateway re-registers its presence.
"""

import json
import signal
import time
import unittest

from client_proto import Client, parse_worker_stats, sum_stats
from test_redis import REDIS, REDIS_CLI, RedisServer, WaitMixin
from wsgate_fixture import Gateway

TTL_S = 3  # --presence-ttl-s for every gateway here: refresh every second


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class FleetPresenceTest(WaitMixin, unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(lambda: self.redis.stop())
        self.url = f"redis://127.0.0.1:{self.redis.port}"
        self.gw = {}
        for name in ("gwA", "gwB", "gwC"):
            g = Gateway("--redis", self.url, "--server-id", name, "--presence-ttl-s", str(TTL_S),
                        "--rate-limit", "10000", threads=2).start()
            self.addCleanup(g.kill)
            self.gw[name] = g
        self.wait_for(lambda: self.redis.numsub("broadcast") == 6, "6 workers subscribed")

    # --- helpers ---------------------------------------------------------------------------

    def connect(self, gw: str, user: str, *rooms: str) -> Client:
        c = Client.connect(self.gw[gw].port, user=user)
        self.addCleanup(c.sock.close)
        for i, r in enumerate(rooms):
            self.assertEqual(c.request("join", id=i + 1, room=r)["type"], "ack")
        return c

    def presence(self, c: Client, room: str) -> list[str]:
        r = c.request("presence", id="p", room=room)
        self.assertEqual(r["type"], "presence", r)
        return r["users"]

    def online(self, c: Client, users: list[str]) -> list[str]:
        r = c.request("online", id="o", users=users)
        self.assertEqual(r["type"], "online", r)
        return r["users"]

    def zmembers(self, room: str) -> list[tuple[str, str]]:
        """room:{id}:members as (user, owner) pairs (member = user NUL owner)."""
        out = self.redis.call("ZRANGE", f"room:{room}:members", 0, -1)
        return sorted(tuple(m.decode().rsplit("\x00", 1)) for m in out)

    # --- tests -----------------------------------------------------------------------------

    def test_presence_and_online_are_fleet_wide(self):
        a = self.connect("gwA", "alice", "lobby")
        b = self.connect("gwB", "bob", "lobby")
        c = self.connect("gwC", "carol", "lobby", "games")
        lone = self.connect("gwC", "lone")  # online, in no room
        everyone = ["alice", "bob", "carol"]
        for asker in (a, b, c):
            self.assertEqual(self.wait_for(lambda: self.presence(asker, "lobby") == everyone and everyone,
                                           "lobby lists the fleet"), everyone)
        self.assertEqual(self.presence(a, "games"), ["carol"])
        self.assertEqual(self.online(a, ["bob", "nobody", "carol", "lone", "alice"]),
                         ["bob", "carol", "lone", "alice"])
        # The seed's keys, readable by any backend.
        rec = json.loads(self.redis.cli("GET", "connection:bob"))
        self.assertEqual(rec["userId"], "bob")
        self.assertEqual(rec["serverId"], "gwB")
        for k in ("connectedAt", "lastActivity"):
            self.assertRegex(rec[k], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        ttl = int(self.redis.cli("PTTL", "connection:bob"))
        self.assertTrue(0 < ttl <= TTL_S * 1000, ttl)
        self.assertEqual(self.redis.cli("EXISTS", "connection:nobody").strip(), "0")
        self.assertEqual(sorted(self.redis.cli("SMEMBERS", "server:gwC:connections").split()), ["carol", "lone"])
        owners = [o for _, o in self.zmembers("lobby")]
        self.assertEqual(sorted(o.split(":")[0] for o in owners), ["gwA", "gwB", "gwC"])
        # Leave and disconnect take effect fleet-wide.
        self.assertEqual(c.request("leave", id=9, room="lobby")["type"], "ack")
        self.wait_for(lambda: self.presence(a, "lobby") == ["alice", "bob"], "carol left the lobby")
        lone.close()
        self.wait_for(lambda: self.online(b, ["lone", "carol"]) == ["carol"], "lone went offline")
        self.wait_for(lambda: self.redis.cli("SMEMBERS", "server:gwC:connections").split() == ["carol"],
                      "lone left server:gwC:connections")

    def test_user_on_two_gateways_leaves_on_one(self):
        d1 = self.connect("gwA", "dana", "lobby")
        d2 = self.connect("gwB", "dana", "lobby")
        watcher = self.connect("gwC", "watcher", "lobby")
        self.wait_for(lambda: self.presence(watcher, "lobby") == ["dana", "watcher"], "dana present")
        self.wait_for(lambda: len([p for p in self.zmembers("lobby") if p[0] == "dana"]) == 2,
                      "one entry per gateway holding dana")
        # Leaves the room on A: still in it through B.
        self.assertEqual(d1.request("leave", id=5, room="lobby")["type"], "ack")
        self.wait_for(lambda: len([p for p in self.zmembers("lobby") if p[0] == "dana"]) == 1, "A's entry removed")
        self.assertEqual(self.presence(watcher, "lobby"), ["dana", "watcher"])
        # Disconnects on A: still online through B (the record is kept, not deleted).
        # Polled without a pause for 1.5 refresh periods: a gap (record deleted by A,
        # rewritten only by B's next refresh) would show.
        d1.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5 * TTL_S / 3:
            self.assertEqual(self.redis.call("EXISTS", "connection:dana"), 1)
            self.assertEqual(self.online(watcher, ["dana"]), ["dana"])
        # Well past a refresh period and the TTL: B keeps it alive.
        time.sleep(TTL_S + 0.5)
        self.assertEqual(self.online(watcher, ["dana"]), ["dana"])
        self.assertEqual(self.presence(watcher, "lobby"), ["dana", "watcher"])
        self.assertEqual(json.loads(self.redis.cli("GET", "connection:dana"))["serverId"], "gwB")
        # The last connection goes: offline and absent at once (no TTL wait).
        d2.close()
        self.wait_for(lambda: self.online(watcher, ["dana"]) == [], "dana offline after her last connection",
                      timeout=2)
        self.assertEqual(self.presence(watcher, "lobby"), ["watcher"])
        self.assertEqual(self.redis.cli("EXISTS", "connection:dana", "connection:dana:owners").strip(), "0")

    def test_sigkilled_gateway_leaves_no_ghost(self):
        a = self.connect("gwA", "alice", "lobby")
        ghosts = [self.connect("gwC", f"c{i}", "lobby") for i in range(6)]
        self.connect("gwB", "c0", "lobby")  # c0 also lives on B: must survive C's death
        want = sorted(["alice"] + [f"c{i}" for i in range(6)])
        self.wait_for(lambda: self.presence(a, "lobby") == want, "C's users present")
        self.assertEqual(self.online(a, ["c1", "c5"]), ["c1", "c5"])
        self.gw["gwC"].proc.send_signal(signal.SIGKILL)
        self.gw["gwC"].proc.wait(5)
        killed = time.monotonic()
        for g in ghosts:
            g.sock.close()
        # Nobody cleans up: within the TTL (plus one refresh period of slack) C's
        # entries are gone from every answer and from Redis itself.
        self.wait_for(lambda: self.presence(a, "lobby") == ["alice", "c0"], "C's members gone from presence",
                      timeout=TTL_S + 3)
        self.wait_for(lambda: self.online(a, ["c0", "c1", "c5"]) == ["c0"], "C's users offline",
                      timeout=TTL_S + 3)
        self.wait_for(lambda: not any(o.startswith("gwC:") for _, o in self.zmembers("lobby")),
                      "C's members trimmed from room:lobby:members", timeout=TTL_S + 3)
        self.wait_for(lambda: self.redis.cli("EXISTS", "server:gwC:connections", "server:gwC:alive",
                                             "connection:c1").strip() == "0",
                      "C's keys expired", timeout=TTL_S + 3)
        elapsed = time.monotonic() - killed
        self.assertLess(elapsed, TTL_S + 3)
        # c0's record survives through B.
        self.assertEqual(json.loads(self.redis.cli("GET", "connection:c0"))["userId"], "c0")

    def test_activity_refresh_is_coalesced(self):
        c = self.connect("gwA", "chatty", "lobby")
        self.wait_for(lambda: self.redis.cli("EXISTS", "connection:chatty").strip() == "1", "registered")
        first = json.loads(self.redis.cli("GET", "connection:chatty"))
        self.redis.cli("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 2.5:  # 400 messages over 2.5 refresh periods
            self.assertEqual(c.request("ping", id=n)["type"], "pong")
            n += 1
            if n >= 400:
                break
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        stats = self.redis.cli("INFO", "commandstats")
        sets = 0
        for line in stats.splitlines():
            if line.startswith("cmdstat_set:"):
                sets = int(line.split("calls=")[1].split(",")[0])
        # Each refresh pass of each of the 6 workers writes server:{id}:alive once, and
        # gwA's pass writes chatty's record once: at most ~ (elapsed + 1) passes each.
        passes = int(elapsed / (TTL_S / 3)) + 2
        self.assertLessEqual(sets, passes * 6 + passes, f"{sets} SETs for {n} messages in {elapsed:.1f}s")
        self.assertGreater(n, 100)
        self.wait_for(lambda: json.loads(self.redis.cli("GET", "connection:chatty"))["lastActivity"]
                      > first["lastActivity"], "lastActivity advanced")
        rec = json.loads(self.redis.cli("GET", "connection:chatty"))
        self.assertEqual(rec["connectedAt"], first["connectedAt"])

    def test_redis_restart_reregisters_presence(self):
        a = self.connect("gwA", "alice", "lobby")
        b = self.connect("gwB", "bob", "lobby")
        self.wait_for(lambda: self.presence(a, "lobby") == ["alice", "bob"], "both present")
        port = self.redis.port
        self.redis.stop()
        # Redis down: presence answers for this gateway only.
        self.assertEqual(self.presence(a, "lobby"), ["alice"])
        self.redis = RedisServer(port).start()  # empty: no persistence
        self.wait_for(lambda: self.presence(a, "lobby") == ["alice", "bob"], "B re-registered bob", timeout=30)
        self.wait_for(lambda: self.online(b, ["alice"]) == ["alice"], "A re-registered alice", timeout=30)
        self.assertEqual(self.redis.cli("GET", "connection:alice") != "", True)

    def test_stats_count_queries_and_writes(self):
        a = self.connect("gwA", "alice", "lobby")
        self.wait_for(lambda: self.presence(a, "lobby") == ["alice"], "alice present")
        self.online(a, ["alice", "bob"])
        # the heartbeat key is written at the end of each refresh pass (one per worker at
        # connect); no pass runs once the drain has begun
        self.wait_for(lambda: self.redis.call("EXISTS", "server:gwA:alive") == 1, "gwA's first refresh passes")
        time.sleep(0.3)
        g = self.gw["gwA"]
        rc, _ = g.signal_and_wait()
        self.assertEqual(rc, 0)
        s = sum_stats(parse_worker_stats(g.log_text(limit=1 << 20)))
        self.assertGreaterEqual(s["redis_queries"], 2)
        self.assertGreaterEqual(s["redis_presence_writes"], 3)
        self.assertGreaterEqual(s["redis_presence_refreshes"], 2)  # one pass per worker at connect
        self.assertEqual(s["redis_errors"], 0)


if __name__ == "__main__":
    unittest.main()
