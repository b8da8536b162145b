"""The limits of docs/protocol.md "Limits", end to end on /ws: connections per process
(503 + Retry-After before the upgrade), rooms per connection (error "limit"), message rate
per connection (error "limit" per refused message, close 1008 for a client that keeps
going), message size (close 1009) and queued output per connection: a subscriber that
never reads is closed 1013 (`--slow-consumer close`) or loses its oldest pushes
(`--slow-consumer drop`), with the gateway's memory bounded and the other subscribers of
the same room served on time. Each test checks the matching exit counters.

Each test starts its own gateway (the flags differ, and the counters are read at exit).
Anonymous mode throughout (`?user=`). Runs in about half a minute (release) on 2 cores."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
import unittest

from client_proto import Client, HandshakeRefused, stop_with_stats, sum_stats, upgrade_status
from wsgate_fixture import (OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, Gateway, PeerClosed, RawWS,
                            binary_is_asan, build_frame, frame_header, http_exchange)

KIB, MIB = 1 << 10, 1 << 20
_ids = itertools.count(1)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def rq(c: Client, op: str, **fields) -> dict:
    return c.request(op, id=next(_ids), timeout=5.0, **fields)


def ping_frame(id=None) -> bytes:
    req = {"op": "ping"} if id is None else {"op": "ping", "id": id}
    return build_frame(OP_TEXT, json.dumps(req).encode())


def recv_json_frame(ws: RawWS, timeout: float = 5.0):
    """Next frame: a parsed JSON dict for a text frame, ("close", code) for a close."""
    f = ws.recv_frame(timeout)
    if f.opcode == OP_CLOSE:
        return ("close", f.close_code)
    if f.opcode != OP_TEXT or not f.fin:
        raise AssertionError(f"expected a whole JSON text frame, got {f}")
    return json.loads(f.payload)


def pad(seq: int, n: int) -> str:
    """n characters that depend on seq: a corrupted or spliced push does not match."""
    unit = f"{seq:07d}."
    return (unit * (n // len(unit) + 1))[:n]


def tcp_wmem_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * MIB


def stable_fd_count(gw: Gateway, settle: float = 0.3, timeout: float = 5.0) -> int:
    """The gateway's fd count once it stops changing (lingering /healthz probes gone)."""
    deadline = time.monotonic() + timeout
    n = gw.fd_count()
    while time.monotonic() < deadline:
        time.sleep(settle)
        m = gw.fd_count()
        if m == n:
            return n
        n = m
    return n


class LimitCase(unittest.TestCase):
    def start_gateway(self, *args: str, threads: int = 1, **kw) -> Gateway:
        kw.setdefault("echo", True)
        gw = Gateway(*args, threads=threads, **kw).start()
        self.addCleanup(gw.kill)
        return gw

    def client(self, port: int, user: str, **kw) -> Client:
        c = Client.connect(port, user=user, timeout=10.0, **kw)
        self.addCleanup(c.sock.close)
        self.__dict__.setdefault("_clients", []).append(c)
        return c

    def stop_stats(self, gw: Gateway) -> dict[str, int]:
        """Close the test's clients, SIGTERM the gateway (exit 0), summed counters."""
        for c in self.__dict__.get("_clients", []):
            c.sock.close()
        totals = sum_stats(stop_with_stats(self, gw))
        for k in ("rejected_full", "room_limit_errors", "rate_limited", "rate_limit_closes",
                  "slow_consumer_closes", "push_drops", "handshake_failures"):
            self.assertIn(k, totals, f"counter {k} missing from the exit line")
        return totals

    def assertClosedWith(self, ws: RawWS, code: int, what: str, timeout: float = 5.0) -> list:
        """Frames until a close frame with `code`; then the server closes TCP. Returns the
        frames before the close (parsed JSON)."""
        before = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = recv_json_frame(ws, max(0.0, deadline - time.monotonic()))
            except PeerClosed:
                self.fail(f"{what}: TCP closed without a close frame (after {len(before)} frames)")
            except socket.timeout:
                self.fail(f"{what}: no close {code} within {timeout}s (got {len(before)} frames, "
                          f"last {before[-3:]})")
            if isinstance(m, tuple):
                self.assertEqual(m[1], code, f"{what}: close code")
                break
            before.append(m)
        ws.send_frame(OP_CLOSE, struct.pack("!H", code))
        self.assertTrue(ws.wait_tcp_close(3.0), f"{what}: TCP not closed after close {code}")
        return before


# --------------------------------------------------------------------------------------
# 1. connections per process
# --------------------------------------------------------------------------------------

