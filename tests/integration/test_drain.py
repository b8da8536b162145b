"""Graceful drain and heartbeats (docs/operations.md).

Drain, the seed's sequence: at SIGTERM /readyz answers 503 at once (seen on a connection
accepted before) and the listeners close (new connections are refused); clients keep being
served for --drain-delay-ms; then every /ws client gets {"type":"server_shutdown",
"reconnect_in_ms":…} (jittered) and a close 1001, in batches spread over --drain-spread-ms;
what was acknowledged before the drain is delivered before the notice; connections that do
not answer the close are cut after --close-timeout-ms; this gateway's Redis presence goes;
exit 0. A second SIGTERM during the drain exits at once.

Heartbeats: a connection silent for a ping interval is pinged; one still silent at the next
visit is cut; one that answers (or talks) stays. Idle timeout: a connection that sends no
message (pongs do not count) for --idle-timeout-s is closed 1000 "idle timeout".
"""

import json
import signal
import socket
import subprocess
import time
import unittest

from client_proto import Client, parse_worker_stats, sum_stats
from test_redis import REDIS, REDIS_CLI, RedisServer
from wsgate_fixture import OP_PING, OP_PONG, OP_TEXT, Gateway, PeerClosed, RawWS, gateway_binary, http_exchange


def stats_of(gw: Gateway) -> dict:
    return sum_stats(parse_worker_stats(gw.log_text(limit=1 << 22)))


