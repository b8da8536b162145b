"""Redis backplane, first step (docs/backplane.md): gateways sharing one real redis-server.

A redis-server is started on a free loopback port by the fixture; two gateway processes
(two workers each) use it with --redis. Checked: a publication on gateway A reaches the room's
members on A exactly once (local fast path, Redis echo dropped) and on B once (via Redis, led
by A's message id); what `redis-cli PUBLISH` sends reaches clients verbatim; `send` reaches a
user's connections on both gateways; subscriptions follow local interest (PUBSUB NUMSUB);
invalid UTF-8 from Redis is dropped; Redis stopped and restarted: local delivery continues,
the gateways reconnect and re-subscribe, delivery across gateways resumes; Redis that stops
reading (SIGSTOP): publishes queue up to the bound, then get `unavailable`, local delivery goes on;
Redis that answers slowly (a proxy holding every reply 400 ms): local delivery does not wait,
delivery across gateways keeps order, presence answers late but right; 10,000 rooms re-subscribed
after a restart in a handful of SUBSCRIBE commands (INFO commandstats).
"""

import json
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from client_proto import Client, RawJSON, parse_worker_stats, sum_stats
from wsgate_fixture import Gateway, free_port, http_exchange

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


class RedisServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return self
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def cli(self, *args: str) -> str:
        p = subprocess.run([REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True,
                           timeout=10)
        return p.stdout

    def call(self, *args: str | bytes | int):
        """One command over RESP2 on a fresh socket; the reply as bytes/int/list/None
        (an error reply raises). Binary-safe, unlike redis-cli's output."""
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        req = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s, s.makefile("rb") as f:
            s.sendall(req)

            def read():
                line = f.readline()
                kind, rest = line[:1], line[1:-2]
                if kind in (b"+",):
                    return rest
                if kind == b"-":
                    raise AssertionError(f"redis error: {rest.decode()}")
                if kind == b":":
                    return int(rest)
                if kind == b"$":
                    n = int(rest)
                    if n < 0:
                        return None
                    data = f.read(n + 2)
                    return data[:-2]
                if kind == b"*":
                    n = int(rest)
                    return None if n < 0 else [read() for _ in range(n)]
                raise AssertionError(f"bad RESP: {line!r}")

            return read()

    def numsub(self, channel: str) -> int:
        out = self.cli("PUBSUB", "NUMSUB", channel).split()
        return int(out[1]) if len(out) == 2 else -1


class WaitMixin:
    """wait_for(pred, what): poll every 50 ms until pred() is truthy, else fail naming `what`."""

    def wait_for(self, pred, what: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(0.05)
        self.fail(f"timed out waiting for: {what} (last: {last!r})")


def silent(c: Client, timeout: float = 0.4) -> list:
    return [m.obj for m in c.drain(timeout)]


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class RedisBackplaneTest(WaitMixin, unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        url = f"redis://127.0.0.1:{self.redis.port}"
        self.a = Gateway("--redis", url, "--server-id", "gwA", threads=2).start()
        self.b = Gateway("--redis", url, "--server-id", "gwB", threads=2).start()
        self.addCleanup(self.a.kill)
        self.addCleanup(self.b.kill)
        self.wait_for(lambda: self.redis.numsub("broadcast") == 4, "4 workers subscribed to broadcast")

    def clients(self, gw: Gateway, users: list[str], room: str | None = "lobby") -> list[Client]:
        out = []
        for u in users:
            c = Client.connect(gw.port, user=u)
            self.addCleanup(c.sock.close)
            if room:
                self.assertEqual(c.request("join", id=1, room=room)["type"], "ack")
            out.append(c)
        return out

    @staticmethod
    def live_counter(gw: Gateway, name: str) -> int:
        """A counter summed over workers from /metrics, while the gateway runs."""
        r = http_exchange(gw.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", wait_close=0)
        prefix = f"wsgate_{name}_total{{"
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in r.body.decode().splitlines()
                   if line.startswith(prefix))

    def stats(self, gw: Gateway) -> dict:
        rc, _ = gw.signal_and_wait()
        log = gw.log_text(limit=1 << 20)
        self.assertEqual(rc, 0, log[-3000:])
        return sum_stats(parse_worker_stats(log))

    def test_cross_gateway_publish_exactly_once(self):
        on_a = self.clients(self.a, [f"a{i}" for i in range(8)])
        on_b = self.clients(self.b, [f"b{i}" for i in range(8)])
        self.wait_for(lambda: self.redis.numsub("room:lobby") >= 2, "both gateways subscribed to room:lobby")
        data = '{"n": [1, 2.50, "\\u00e9"] }'
        for seq in range(20):
            self.assertEqual(on_a[seq % 8].send_json(
                f'{{"op":"publish","room":"lobby","id":{seq},"data":{{"seq":{seq},"v":{data}}}}}'), True)
        frames: dict[int, set] = {}
        for c in on_a + on_b:
            got = []
            while len(got) < 20:
                m = c.next_push_item(10)
                got.append(m)
            seqs = [json.loads(m.raw_data)["seq"] for m in got]
            self.assertEqual(sorted(seqs), list(range(20)), f"{c.user}: exactly once")
            for m in got:
                self.assertIn(f'"v":{data}', m.raw_data, "data forwarded byte for byte")
                self.assertTrue(m.payload.startswith(b'{"mid":"gwA:'), m.payload[:40])
                frames.setdefault(json.loads(m.raw_data)["seq"], set()).add(m.payload)
        # every member, local or remote, got the very same bytes (one message id per publication)
        for seq, variants in frames.items():
            self.assertEqual(len(variants), 1, f"publication {seq} arrived in {len(variants)} forms")
        self.assertEqual(len({json.loads(next(iter(v)))["mid"] for v in frames.values()}), 20)
        for c in on_a + on_b:
            self.assertEqual([o for o in silent(c) if o.get("type") == "message"], [], f"{c.user}: a duplicate")
        sa, sb = self.stats(self.a), self.stats(self.b)
        self.assertEqual(sa["redis_publishes"], 20)
        self.assertEqual(sa["redis_echoes"], 20 * 2, "each of A's two workers dropped each echo")
        self.assertEqual(sb["redis_echoes"], 0)

    def test_backend_publish_verbatim_and_user_channel(self):
        (alice_a,) = self.clients(self.a, ["alice"])
        (alice_b, bob) = self.clients(self.b, ["alice", "bob"])
        self.wait_for(lambda: self.redis.numsub("room:lobby") >= 2 and self.redis.numsub("user:alice") >= 2,
                      "subscriptions for room:lobby and user:alice on both gateways")
        raw = '{"type":"message","room":"lobby","from":"backend","data":{"k":[true,null]}}'
        self.assertGreaterEqual(int(self.redis.cli("PUBLISH", "room:lobby", raw)), 2)
        for c in (alice_a, alice_b, bob):
            self.assertEqual(c.next_push_item(10).payload.decode(), raw, "verbatim, one frame")
        # send from B to alice reaches her tab on A (via Redis) and on B (fast path), once each
        self.assertEqual(bob.request("send", id=5, user="alice", data="hi")["type"], "ack")
        for c in (alice_a, alice_b):
            m = c.next_push(10)
            self.assertEqual((m["type"], m["from"], m["data"]), ("direct", "bob", "hi"))
            self.assertEqual([o for o in silent(c) if o.get("type") == "direct"], [])
        self.assertEqual(silent(bob), [])
        # not UTF-8: dropped and counted, nobody gets a frame, the gateway carries on
        subprocess.run([REDIS_CLI, "-p", str(self.redis.port), "-x", "PUBLISH", "room:lobby"],
                       input=b"\xff\xfe", capture_output=True, timeout=10)
        for c in (alice_a, alice_b, bob):
            self.assertEqual([o for o in silent(c)], [], "invalid UTF-8 must not reach clients")
            self.assertEqual(c.request("ping", id=9)["type"], "pong")
        self.assertGreaterEqual(self.stats(self.b)["redis_invalid"], 1)

    def test_subscriptions_follow_local_interest(self):
        cs = self.clients(self.a, ["u1", "u2", "u3"], room="r1")
        self.wait_for(lambda: self.redis.numsub("room:r1") >= 1, "room:r1 subscribed")
        for c in cs:
            self.assertEqual(c.request("leave", id=2, room="r1")["type"], "ack")
        self.wait_for(lambda: self.redis.numsub("room:r1") == 0, "room:r1 unsubscribed after the last leave")
        self.wait_for(lambda: self.redis.numsub("user:u1") >= 1, "user:u1 subscribed")
        cs[0].close()
        self.wait_for(lambda: self.redis.numsub("user:u1") == 0, "user:u1 unsubscribed after its last connection")

    def test_redis_restart(self):
        (pa, qa) = self.clients(self.a, ["pa", "qa"])
        (qb,) = self.clients(self.b, ["qb"])
        self.wait_for(lambda: self.redis.numsub("room:lobby") >= 2, "room:lobby on both gateways")
        port = self.redis.port
        self.redis.stop()
        # Redis down: local delivery continues (the publication is queued for Redis)
        self.assertEqual(pa.request("publish", id=1, room="lobby", data=1)["type"], "ack")
        self.assertEqual(qa.next_push(10)["data"], 1)
        self.redis = RedisServer(port).start()
        self.addCleanup(self.redis.stop)
        # reconnect with backoff, re-subscribe (every channel of local interest), resume
        self.wait_for(lambda: self.redis.numsub("room:lobby") >= 2 and self.redis.numsub("broadcast") == 4,
                      "re-subscribed after the restart", timeout=30)
        seen = False
        for i in range(2, 50):
            self.assertEqual(pa.request("publish", id=i, room="lobby", data=i)["type"], "ack")
            try:
                while True:
                    m = qb.next_push(0.5)
                    if m["data"] == i:
                        seen = True
                        break
            except (socket.timeout, TimeoutError):
                continue
            if seen:
                break
        self.assertTrue(seen, "delivery across gateways did not resume after the Redis restart")
        # each session dials on its own backoff schedule: the command sessions may come back
        # after the subscribers did, so wait (on the live counters: the exit line only comes
        # once the gateway is stopped) for all four to have reconnected
        self.wait_for(lambda: self.live_counter(self.a, "redis_connects") >= 8,
                      "all four sessions of gateway A reconnected", timeout=30)
        s = self.stats(self.a)
        self.assertGreaterEqual(s["redis_connects"], 8)
        self.assertGreaterEqual(s["redis_disconnects"], 4, "both sessions of both workers saw the outage")

    def test_stalled_redis_bounds_the_queue_then_unavailable(self):
        # Redis stops reading (SIGSTOP): the command connection's output backs up, publishes
        # queue up to the session's bound, then get `unavailable`; local delivery never stops;
        # after SIGCONT the gateway carries on.
        (pub, local) = self.clients(self.a, ["p", "l"])
        (remote,) = self.clients(self.b, ["r"])
        self.wait_for(lambda: self.redis.numsub("room:lobby") >= 2, "room:lobby on both gateways")
        data = '"' + "x" * (512 * 1024) + '"'
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            outcome = None
            for i in range(400):
                r = pub.request("publish", id=i, room="lobby", data=RawJSON(data), timeout=20)
                got = local.next_push(20)                        # local delivery, every time
                self.assertEqual(len(got["data"]), 512 * 1024)
                pub.drain(0)                                     # its own push
                if r["type"] == "error":
                    outcome = (i, r["code"])
                    break
                self.assertEqual(r["type"], "ack", r)
            self.assertIsNotNone(outcome, "400 publications of 512 KiB never hit the queue bound")
            print(f"  [stalled redis] publication {outcome[0]} (512 KiB each) answered {outcome[1]}", flush=True)
            self.assertEqual(outcome[1], "unavailable")
            self.assertGreater(outcome[0], 4, "the bound should absorb a few MiB first")
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        # Redis is back: a small publication crosses gateways again (the queue drains first)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = pub.request("publish", id=1000, room="lobby", data="back")
            self.assertIn(r["type"], ("ack", "error"))
            try:
                while True:
                    m = remote.next_push(1)
                    if m["data"] == "back":
                        break
                break
            except (socket.timeout, TimeoutError):
                continue
        else:
            self.fail("no delivery across gateways after Redis resumed")
        s = self.stats(self.a)
        self.assertGreaterEqual(s["redis_publish_failures"], 1)



def commandstat(redis: RedisServer, name: str) -> int:
    """Calls of one command since the server started (INFO commandstats)."""
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class RedisResubscribeTest(unittest.TestCase):
    def test_10k_rooms_resubscribe_in_few_commands(self):
        # 100 clients x 100 rooms = 10,000 rooms of local interest: after a Redis
        # restart the gateway re-subscribes them all with many channels per SUBSCRIBE
        # (a fleet restart must not storm Redis), not one command per channel.
        redis = RedisServer().start()
        self.addCleanup(lambda: redis.stop())
        url = f"redis://127.0.0.1:{redis.port}"
        a = Gateway("--redis", url, "--server-id", "gwA", threads=2).start()
        self.addCleanup(a.kill)
        clients = []
        for i in range(100):
            c = Client.connect(a.port, user=f"u{i}")
            self.addCleanup(c.sock.close)
            for j in range(100):
                c.send_request("join", room=f"r{i}.{j}")  # no id: success is silent
            clients.append(c)
        for c in clients:
            self.assertEqual(c.request("ping", id="sync")["type"], "pong")
        deadline = time.monotonic() + 30
        while len(redis.call("PUBSUB", "CHANNELS", "room:*")) < 10_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(len(redis.call("PUBSUB", "CHANNELS", "room:*")), 10_000)
        port = redis.port
        redis.stop()
        redis = RedisServer(port).start()  # a fresh process: its command stats start at zero
        deadline = time.monotonic() + 30
        while len(redis.call("PUBSUB", "CHANNELS", "room:*")) < 10_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(len(redis.call("PUBSUB", "CHANNELS", "room:*")), 10_000, "all rooms re-subscribed")
        subscribes = commandstat(redis, "subscribe")
        # 10,000 rooms + 100 users + broadcast on each of 2 workers, 1,000 channels a command.
        self.assertLessEqual(subscribes, 20, f"{subscribes} SUBSCRIBE commands for 10,101 channels")
        self.assertGreaterEqual(subscribes, 11)
        # Delivery works on a sample.
        redis.cli("PUBLISH", "room:r42.7", '{"type":"message","data":1}')
        self.assertEqual(clients[42].next_push(10)["data"], 1)


class DelayProxy:
    """TCP proxy to a Redis that answers slowly: every chunk Redis sends is held
    `delay` seconds (pure latency: order kept, throughput not limited)."""

    def __init__(self, target_port: int, delay: float):
        self.target_port = target_port
        self.delay = delay
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.delay), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float):
        q: queue.Queue = queue.Queue()

        def sender():
            while True:
                due, data = q.get()
                if data is None:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + delay, data or None))
            if not data:
                return

    def close(self):
        self.closed = True
        self.lsock.close()
        for s in self.socks:
            s.close()


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class SlowRedisTest(unittest.TestCase):
    def test_slow_redis_does_not_slow_local_delivery(self):
        # Gateway A reaches Redis through a proxy that delays every reply by 400 ms;
        # gateway B is connected directly. A's local traffic must not wait for Redis,
        # its publications still reach B, and presence answers (late but right).
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        proxy = DelayProxy(redis.port, 0.4)
        self.addCleanup(proxy.close)
        a = Gateway("--redis", f"redis://127.0.0.1:{proxy.port}", "--server-id", "gwA", threads=2).start()
        b = Gateway("--redis", f"redis://127.0.0.1:{redis.port}", "--server-id", "gwB", threads=2).start()
        self.addCleanup(a.kill)
        self.addCleanup(b.kill)
        (pub, local) = [Client.connect(a.port, user=u) for u in ("pub", "local")]
        (remote,) = [Client.connect(b.port, user="remote")]
        for c in (pub, local, remote):
            self.addCleanup(c.sock.close)
            self.assertEqual(c.request("join", id=1, room="lobby")["type"], "ack")
        deadline = time.monotonic() + 15
        while redis.numsub("room:lobby") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # B holds one member (one worker): A's worker(s) make up the rest.
        self.assertGreaterEqual(redis.numsub("room:lobby"), 2, "A and B subscribed")
        worst_local = 0.0
        for i in range(20):
            t0 = time.monotonic()
            self.assertEqual(pub.request("publish", id=i, room="lobby", data=i)["type"], "ack")
            self.assertEqual(local.next_push(5)["data"], i)
            worst_local = max(worst_local, time.monotonic() - t0)
        self.assertLess(worst_local, 0.2, "local delivery waited for the slow Redis")
        got = [remote.next_push(10)["data"] for _ in range(20)]
        self.assertEqual(got, list(range(20)), "in publish order on the other gateway")
        t0 = time.monotonic()
        r = pub.request("presence", id="p", room="lobby")
        took = time.monotonic() - t0
        self.assertEqual(r["users"], ["local", "pub", "remote"])
        self.assertGreaterEqual(took, 0.35, "presence came from the (slow) Redis")
        rc, _ = a.signal_and_wait()
        self.assertEqual(rc, 0)
        s = sum_stats(parse_worker_stats(a.log_text(limit=1 << 20)))
        self.assertEqual(s["redis_disconnects"], 0, "slow is not down")
        self.assertEqual(s["redis_publish_failures"], 0)


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class RedisUnreachableTest(unittest.TestCase):
    def test_starts_and_serves_locally_then_joins_when_redis_appears(self):
        port = free_port()  # nothing listens here yet
        url = f"redis://127.0.0.1:{port}"
        a = Gateway("--redis", url, "--server-id", "gwA", threads=2).start()
        self.addCleanup(a.kill)
        (p, q) = [Client.connect(a.port, user=u) for u in ("p", "q")]
        for c in (p, q):
            self.addCleanup(c.sock.close)
            self.assertEqual(c.request("join", id=1, room="lobby")["type"], "ack")
        # a single node meanwhile: local delivery, publishes queued for Redis (acked)
        self.assertEqual(p.request("publish", id=2, room="lobby", data="early")["type"], "ack")
        self.assertEqual(q.next_push(10)["data"], "early")
        time.sleep(1.0)  # several failed dials, backing off
        redis = RedisServer(port).start()
        self.addCleanup(redis.stop)
        b = Gateway("--redis", url, "--server-id", "gwB", threads=2).start()
        self.addCleanup(b.kill)
        (r,) = [Client.connect(b.port, user="r")]
        self.addCleanup(r.sock.close)
        self.assertEqual(r.request("join", id=1, room="lobby")["type"], "ack")
        deadline = time.monotonic() + 30
        while redis.numsub("room:lobby") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(redis.numsub("room:lobby"), 2, "gateway A never reached Redis")
        self.assertEqual(p.request("publish", id=3, room="lobby", data="late")["type"], "ack")
        got = r.next_push(10)
        while got["data"] != "late":  # the queued "early" may or may not have reached B first
            got = r.next_push(10)

        def clients() -> int:  # connected_clients counts the asking redis-cli too
            for line in redis.cli("INFO", "clients").splitlines():
                if line.startswith("connected_clients:"):
                    return int(line.split(":")[1]) - 1
            return -1
        deadline = time.monotonic() + 30  # each session dials on its own backoff schedule
        while clients() < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(clients(), 8, "2 gateways x 2 workers x 2 sessions")
        rc, _ = a.signal_and_wait()
        self.assertEqual(rc, 0)
        s = sum_stats(parse_worker_stats(a.log_text(limit=1 << 20)))
        self.assertGreaterEqual(s["redis_disconnects"], 4, "failed dials are counted")
        self.assertGreaterEqual(s["redis_connects"], 4, "every session connected in the end")


if __name__ == "__main__":
    unittest.main()