class ConnectionLimitTest(LimitCase):
    LIMIT = 5

    def assertFull(self, port: int, path: str, what: str) -> None:
        r = upgrade_status(port, path=path, timeout=5.0)
        self.assertEqual(r.status, 503, f"{what}: {r.status_line} {r.body!r}")
        ra = r.header("Retry-After")
        self.assertIsNotNone(ra, f"{what}: 503 without Retry-After ({r.headers})")
        self.assertTrue(ra.isdigit() and 0 < int(ra) <= 3600, f"{what}: Retry-After {ra!r}")
        self.assertIsNone(r.header("Sec-WebSocket-Accept"), f"{what}: 503 carries an accept key")
        self.assertTrue(r.closed, f"{what}: connection left open after 503")

    def connect_with_retry(self, port: int, user: str, what: str, timeout: float = 3.0) -> tuple[Client, int]:
        """A place was just freed: the upgrade must succeed (503s while the gateway is still
        tearing the old connection down are counted and allowed for a moment)."""
        deadline = time.monotonic() + timeout
        refused = 0
        while True:
            try:
                return self.client(port, user), refused
            except HandshakeRefused as e:
                self.assertEqual(e.status, 503, f"{what}: {e}")
                refused += 1
                if time.monotonic() > deadline:
                    self.fail(f"{what}: still 503 {timeout}s after a connection closed")
                time.sleep(0.05)

    def test_max_connections(self):
        gw = self.start_gateway("--max-connections", str(self.LIMIT), threads=2)
        rejected = 0
        clients = [self.client(gw.port, f"c{i}") for i in range(self.LIMIT - 1)]
        echo = RawWS.connect(gw.port, "/echo")          # /echo counts too
        self.addCleanup(echo.sock.close)
        # Full: /ws and /echo refused, several times (both workers: the limit is per process)
        for i in range(4):
            self.assertFull(gw.port, f"/ws?user=extra{i}", f"/ws upgrade {i} over the limit")
            self.assertFull(gw.port, "/echo", f"/echo upgrade {i} over the limit")
            rejected += 2
        # plain HTTP is not a connection the limit counts
        r = http_exchange(gw.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", wait_close=0)
        self.assertEqual(r.status, 200, f"/healthz while full: {r.status_line}")
        # the connections that are in keep working
        for i, c in enumerate(clients):
            self.assertEqual(rq(c, "ping")["type"], "pong", f"client {i} while full")
        echo.send_text("still here")
        self.assertEqual(echo.recv_message(), (OP_TEXT, b"still here"))
        # a polite close frees a place
        clients.pop(0).close()
        c, n = self.connect_with_retry(gw.port, "after-close", "after a close handshake")
        rejected += n
        clients.append(c)
        self.assertFull(gw.port, "/ws?user=extra", "full again")
        rejected += 1
        # so does a reset
        victim = clients.pop(0)
        victim.ws.close_socket(rst=True)
        c, n = self.connect_with_retry(gw.port, "after-rst", "after a reset")
        rejected += n
        clients.append(c)
        self.assertFull(gw.port, "/ws?user=extra", "full again after the reset")
        rejected += 1
        # an upgrade refused for another reason does not keep a place
        clients.pop(0).close()
        for path in ("/ws?format=xml", "/ws?user=", "/ws?user=%ZZ"):
            r = upgrade_status(gw.port, path=path, timeout=5.0)
            if r.status == 503:
                rejected += 1      # the closed connection not gone yet
                time.sleep(0.1)
                continue
            self.assertEqual(r.status, 400, f"{path}: {r.status_line}")
        c, n = self.connect_with_retry(gw.port, "after-refusals", "after refused upgrades")
        rejected += n
        clients.append(c)
        self.assertFull(gw.port, "/ws?user=extra", "full after the refused upgrades")
        rejected += 1
        # a connection the gateway fails (here 1009: a frame over --max-message) frees its place
        victim = clients.pop(0)
        # (the header is acted on with the first payload byte, as wslay does)
        victim.ws.send_raw(frame_header(OP_TEXT, 2 * MIB, mask_key=b"abcd") + b"x")
        self.assertClosedWith(victim.ws, 1009, "frame over the message limit")
        victim.sock.close()
        c, n = self.connect_with_retry(gw.port, "after-1009", "after the gateway closed one")
        rejected += n
        clients.append(c)
        self.assertFull(gw.port, "/ws?user=extra", "full after the 1009")
        rejected += 1
        for i, c in enumerate(clients):
            self.assertEqual(rq(c, "ping")["type"], "pong", f"client {i} at the end")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["rejected_full"], rejected, "rejected_full at exit (503s seen)")


# --------------------------------------------------------------------------------------
# 2. rooms per connection
# --------------------------------------------------------------------------------------