class DrainTest(unittest.TestCase):
    def gateway(self, *args: str, **kw) -> Gateway:
        gw = Gateway(*args, **kw).start()
        self.addCleanup(gw.kill)
        return gw

    def members(self, gw: Gateway, n: int, prefix: str, room: str = "lobby") -> list:
        """n clients (users prefix0..), each joined to `room`."""
        out = []
        for i in range(n):
            c = Client.connect(gw.port, user=f"{prefix}{i}")
            self.addCleanup(c.sock.close)
            self.assertEqual(c.request("join", id=1, room=room)["type"], "ack")
            out.append(c)
        return out

    def test_readyz_then_503_and_listeners_closed(self):
        gw = self.gateway(drain_delay_ms=3000, threads=2)
        r = http_exchange(gw.port, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", wait_close=0)
        self.assertEqual(r.status, 200)
        early = socket.create_connection(("127.0.0.1", gw.port))  # accepted before the signal
        self.addCleanup(early.close)
        time.sleep(0.1)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        early.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
        early.settimeout(3)
        head = early.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head[:80])
        with self.assertRaises(ConnectionRefusedError):  # no new connections during the drain
            socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
        self.assertEqual(gw.proc.wait(15), 0)

    def test_drain_sequence(self):
        gw = self.gateway("--reconnect-jitter-ms", "3000", drain_delay_ms=1000, drain_spread_ms=1000, threads=2)
        clients = self.members(gw, 40, "u")
        echo = RawWS.connect(gw.port, "/echo")
        self.addCleanup(echo.sock.close)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # During the delay the gateway still serves its clients.
        self.assertEqual(clients[0].request("publish", id=2, room="lobby", data="still here")["type"], "ack")
        for c in clients:
            self.assertEqual(c.next_push(5)["data"], "still here")
        # The first notice comes after the drain delay (1 s), not before.
        first_frame = clients[0].ws.recv_frame(10)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "no notice before the drain delay")
        notices = []
        for c in clients:
            out = c.ws.read_until_close(timeout=10, reply=True)
            self.assertIsNotNone(out.close, f"{c.user}: no close frame")
            self.assertEqual(out.code, 1001)
            frames = ([first_frame] if c is clients[0] else []) + out.frames
            texts = [json.loads(f.payload) for f in frames if f.opcode == OP_TEXT]
            self.assertEqual(len(texts), 1, texts)
            self.assertEqual(texts[0]["type"], "server_shutdown")
            self.assertTrue(0 <= texts[0]["reconnect_in_ms"] <= 3000, texts[0])
            notices.append(texts[0]["reconnect_in_ms"])
        self.assertGreater(len(set(notices)), 10, "reconnect_in_ms is jittered")
        out = echo.read_until_close(timeout=10, reply=True)
        self.assertEqual(out.code, 1001)
        self.assertEqual([f for f in out.frames if f.opcode == OP_TEXT], [], "/echo gets no protocol notice")
        self.assertEqual(gw.proc.wait(15), 0)
        s = stats_of(gw)
        self.assertEqual(s["drain_notices"], 40)
        self.assertEqual(s["drain_cut"], 0)

    def test_paced_batches(self):
        # 60 clients over a 1.5 s spread: the notices arrive over about that long, not at once.
        gw = self.gateway(drain_delay_ms=0, drain_spread_ms=1500, threads=1)
        socks = []
        for i in range(60):
            c = Client.connect(gw.port, user=f"p{i}")
            self.addCleanup(c.sock.close)
            socks.append(c)
        arrival = {}
        gw.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        pending = list(socks)
        while pending and time.monotonic() - t0 < 10:
            for c in list(pending):
                f = c.ws.poll_frame(0.005)
                if f is not None and f.opcode == OP_TEXT:
                    arrival[c.user] = time.monotonic() - t0
                    pending.remove(c)
        self.assertEqual(len(arrival), 60)
        spread = max(arrival.values()) - min(arrival.values())
        self.assertGreater(spread, 0.8, f"notices within {spread:.2f}s: not paced")
        self.assertEqual(gw.proc.wait(15), 0)

    def test_acknowledged_before_the_drain_is_delivered_before_the_close(self):
        gw = self.gateway(drain_delay_ms=0, threads=2)
        members = self.members(gw, 10, "m")
        pub = members[0]
        for i in range(50):
            pub.send_request("publish", id=i, room="lobby", data=i)
        acked = 0
        while acked < 50:
            if pub.next_reply(5)["type"] == "ack":
                acked += 1
        gw.proc.send_signal(signal.SIGTERM)
        for c in members:
            out = c.ws.read_until_close(timeout=10, reply=True)
            got = [json.loads(f.payload) for f in out.frames if f.opcode == OP_TEXT]
            buffered = [m.obj for m in c._frames]  # read by the Client before the drain began
            pushes = [m["data"] for m in buffered + got if m.get("type") == "message"]
            self.assertEqual(pushes, list(range(50)), f"{c.user}: every acknowledged publication, then the close")
            self.assertEqual(got[-1]["type"], "server_shutdown")
            self.assertEqual(out.code, 1001)
        self.assertEqual(gw.proc.wait(15), 0)

    def test_unresponsive_client_is_cut_after_the_close_timeout(self):
        gw = self.gateway("--close-timeout-ms", "500", drain_delay_ms=0, threads=1)
        mute = RawWS.connect(gw.port, "/echo")  # never answers the close
        self.addCleanup(mute.sock.close)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertGreaterEqual(stats_of(gw)["drain_cut"], 1)

    def test_connections_queued_at_the_signal_are_served_not_reset(self):
        # Stop the gateway, connect clients (the kernel completes their handshakes into the
        # accept queue), then SIGTERM + SIGCONT: closing the listener must not reset them. Each
        # is served during the drain delay and then told to leave like the others.
        gw = Gateway(threads=1, drain_delay_ms=1500).start()
        self.addCleanup(gw.kill)
        gw.proc.send_signal(signal.SIGSTOP)
        socks = []
        try:
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                self.addCleanup(s.close)
                socks.append(s)
            gw.proc.send_signal(signal.SIGTERM)
        finally:
            gw.proc.send_signal(signal.SIGCONT)
        served = 0
        for i, s in enumerate(socks):
            ws = RawWS(s)
            r = ws.handshake(f"/ws?user=q{i}")
            self.assertEqual(r.status, 101, f"client {i}: {r.status}")
            served += 1
        notices = 0
        for i, s in enumerate(socks):
            ws = RawWS(s)
            f = ws.recv_frame(10)
            self.assertEqual(json.loads(f.payload)["type"], "server_shutdown", f)
            notices += 1
            self.assertEqual(ws.recv_frame(10).close_code, 1001)
        self.assertEqual((served, notices), (40, 40))
        self.assertEqual(gw.proc.wait(15), 0)
        self.assertEqual(stats_of(gw)["accepted"], 40 + 1, "the 40 and the fixture's health check")

    def test_second_signal_exits_at_once(self):
        gw = self.gateway(drain_delay_ms=20000, threads=2)
        c = Client.connect(gw.port, user="stay")
        self.addCleanup(c.sock.close)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertIsNone(gw.proc.poll(), "still draining")
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.wait(5), 1)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertIn("event=second_signal", gw.log_text())


@unittest.skipUnless(REDIS and REDIS_CLI, "redis-server not installed")
class DrainRedisTest(unittest.TestCase):
    def test_presence_removed_at_drain(self):
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        url = f"redis://127.0.0.1:{redis.port}"
        a = Gateway("--redis", url, "--server-id", "gwA", threads=2).start()
        b = Gateway("--redis", url, "--server-id", "gwB", threads=2).start()
        self.addCleanup(a.kill)
        self.addCleanup(b.kill)
        for gw, users in ((a, ["x1", "x2", "both"]), (b, ["both", "y1"])):
            for u in users:
                c = Client.connect(gw.port, user=u)
                self.addCleanup(c.sock.close)
                self.assertEqual(c.request("join", id=1, room="lobby")["type"], "ack")
        deadline = time.monotonic() + 10
        while redis.call("SCARD", "server:gwA:connections") != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(redis.call("SCARD", "server:gwA:connections"), 3)
        a.proc.send_signal(signal.SIGTERM)
        self.assertEqual(a.proc.wait(15), 0)
        # gwA's state is gone at once (no TTL wait); what gwB holds stays.
        self.assertEqual(redis.call("EXISTS", "server:gwA:connections", "connection:x1", "connection:x2"), 0)
        members = sorted(m.decode().rsplit("\x00", 1)[0] for m in redis.call("ZRANGE", "room:lobby:members", 0, -1))
        self.assertEqual(members, ["both", "y1"])
        self.assertEqual(json.loads(redis.call("GET", "connection:both"))["userId"], "both")