class RoomLimitTest(LimitCase):
    def test_max_rooms_per_connection(self):
        gw = self.start_gateway("--max-rooms-per-conn", "3")
        c = self.client(gw.port, "roomy")
        for room in ("a", "b", "c"):
            self.assertEqual(rq(c, "join", room=room)["type"], "ack", f"join {room}")
        r = c.request("join", id="fourth", room="d")
        self.assertEqual((r["type"], r.get("id"), r.get("code")), ("error", "fourth", "limit"),
                         f"fourth room: {r}")
        self.assertEqual(r.get("message"), "too many rooms", f"{r}")
        r = rq(c, "presence", room="d")
        self.assertEqual(r.get("users"), [], f"the refused join made it a member: {r}")
        # joining a room it is already in is not a new room
        self.assertEqual(rq(c, "join", room="b")["type"], "ack", "re-join b")
        # the joined rooms still work
        for room in ("a", "b", "c"):
            self.assertEqual(rq(c, "publish", room=room, data=room)["type"], "ack")
            p = c.next_push(timeout=5)
            self.assertEqual((p["type"], p["room"], p["data"]), ("message", room, room), f"{p}")
        # leave one, then another room fits
        self.assertEqual(rq(c, "leave", room="a")["type"], "ack")
        self.assertEqual(rq(c, "join", room="d")["type"], "ack", "join d after leaving a")
        r = rq(c, "join", room="e")
        self.assertEqual((r["type"], r.get("code")), ("error", "limit"), f"fifth room: {r}")
        # the limit is per connection: another connection of the same user has its own
        c2 = self.client(gw.port, "roomy")
        for room in ("x", "y", "z"):
            self.assertEqual(rq(c2, "join", room=room)["type"], "ack", f"second connection join {room}")
        r = rq(c2, "join", room="w")
        self.assertEqual((r["type"], r.get("code")), ("error", "limit"), f"second connection: {r}")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["room_limit_errors"], 3, "room_limit_errors at exit")


# --------------------------------------------------------------------------------------
# 3. message rate per connection
# --------------------------------------------------------------------------------------