class HeartbeatTest(unittest.TestCase):
    def test_silent_connection_is_pinged_then_cut(self):
        gw = Gateway("--ping-interval-s", "1", threads=1).start()
        self.addCleanup(gw.kill)
        silent = RawWS.connect(gw.port, "/echo")     # never answers anything
        alive = RawWS.connect(gw.port, "/echo")      # answers pings
        self.addCleanup(silent.sock.close)
        self.addCleanup(alive.sock.close)
        got_ping = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:
            f = alive.poll_frame(0.05)
            if f is not None and f.opcode == OP_PING:
                got_ping = True
                alive.send_frame(OP_PONG, f.payload)
        self.assertTrue(got_ping, "a silent connection gets pinged")
        # The mute one was pinged and, still silent a whole interval later, cut (EOF or RST).
        closed = False
        try:
            while True:
                f = silent.recv_frame(2)
                self.assertEqual(f.opcode, OP_PING, f)  # pings only, then the cut
        except (PeerClosed, ConnectionError):
            closed = True
        self.assertTrue(closed, "the silent connection was not cut")
        # The answering one is still served.
        alive.send_text("ping?")
        while True:
            f = alive.recv_frame(3)
            if f.opcode == OP_PING:
                alive.send_frame(OP_PONG, f.payload)
                continue
            self.assertEqual((f.opcode, f.payload), (OP_TEXT, b"ping?"))
            break
        self.assertEqual(gw.stop(), 0)
        s = stats_of(gw)
        self.assertGreaterEqual(s["heartbeat_timeouts"], 1)
        self.assertGreaterEqual(s["pings_sent"], 2)

    def test_idle_timeout_closes_1000_and_pongs_do_not_count(self):
        # Pings every second, idle timeout 2 s: a client that answers every ping
        # but sends no message is closed 1000 "idle timeout" after 2-3 s; one that
        # sends a message every 0.4 s stays.
        gw = Gateway("--ping-interval-s", "1", "--idle-timeout-s", "2", threads=1).start()
        self.addCleanup(gw.kill)
        idle = RawWS.connect(gw.port, "/echo")
        busy = RawWS.connect(gw.port, "/echo")
        self.addCleanup(idle.sock.close)
        self.addCleanup(busy.sock.close)
        t0 = time.monotonic()
        close_code = None
        next_send = t0
        while time.monotonic() - t0 < 5 and close_code is None:
            if time.monotonic() >= next_send:
                busy.send_text("still here")
                next_send += 0.4
            for ws, answers in ((idle, True), (busy, False)):
                f = ws.poll_frame(0.02)
                if f is None:
                    continue
                if f.opcode == OP_PING:
                    ws.send_frame(OP_PONG, f.payload)
                elif f.opcode == 0x8:
                    self.assertIs(ws, idle, f"the busy client was closed: {f}")
                    close_code = (f.close_code, f.payload[2:])
        took = time.monotonic() - t0
        self.assertEqual(close_code, (1000, b"idle timeout"))
        self.assertGreaterEqual(took, 1.9, "closed before the idle timeout")
        self.assertLess(took, 4.5, "closed much later than timeout + one interval")
        busy.send_text("after")
        while True:
            f = busy.recv_frame(3)
            if f.opcode == OP_TEXT and f.payload == b"after":
                break
        self.assertEqual(gw.stop(), 0)
        s = stats_of(gw)
        self.assertEqual(s["idle_closes"], 1)

    def test_idle_timeout_without_pings(self):
        gw = Gateway("--ping-interval-s", "0", "--idle-timeout-s", "1", threads=1).start()
        self.addCleanup(gw.kill)
        ws = RawWS.connect(gw.port, "/echo")
        self.addCleanup(ws.sock.close)
        t0 = time.monotonic()
        f = ws.recv_frame(5)
        self.assertEqual((f.opcode, f.close_code), (0x8, 1000), f)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(gw.stop(), 0)

    def test_idle_timeout_shorter_than_ping_interval_is_refused(self):
        p = subprocess.run([gateway_binary(), "--ping-interval-s", "30", "--idle-timeout-s", "10", "--check-config"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--idle-timeout-s", p.stderr)
        self.assertIn("ping interval", p.stderr)


if __name__ == "__main__":
    unittest.main()