class RateLimitTest(LimitCase):
    RATE, BURST = 20, 10

    def start_limited(self) -> Gateway:
        return self.start_gateway("--rate-limit", str(self.RATE), "--rate-burst", str(self.BURST))

    def replies(self, ws: RawWS, n: int) -> list[dict]:
        return [recv_json_frame(ws) for _ in range(n)]

    def test_burst_then_limit_errors_then_recovery(self):
        gw = self.start_limited()
        c = self.client(gw.port, "bursty")
        ws = c.ws
        errors = 0
        # 15 pings in one write: the burst passes, the rest get a `limit` error each
        ws.send_raw(b"".join(ping_frame(i) for i in range(15)))
        got = self.replies(ws, 15)
        self.assertEqual([m.get("id") for m in got], list(range(15)), f"reply ids: {got}")
        kinds = [m["type"] for m in got]
        self.assertEqual(kinds[:self.BURST], ["pong"] * self.BURST, f"the burst: {kinds}")
        # (a refill of one token while the 15 are processed is possible, not more)
        self.assertGreaterEqual(kinds.count("error"), 4, f"over the burst: {kinds}")
        for m in got[self.BURST:]:
            if m["type"] == "error":
                errors += 1
                self.assertEqual((m["code"], m["message"]), ("limit", "rate limit exceeded"), f"{m}")
        # a refused message without an id: an error without an id
        ws.send_raw(ping_frame())
        m = recv_json_frame(ws)
        self.assertEqual((m["type"], m.get("code"), "id" in m), ("error", "limit", False), f"{m}")
        errors += 1
        # after a pause the bucket is full again and the penalty forgiven
        time.sleep(self.BURST / self.RATE + 0.2)
        ws.send_raw(b"".join(ping_frame(100 + i) for i in range(self.BURST)))
        got = self.replies(ws, self.BURST)
        self.assertEqual([(m["type"], m["id"]) for m in got],
                         [("pong", 100 + i) for i in range(self.BURST)], "after recovering")
        # the rate holds: one message per 1/RATE s passes indefinitely
        time.sleep(0.2)
        for i in range(5):
            time.sleep(1.5 / self.RATE)
            r = rq(c, "ping")
            self.assertEqual(r["type"], "pong", f"paced ping {i}: {r}")
        # a refused request is not executed
        time.sleep(self.BURST / self.RATE + 0.2)
        ws.send_raw(b"".join(ping_frame(200 + i) for i in range(self.BURST)) +
                    build_frame(OP_TEXT, json.dumps({"op": "join", "room": "r", "id": "j"}).encode()))
        got = self.replies(ws, self.BURST + 1)
        if got[-1]["type"] == "error":
            self.assertEqual((got[-1]["id"], got[-1]["code"]), ("j", "limit"))
            errors += 1
            time.sleep(self.BURST / self.RATE + 0.2)
            r = rq(c, "presence", room="r")
            self.assertEqual(r.get("users"), [], f"a refused join was executed: {r}")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["rate_limited"], errors, "rate_limited at exit (errors received)")
        self.assertEqual(stats["rate_limit_closes"], 0)

    def test_flat_out_sender_closed_1008_other_client_unaffected(self):
        gw = self.start_limited()          # one worker: both clients share it
        hog = self.client(gw.port, "hog")
        calm = self.client(gw.port, "calm")
        self.assertEqual(rq(hog, "join", room="r")["type"], "ack")
        stop = threading.Event()
        sent = [0]

        def flood():
            burst = b"".join(ping_frame(f"h{i}") for i in range(20))
            while not stop.is_set():
                if not hog.ws.send_raw(burst):
                    return
                sent[0] += 20
                time.sleep(0.005)

        t = threading.Thread(target=flood, daemon=True)
        t0 = time.monotonic()
        t.start()
        hog_frames = []
        try:
            hog_frames = self.assertClosedWith(hog.ws, 1008, "flat-out sender", timeout=10)
        finally:
            took = time.monotonic() - t0
            stop.set()
            t.join(5)
        kinds = [m["type"] for m in hog_frames]
        errors = [m for m in hog_frames if m["type"] == "error"]
        print(f"  [rate] flat-out sender closed 1008 after {took:.2f}s, {sent[0]} pings sent, "
              f"{kinds.count('pong')} pongs, {len(errors)} errors", flush=True)
        self.assertTrue(all(m["code"] == "limit" for m in errors), f"errors: {errors[:3]}")
        self.assertGreaterEqual(len(errors), self.BURST // 2, "closed before being told to slow down")
        self.assertLess(took, 5.0, "a flat-out sender must be closed after about burst/rate seconds")
        # the calm client on the same worker, at half the rate, saw nothing of it
        for i in range(10):
            r = rq(calm, "ping")
            self.assertEqual(r["type"], "pong", f"calm client ping {i}: {r}")
            time.sleep(1.0 / (self.RATE / 2))
        self.assertEqual(rq(calm, "join", room="r")["type"], "ack")
        stats = self.stop_stats(gw)
        # every refused message got an error, except the one that closed the connection
        self.assertEqual(stats["rate_limited"], len(errors) + 1, "rate_limited at exit")
        self.assertEqual(stats["rate_limit_closes"], 1, "rate_limit_closes at exit")

    def test_sustained_over_rate_sender_closed_while_other_client_served(self):
        # At 3 times the rate, 2 of every 3 messages are refused; the penalty grows by one
        # per refusal and drains at RATE/8: past the burst well within a second.
        self._over_rate_sender(3.0)

    def test_sender_at_one_and_a_half_times_the_rate_is_closed_too(self):
        # Refusals come at RATE/2 per second, the penalty drains at RATE/8: it grows at
        # 3*RATE/8 per second and passes the burst after about 8*BURST/(3*RATE) s. (With a
        # penalty that drained at the full rate, this sender would get errors forever.)
        self._over_rate_sender(1.5)

    def _over_rate_sender(self, factor: float):
        gw = self.start_limited()          # one worker: both clients share it
        hog = self.client(gw.port, "hog")
        calm = self.client(gw.port, "calm")
        stop = threading.Event()
        hog_frames: list = []
        hog_end: list = []

        def send():
            i = 0
            next_t = time.monotonic()
            while not stop.is_set():
                if not hog.ws.send_raw(ping_frame(f"h{i}")):
                    return
                i += 1
                next_t += 1.0 / (factor * self.RATE)
                stop.wait(max(0.0, next_t - time.monotonic()))

        def read():
            try:
                while True:
                    m = recv_json_frame(hog.ws, 10)
                    if isinstance(m, tuple):
                        hog_end.append(m)
                        return
                    hog_frames.append(m)
            except (PeerClosed, OSError) as e:
                hog_end.append(repr(e))

        sender = threading.Thread(target=send, daemon=True)
        reader = threading.Thread(target=read, daemon=True)
        t0 = time.monotonic()
        sender.start()
        reader.start()
        rtts = []
        try:
            # the calm client pings at half the rate the whole time, and a while after
            while time.monotonic() - t0 < 8 and (reader.is_alive() or len(rtts) < 10):
                t = time.monotonic()
                r = rq(calm, "ping")
                rtts.append(time.monotonic() - t)
                self.assertEqual(r["type"], "pong", f"calm client ping {len(rtts)}: {r}")
                time.sleep(2.0 / self.RATE)
            reader.join(5)
        finally:
            stop.set()
            sender.join(5)
        took = time.monotonic() - t0
        errors = [m for m in hog_frames if m["type"] == "error"]
        pongs = [m for m in hog_frames if m["type"] == "pong"]
        print(f"  [rate] sender at {factor}x the rate: {len(pongs)} pongs, {len(errors)} errors, then "
              f"{hog_end}; calm client {len(rtts)} pings, max rtt {max(rtts) * 1000:.0f} ms",
              flush=True)
        self.assertEqual(hog_end, [("close", 1008)], "over-rate sender: how its stream ended")
        hog.ws.send_frame(OP_CLOSE, struct.pack("!H", 1008))
        self.assertTrue(hog.ws.wait_tcp_close(3.0), "TCP not closed after 1008")
        self.assertTrue(all(m["code"] == "limit" for m in errors), f"errors: {errors[:3]}")
        self.assertGreaterEqual(len(errors), self.BURST, "closed before the penalty passed the burst")
        self.assertGreater(len(pongs), self.BURST, "the sender's messages within the rate were refused")
        self.assertLess(took, 8, "a sender that keeps going over the rate was never closed")
        self.assertLess(max(rtts), 0.5, "the calm client on the same worker was slowed down")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["rate_limited"], len(errors) + 1, "rate_limited at exit")
        self.assertEqual(stats["rate_limit_closes"], 1, "rate_limit_closes at exit")

    def test_rate_limit_off(self):
        gw = self.start_gateway("--rate-limit", "0", "--rate-burst", "1")
        c = self.client(gw.port, "unlimited")
        n = 1000
        c.ws.send_raw(b"".join(ping_frame(i) for i in range(n)))
        got = self.replies(c.ws, n)
        self.assertEqual([(m["type"], m["id"]) for m in got], [("pong", i) for i in range(n)])
        stats = self.stop_stats(gw)
        self.assertEqual(stats["rate_limited"], 0)


# --------------------------------------------------------------------------------------
# 4. message size on /ws
# --------------------------------------------------------------------------------------

class MessageSizeTest(LimitCase):
    MAX = 1024

    def publish_of_size(self, n: int) -> bytes:
        head = json.dumps({"op": "publish", "room": "big", "id": 7, "data": ""}).encode()
        text = head[:-2] + b"x" * (n - len(head)) + b'"}'
        assert len(text) == n
        return text

    def test_max_message_on_ws(self):
        gw = self.start_gateway(max_message=self.MAX)
        c = self.client(gw.port, "sizer")
        self.assertEqual(rq(c, "join", room="big")["type"], "ack")
        # exactly the limit: accepted
        c.ws.send_raw(build_frame(OP_TEXT, self.publish_of_size(self.MAX)))
        got = [recv_json_frame(c.ws), recv_json_frame(c.ws)]
        self.assertEqual(sorted(m["type"] for m in got), ["ack", "message"], f"{got}")
        # one byte over, in one frame: 1009
        c.ws.send_raw(build_frame(OP_TEXT, self.publish_of_size(self.MAX + 1)))
        self.assertEqual(self.assertClosedWith(c.ws, 1009, "one byte over the limit"), [])
        # over the limit only in total, in fragments: 1009 too
        c2 = self.client(gw.port, "fragmenter")
        text = self.publish_of_size(self.MAX + 200)
        c2.ws.send_raw(build_frame(OP_TEXT, text[:600], fin=False) +
                       build_frame(OP_CONT, text[600:]))
        self.assertEqual(self.assertClosedWith(c2.ws, 1009, "fragments over the limit"), [])
        # a binary message over the limit
        c3 = self.client(gw.port, "binary")
        c3.ws.send_raw(build_frame(OP_BINARY, b"\x01\x08\x00" + b"\x00" * self.MAX))
        self.assertEqual(self.assertClosedWith(c3.ws, 1009, "binary over the limit"), [])
        # others unaffected
        c4 = self.client(gw.port, "after")
        self.assertEqual(rq(c4, "ping")["type"], "pong")
        self.stop_stats(gw)


# --------------------------------------------------------------------------------------
# 5. slow consumers
# --------------------------------------------------------------------------------------

class Reader(threading.Thread):
    """Reads every frame of one connection in the background: the data of `message`
    pushes (checked whole and uncorrupted), their arrival latency, and acks."""

    def __init__(self, ws: RawWS, name: str):
        super().__init__(daemon=True, name=name)
        self.ws = ws
        self.seqs: list[int] = []
        self.latency: list[float] = []
        self.acks = 0
        self.problems: list[str] = []
        self.closed: str | None = None
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                f = self.ws.recv_frame(0.1)
            except socket.timeout:
                continue
            except (PeerClosed, OSError) as e:
                self.closed = repr(e)
                return
            t = time.monotonic()
            try:
                if f.opcode == OP_CLOSE:
                    self.closed = f"close frame {f.close_code}"
                    return
                m = json.loads(f.payload)
                if m.get("type") == "message":
                    d = m["data"]
                    if d["pad"] != pad(d["seq"], len(d["pad"])):
                        self.problems.append(f"push {d['seq']}: corrupted data")
                    self.seqs.append(d["seq"])
                    self.latency.append(t - d["t"])
                elif m.get("type") == "ack":
                    self.acks += 1
                else:
                    self.problems.append(f"unexpected {m}")
            except Exception as e:   # noqa: BLE001 - reported by the test
                self.problems.append(f"bad frame {f}: {e!r}")

    def stop(self):
        self._halt.set()
        self.join(10)


class RssSampler(threading.Thread):
    def __init__(self, gw: Gateway):
        super().__init__(daemon=True)
        self.gw = gw
        self.peak = gw.rss_bytes()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.005):
            try:
                self.peak = max(self.peak, self.gw.rss_bytes())
            except (OSError, RuntimeError):
                return

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


class SlowConsumerTest(LimitCase):
    BOUND = 256 * KIB          # --max-outbound-bytes
    SIZE = 8 * KIB             # bytes of padding per publication
    # Publications: the kernel buffers of a stuck loopback connection take a few MiB before
    # the gateway has to queue anything (2.7 MiB here, with tcp_wmem max 4 MiB), so the
    # flood is 1.5 times that maximum plus 8 times the bound (1024 x 8 KiB here).
    FLOOD = -(-(tcp_wmem_max() * 3 // 2 + 8 * BOUND) // SIZE)
    WINDOW = 16                # publications in flight (the publisher waits for acks)
    PROBES = 5
    PROBE_LATENCY_S = 1.0
    SUBSCRIBERS = 3            # slow, normal and the publisher itself

    def setup_room(self, policy: str, slow_batch: bool = False):
        gw = self.start_gateway("--rate-limit", "0", "--max-outbound-bytes", str(self.BOUND),
                                "--slow-consumer", policy, threads=1, echo=False)
        # the slow one: a tiny receive window, joins, then never reads
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", gw.port))
        slow_ws = RawWS(sock, 10)
        slow_ws.handshake("/ws?user=slow" + ("&batch=1" if slow_batch else ""))
        slow = Client(slow_ws, user="slow")
        self.assertEqual(rq(slow, "join", room="feed")["type"], "ack")
        normal = self.client(gw.port, "normal")
        self.assertEqual(rq(normal, "join", room="feed")["type"], "ack")
        pub = self.client(gw.port, "pub")
        self.assertEqual(rq(pub, "join", room="feed")["type"], "ack")
        return gw, slow, normal, pub

    def publish(self, pub: Client, reader: Reader, seq: int) -> None:
        data = {"seq": seq, "t": time.monotonic(), "pad": pad(seq, self.SIZE)}
        frame = json.dumps({"op": "publish", "room": "feed", "id": seq, "data": data}).encode()
        self.assertTrue(pub.ws.send_raw(build_frame(OP_TEXT, frame)), f"publisher cut off at {seq}")

    def wait_acks(self, reader: Reader, n: int, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while reader.acks < n:
            if reader.closed or reader.problems or time.monotonic() > deadline:
                self.fail(f"{what}: publisher has {reader.acks} of {n} acks "
                          f"(closed: {reader.closed}, problems: {reader.problems[:3]})")
            time.sleep(0.002)

    def run_flood(self, gw: Gateway, normal: Client, pub: Client, probes: int = PROBES) -> dict:
        """Publish FLOOD publications (WINDOW in flight), then `probes` spaced 0.1 s apart.
        Returns what the normal subscriber and the publisher saw and the RSS peak."""
        rn = Reader(normal.ws, "normal")
        rp = Reader(pub.ws, "publisher")
        rn.start()
        rp.start()
        sampler = RssSampler(gw)
        rss_start = sampler.peak
        sampler.start()
        t0 = time.monotonic()
        try:
            for seq in range(self.FLOOD):
                if seq >= self.WINDOW:
                    self.wait_acks(rp, seq - self.WINDOW + 1, f"publication {seq}")
                self.publish(pub, rp, seq)
            self.wait_acks(rp, self.FLOOD, "end of the flood")
            t_flood = time.monotonic()
            for seq in range(self.FLOOD, self.FLOOD + probes):
                time.sleep(0.1)
                self.publish(pub, rp, seq)
            self.wait_acks(rp, self.FLOOD + probes, "probes")
            total = self.FLOOD + probes
            deadline = time.monotonic() + 10
            while (len(rn.seqs) < total or len(rp.seqs) < total) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            rss_peak = sampler.stop()
            rn.stop()
            rp.stop()
        out = dict(normal=rn, publisher=rp, rss_start=rss_start, rss_peak=rss_peak,
                   flood_s=t_flood - t0, t0=t0, t_flood=t_flood, total=total)
        print(f"  [slow consumer] {self.FLOOD} x {self.SIZE // KIB} KiB published in "
              f"{out['flood_s']:.2f}s; normal max latency flood "
              f"{max(rn.latency[:self.FLOOD], default=-1) * 1000:.0f} ms, probes "
              f"{max(rn.latency[self.FLOOD:], default=0) * 1000:.0f} ms; gateway rss "
              f"{rss_start / MIB:.1f} -> peak {rss_peak / MIB:.1f} MiB", flush=True)
        return out

    def check_others(self, r: dict) -> None:
        total = r["total"]
        for name in ("normal", "publisher"):
            rd: Reader = r[name]
            self.assertEqual(rd.problems, [], f"{name} subscriber: problems")
            self.assertIsNone(rd.closed, f"{name} subscriber was closed")
            self.assertEqual(rd.seqs, list(range(total)),
                             f"{name} subscriber must get every publication, in order "
                             f"(got {len(rd.seqs)})")
        lat = r["normal"].latency
        if total > self.FLOOD:
            probe_lat = max(lat[self.FLOOD:])
            self.assertLess(probe_lat, self.PROBE_LATENCY_S,
                            f"normal subscriber: probe publication took {probe_lat:.2f}s to arrive")
        self.assertLess(max(lat), 3.0, f"normal subscriber stalled {max(lat):.2f}s during the flood")
        growth = r["rss_peak"] - r["rss_start"]
        per_subscriber = total * self.SIZE
        if binary_is_asan():
            print("  [rss] AddressSanitizer build: RSS growth not asserted", flush=True)
        else:
            # Unbounded, the slow subscriber's queue alone would pin what the kernel did not
            # take (more than half of it); copies per subscriber would be SUBSCRIBERS times that.
            self.assertLess(growth, per_subscriber // 4,
                            f"gateway RSS grew {growth / MIB:.1f} MiB while {per_subscriber / MIB:.1f} "
                            f"MiB were published to each of {self.SUBSCRIBERS} subscribers: queued "
                            f"output is not bounded")

    def read_slow(self, slow: Client, timeout: float = 5.0) -> tuple[list[dict], object]:
        """Everything the slow subscriber gets when it finally reads: (pushes, end) where end
        is ("close", code), "eof", or "quiet" (nothing more within 0.5 s). Batch frames (JSON
        arrays) are flattened; self.batch_frames counts them."""
        pushes, ws = [], slow.ws
        self.batch_frames = 0
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = recv_json_frame(ws, 0.5 if pushes else max(0.0, deadline - time.monotonic()))
            except PeerClosed:
                return pushes, "eof"
            except socket.timeout:
                return pushes, "quiet"
            if isinstance(m, tuple):
                return pushes, m
            if isinstance(m, list):
                self.assertGreater(len(m), 1, "a batch frame holds at least two pushes")
                self.batch_frames += 1
            for p in m if isinstance(m, list) else [m]:
                self.assertEqual((p.get("type"), p.get("room"), p.get("from")), ("message", "feed", "pub"),
                                 f"slow subscriber: not a push of the feed: {str(p)[:200]}")
                d = p["data"]
                self.assertEqual(d["pad"], pad(d["seq"], self.SIZE), f"push {d['seq']} corrupted")
                pushes.append(d)
            if time.monotonic() > deadline + 10:
                self.fail("slow subscriber: pushes do not end")

    def test_close_policy(self):
        gw, slow, normal, pub = self.setup_room("close")
        base_fds = stable_fd_count(gw)
        r = self.run_flood(gw, normal, pub)
        # the slow one is closed and its socket released within the linger time (2 s),
        # although it never reads
        n = gw.wait_fds_at_most(base_fds - 1, timeout=3.5 - (time.monotonic() - r["t_flood"]))
        gone_after = time.monotonic() - r["t_flood"]
        self.assertEqual(n, base_fds - 1, f"slow subscriber's socket still held {gone_after:.1f}s "
                                          f"after the flood (fds {n}, were {base_fds})")
        self.check_others(r)
        pushes, end = self.read_slow(slow)
        seqs = [d["seq"] for d in pushes]
        print(f"  [slow consumer close] slow got {len(seqs)} pushes then {end}", flush=True)
        self.assertIn(end, (("close", 1013), "eof"), "slow subscriber: how its stream ended")
        self.assertEqual(seqs, list(range(len(seqs))),
                         "slow subscriber: the pushes before the close are the first ones, in order")
        self.assertLess(len(seqs), self.FLOOD, "the slow subscriber got everything: it was never stuck")
        if end != "eof":
            self.assertTrue(slow.ws.wait_tcp_close(3.0), "TCP not closed after 1013")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["slow_consumer_closes"], 1, "slow_consumer_closes at exit")
        self.assertEqual(stats["outbound_overflow_closes"], 0)

    def test_close_policy_late_reader_gets_1013(self):
        # The slow subscriber wakes up within the linger time: it gets the pushes that were
        # already on their way, then the close frame 1013 "slow consumer".
        gw, slow, normal, pub = self.setup_room("close")
        r = self.run_flood(gw, normal, pub, probes=0)
        t_read = time.monotonic()
        pushes, end = self.read_slow(slow)
        seqs = [d["seq"] for d in pushes]
        print(f"  [slow consumer close, late reader] read {t_read - r['t0']:.2f}s after the flood "
              f"began: {len(seqs)} pushes then {end}", flush=True)
        self.check_others(r)
        self.assertEqual(seqs, list(range(len(seqs))),
                         "slow subscriber: the pushes before the close are the first ones, in order")
        self.assertLess(len(seqs), self.FLOOD, "the slow subscriber got everything: it was never stuck")
        if t_read - r["t0"] < 1.5:
            # the overflow came after t0, so its 2 s linger had not run out
            self.assertEqual(end, ("close", 1013), "slow subscriber reading within the linger time")
            slow.ws.send_frame(OP_CLOSE, struct.pack("!H", 1013))
            self.assertTrue(slow.ws.wait_tcp_close(3.0), "TCP not closed after the close handshake")
        else:
            self.assertIn(end, (("close", 1013), "eof"), "slow subscriber: how its stream ended")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["slow_consumer_closes"], 1, "slow_consumer_closes at exit")

    def test_drop_policy(self):
        self.check_drop_policy(slow_batch=False)

    def test_drop_policy_batched_subscriber(self):
        # The same with a slow subscriber that opted in to batching: the pushes left after
        # the drops are framed into batch frames, which must come out whole as well.
        self.check_drop_policy(slow_batch=True)
        self.assertGreater(self.batch_frames, 0, "no batch frame: batching was not exercised")

    def check_drop_policy(self, slow_batch: bool):
        gw, slow, normal, pub = self.setup_room("drop", slow_batch)
        base_fds = stable_fd_count(gw)
        r = self.run_flood(gw, normal, pub)
        time.sleep(0.5)
        self.assertEqual(gw.fd_count(), base_fds, "drop policy: the slow subscriber was disconnected")
        self.check_others(r)
        pushes, end = self.read_slow(slow)
        total = self.FLOOD + self.PROBES
        seqs = [d["seq"] for d in pushes]
        gaps = sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1)
        print(f"  [slow consumer drop{', batched' if slow_batch else ''}] slow got {len(seqs)} of "
              f"{total} pushes ({self.batch_frames} batch frames), {gaps} gaps, then {end}", flush=True)
        self.assertEqual(end, "quiet", "drop policy: the slow subscriber's stream must not end")
        self.assertEqual(seqs, sorted(set(seqs)), "slow subscriber: pushes out of order or repeated")
        self.assertLess(len(seqs), total, "nothing was dropped: the flood did not fill the bound")
        self.assertEqual(seqs[0], 0, "the first pushes were already on their way")
        self.assertEqual(seqs[-1], total - 1, "the newest push must survive (the oldest are dropped)")
        # still a working connection
        self.assertEqual(rq(slow, "ping")["type"], "pong")
        self.assertEqual(rq(pub, "publish", room="feed", data={"seq": total, "t": 0, "pad": ""})["type"], "ack")
        p = slow.next_push(timeout=5)
        self.assertEqual(p["data"]["seq"], total, f"slow subscriber after catching up: {p}")
        stats = self.stop_stats(gw)
        self.assertEqual(stats["slow_consumer_closes"], 0, "drop policy closed someone")
        self.assertGreater(stats["push_drops"], 0, "push_drops at exit")
        self.assertEqual(stats["push_drops"], total - len(seqs),
                         "every publication the slow subscriber missed is a counted drop")


if __name__ == "__main__":
    unittest.main()
