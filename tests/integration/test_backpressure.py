"""wsgate under flow-control pressure: receive-buffer exhaustion (ENOBUFS) must only slow
reading down, never lose or reorder data; sends cut short by a full socket buffer must
resume where they stopped; a client that sends but never reads must be dropped once its
queued output passes the 16 MiB bound, with the gateway's memory bounded and other clients
unaffected; and slots recycled through thousands of short connections that end in every
way (close handshake, protocol error, RST mid-frame, rejected handshake) must not receive
stale completions.

Each test starts its own gateway (the flags differ and the test reads the per-worker
counters the gateway prints at exit). Seeded randomness (WSGATE_TEST_SEED) so a failure
reproduces. Runs in well under a minute on 2 cores, release or ASan build."""

import asyncio
import os
import random
import select
import socket
import threading
import time
import unittest

import websockets

from client_proto import parse_worker_stats, sum_stats

from wsgate_fixture import (OP_BINARY, OP_TEXT, Gateway, RawWS, binary_is_asan, build_frame,
                            frame_header, http_exchange, mask_bytes, upgrade_request)

SEED = int(os.environ.get("WSGATE_TEST_SEED", "6455"))
KIB, MIB = 1 << 10, 1 << 20
OUTBOUND_BOUND = 16 * MIB          # core/config.h max_outbound_bytes


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def open_ws(port: int, rcvbuf: int | None = None, timeout: float = 10.0) -> RawWS:
    """A handshaken /echo RawWS; rcvbuf sets SO_RCVBUF before connect (it then bounds the
    TCP window the gateway can fill)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        ws = RawWS(sock, timeout)
        ws.handshake("/echo")
        return ws
    except BaseException:
        sock.close()
        raise


class EchoProbe:
    """A well-behaved client in a background thread on one /echo connection: a small
    message every few ms, each echo checked. Records errors and the time of every echo."""

    def __init__(self, port: int, interval: float = 0.005):
        self.port = port
        self.interval = interval
        self.errors: list[str] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self.times and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)

    def wait_more(self, n: int, timeout: float = 5.0) -> bool:
        target = len(self.times) + n
        deadline = time.monotonic() + timeout
        while len(self.times) < target and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.times) >= target

    def _run(self):
        try:
            c = open_ws(self.port)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"probe connect: {e!r}")
            return
        try:
            i = 0
            while not self._stop.is_set():
                payload = b"probe-%d-" % i + bytes([i % 251]) * (i % 300)
                if not c.send_binary(payload):
                    self.errors.append(f"probe send {i}: connection closed")
                    return
                op, data = c.recv_message(timeout=10)
                if (op, data) != (OP_BINARY, payload):
                    self.errors.append(f"probe echo {i}: got op {op} {data[:40]!r}")
                    return
                self.times.append(time.monotonic())
                i += 1
                self._stop.wait(self.interval)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"probe failed after {len(self.times)} echoes: {e!r}")
        finally:
            c.sock.close()

    def max_gap(self, start: float, end: float) -> float:
        """Longest time without an echo inside [start, end]."""
        points = [start] + [t for t in self.times if start < t < end] + [end]
        return max(b - a for a, b in zip(points, points[1:]))


class BackpressureCase(unittest.TestCase):
    """Starts a gateway per test; stop_stats() stops it and returns the summed counters."""

    def start_gateway(self, *extra: str, threads: int = 1, **kw) -> Gateway:
        gw = Gateway(*extra, threads=threads, echo=True, **kw).start()
        self.addCleanup(gw.kill)
        return gw

    def stop_stats(self, gw: Gateway) -> dict[str, int]:
        self.assertTrue(gw.alive(), f"gateway died (exit {gw.proc.returncode})\n{gw.log_text()}")
        rc, took = gw.signal_and_wait()
        log = gw.log_text(limit=1 << 20)
        self.assertEqual(rc, 0, f"exit code after SIGTERM (took {took:.1f}s)\n{log[-4000:]}")
        rows = parse_worker_stats(log)
        self.assertEqual(len(rows), gw.threads, f"one stats line per worker expected\n{log[-4000:]}")
        total = sum_stats(rows)
        for k in ("accepted", "closed", "messages_in", "messages_out", "sends", "enobufs",
                  "outbound_overflow_closes", "handshake_failures", "handshake_timeouts"):
            self.assertIn(k, total, f"counter {k} missing from the stats line\n{log[-2000:]}")
        return total

    def assertSameBytes(self, got: bytes, want: bytes, what: str) -> None:
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                         min(len(got), len(want)))
            self.fail(f"{what}: got {len(got)} bytes, want {len(want)}; first difference at "
                      f"offset {first}")


# --------------------------------------------------------------------------------------
# 1. ENOBUFS is backpressure, never data loss
# --------------------------------------------------------------------------------------

class EnobufsTest(BackpressureCase):
    CLIENTS = 50
    MESSAGES = 20
    MAX_SIZE = 20000

    def test_enobufs_loses_nothing(self):
        # 2 provided buffers of 256 bytes for 50 connections: the multishot recvs run
        # out of buffers all the time.
        gw = self.start_gateway("--recv-buffers", "2", "--recv-buffer-size", "256")
        uri = f"ws://127.0.0.1:{gw.port}/echo"

        async def client(i: int):
            rnd = random.Random(SEED * 1000 + i)
            msgs = [rnd.randbytes(rnd.randrange(self.MAX_SIZE + 1)) for _ in range(self.MESSAGES)]
            async with websockets.connect(uri, compression=None, ping_interval=None,
                                          max_size=MIB, open_timeout=20,
                                          close_timeout=10) as ws:
                async def send_all():
                    for m in msgs:
                        await ws.send(m)

                sender = asyncio.create_task(send_all())
                for j, want in enumerate(msgs):
                    got = await asyncio.wait_for(ws.recv(), 20)
                    if not isinstance(got, bytes):
                        return f"client {i} message {j}: echo is not binary"
                    if got != want:
                        return (f"client {i} message {j}: echo of {len(want)} bytes differs "
                                f"(got {len(got)} bytes)")
                await sender
            return None

        async def all_clients():
            return await asyncio.gather(*(client(i) for i in range(self.CLIENTS)),
                                        return_exceptions=True)

        t0 = time.monotonic()
        results = asyncio.run(asyncio.wait_for(all_clients(), 45))
        took = time.monotonic() - t0
        errors = [r for r in results if r is not None]
        self.assertEqual(errors[:5], [], f"{len(errors)} of {self.CLIENTS} clients failed")
        stats = self.stop_stats(gw)
        print(f"  [enobufs] {self.CLIENTS}x{self.MESSAGES} echoes in {took:.2f}s; "
              f"enobufs={stats['enobufs']} sends={stats['sends']}", flush=True)
        self.assertGreater(stats["enobufs"], 0, "the ENOBUFS path was not exercised")
        n = self.CLIENTS * self.MESSAGES
        self.assertEqual(stats["messages_in"], n, "messages_in")
        self.assertEqual(stats["messages_out"], n, "messages_out")
        self.assertEqual(stats["accepted"], stats["closed"], "accepted != closed at exit")


# --------------------------------------------------------------------------------------
# 2. Partial sends resume; output queued while a send is in flight goes out in order
# --------------------------------------------------------------------------------------

class PartialSendTest(BackpressureCase):
    GW_ARGS = dict(max_message=8 * MIB)

    def test_large_echo_to_a_reader_that_pauses(self):
        gw = self.start_gateway(**self.GW_ARGS)
        c = open_ws(gw.port, rcvbuf=4096, timeout=20)
        self.addCleanup(c.sock.close)
        payload = random.Random(SEED + 20).randbytes(4 * MIB)
        self.assertTrue(c.send_binary(payload))
        time.sleep(1.0)   # not reading: the gateway's send stops on a full socket buffer
        self.assertTrue(gw.alive())
        t0 = time.monotonic()
        op, data = c.recv_message(timeout=20)
        took = time.monotonic() - t0
        self.assertEqual(op, OP_BINARY)
        self.assertSameBytes(data, payload, "4 MiB echo")
        # and the connection is still fine afterwards
        self.assertTrue(c.send_text("after"))
        self.assertEqual(c.recv_message(timeout=10), (OP_TEXT, b"after"))
        c.sock.close()
        stats = self.stop_stats(gw)
        print(f"  [partial] 4 MiB echo read in {took:.2f}s; sends={stats['sends']}", flush=True)
        self.assertEqual((stats["messages_in"], stats["messages_out"]), (2, 2))
        # 101 response + the 4 MiB echo in at least two sends + "after": a 4 MiB send into
        # a ~8 KiB window cannot complete at once, so > 3 means it was resumed.
        self.assertGreater(stats["sends"], 3, "the 4 MiB echo went out in one send: the "
                                              "partial-send path was not exercised")

    def test_pipelined_medium_messages(self):
        gw = self.start_gateway(**self.GW_ARGS)
        c = open_ws(gw.port, rcvbuf=4096, timeout=20)
        self.addCleanup(c.sock.close)
        rnd = random.Random(SEED + 21)
        msgs = [rnd.randbytes(64 * KIB) for _ in range(200)]   # 12.5 MiB: under the bound
        wire = b"".join(build_frame(OP_BINARY, m) for m in msgs)
        t0 = time.monotonic()
        self.assertTrue(c.send_raw(wire), "gateway closed while we were sending")
        time.sleep(0.3)
        for i, want in enumerate(msgs):
            op, data = c.recv_message(timeout=20)
            self.assertEqual(op, OP_BINARY, f"message {i}")
            self.assertSameBytes(data, want, f"pipelined message {i}")
        took = time.monotonic() - t0
        self.assertIsNone(c.poll_frame(0.2), "unexpected extra frame after the 200 echoes")
        c.sock.close()
        stats = self.stop_stats(gw)
        print(f"  [pipelined] 200x64 KiB in {took:.2f}s; sends={stats['sends']}", flush=True)
        self.assertEqual((stats["messages_in"], stats["messages_out"]), (200, 200))
        self.assertEqual(stats["outbound_overflow_closes"], 0)


# --------------------------------------------------------------------------------------
# 3. A slow consumer is dropped; memory stays bounded; others keep being served
# --------------------------------------------------------------------------------------

class SlowConsumerTest(BackpressureCase):
    ROUNDS = 4                 # one after the other: a leaked queue would add up
    TIME_LIMIT_S = 20.0        # per round
    BYTES_LIMIT = 1 << 30      # per round
    STALL_S = 5.0              # no send progress for this long: the gateway stopped reading
    RSS_GROWTH_LIMIT = 100 * MIB

    def flood(self, gw: Gateway, frame: bytes) -> dict:
        """One client that sends `frame` over and over and never reads, until the gateway
        drops it, stops reading (no progress for STALL_S), or a limit is hit."""
        hog = open_ws(gw.port, rcvbuf=4096)
        self.addCleanup(hog.sock.close)
        hog.sock.setblocking(False)
        poller = select.poll()
        poller.register(hog.sock.fileno(), select.POLLOUT | select.POLLERR | select.POLLHUP |
                        select.POLLRDHUP)
        view = memoryview(frame)
        r = dict(sent=0, rss_peak=gw.rss_bytes(), outcome=None, detail=None)
        off = 0
        t0 = last_progress = time.monotonic()
        while r["outcome"] is None:
            now = time.monotonic()
            r["rss_peak"] = max(r["rss_peak"], gw.rss_bytes())
            if not gw.alive():
                r["outcome"] = "gateway died"
            elif now - t0 > self.TIME_LIMIT_S:
                r["outcome"] = "timeout"
            elif r["sent"] > self.BYTES_LIMIT:
                r["outcome"] = "too much"
            elif now - last_progress > self.STALL_S:
                r["outcome"] = "blocked"
            if r["outcome"]:
                break
            for _fd, ev in poller.poll(100):
                if ev & (select.POLLERR | select.POLLHUP | select.POLLRDHUP):
                    r["outcome"], r["detail"] = "dropped", f"poll events {ev:#x}"
                    break
                if ev & select.POLLOUT:
                    try:
                        n = hog.sock.send(view[off:])
                    except BlockingIOError:
                        continue
                    except (ConnectionResetError, BrokenPipeError) as e:
                        r["outcome"], r["detail"] = "dropped", repr(e)
                        break
                    r["sent"] += n
                    off = (off + n) % len(frame)
                    last_progress = time.monotonic()
        r["t0"], r["t1"] = t0, time.monotonic()
        r["rss_peak"] = max(r["rss_peak"], gw.rss_bytes())
        hog.sock.close()
        return r

    def test_reader_that_never_reads_is_dropped(self):
        gw = self.start_gateway(handshake_timeout_ms=5000)   # one worker: shared with the probe
        asan = binary_is_asan()
        rss_start = gw.rss_bytes()
        frame = build_frame(OP_BINARY, random.Random(SEED + 30).randbytes(64 * KIB))
        rounds = []
        with EchoProbe(gw.port) as probe:
            self.assertEqual(probe.errors, [], "probe could not start")
            for i in range(self.ROUNDS):
                r = self.flood(gw, frame)
                r["probe_during"] = len([t for t in probe.times if r["t0"] < t < r["t1"]])
                r["probe_gap"] = probe.max_gap(r["t0"], r["t1"])
                rounds.append(r)
                print(f"  [slow consumer {i}] {r['outcome']} ({r['detail']}) after "
                      f"{r['t1'] - r['t0']:.2f}s, {r['sent'] / MIB:.1f} MiB sent; gateway rss "
                      f"peak {r['rss_peak'] / MIB:.1f} MiB (start {rss_start / MIB:.1f}); probe "
                      f"{r['probe_during']} echoes meanwhile, max gap {r['probe_gap'] * 1000:.0f} ms",
                      flush=True)
                if r["outcome"] not in ("dropped", "blocked"):
                    break
            more = probe.wait_more(5)
            rss_after = gw.rss_bytes()
        stats = self.stop_stats(gw)
        rss_peak = max(r["rss_peak"] for r in rounds)
        print(f"  [slow consumer] rss after {rss_after / MIB:.1f} MiB; "
              f"outbound_overflow_closes={stats['outbound_overflow_closes']}", flush=True)

        self.assertEqual(probe.errors, [], "well-behaved client saw errors")
        self.assertTrue(more, "well-behaved client got no echoes after the slow consumers went")
        for i, r in enumerate(rounds):
            took, sent = r["t1"] - r["t0"], r["sent"]
            self.assertIn(r["outcome"], ("dropped", "blocked"),
                          f"round {i}: slow consumer neither dropped nor back-pressured: "
                          f"{r['outcome']} after {took:.1f}s, {sent / MIB:.1f} MiB sent")
            self.assertGreaterEqual(r["probe_during"], 1 + int(took / 0.1),
                                    f"round {i}: well-behaved client starved during the flood")
            self.assertLess(r["probe_gap"], 3.0, f"round {i}: well-behaved client went >3 s "
                                                 f"without an echo")
            if r["outcome"] == "dropped":
                self.assertGreater(sent, OUTBOUND_BOUND, f"round {i}: dropped before its queued "
                                                         f"output could exceed the 16 MiB bound")
        if asan:
            print("  [rss] AddressSanitizer build: RSS growth not asserted", flush=True)
        else:
            self.assertLess(rss_peak - rss_start, self.RSS_GROWTH_LIMIT,
                            f"gateway RSS grew {(rss_peak - rss_start) / MIB:.1f} MiB")
        dropped = sum(r["outcome"] == "dropped" for r in rounds)
        if dropped < len(rounds):
            # The gateway stopped reading instead of dropping: acceptable only with bounded
            # memory (asserted above, release build).
            print(f"  [slow consumer] {len(rounds) - dropped} round(s) back-pressured by the "
                  f"gateway not reading", flush=True)
        self.assertEqual(stats["outbound_overflow_closes"], dropped,
                         "every drop must be an outbound overflow close, and only those")
        self.assertEqual(stats["accepted"], stats["closed"], "accepted != closed at exit")


# --------------------------------------------------------------------------------------
# A connection we close must go even if its peer stops reading
# --------------------------------------------------------------------------------------

class StuckCloseTest(BackpressureCase):
    def test_failed_connection_with_unread_output_is_closed_after_linger(self):
        # The peer fills its own receive window with echoes it never reads, then
        # breaks the protocol. The gateway's close frame (and the echoes before it)
        # can never be flushed; the connection must still be gone after the linger
        # time (2 s), not held forever with its fd and memory.
        gw = self.start_gateway()
        # The fixture's /healthz probe may still be lingering: wait for a stable count.
        base_fds = gw.fd_count()
        for _ in range(100):
            time.sleep(0.05)
            n = gw.fd_count()
            if n == base_fds:
                break
            base_fds = n
        ws = RawWS.open(gw.port, timeout=5)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws.handshake("/echo")
        ws.sock.setblocking(False)
        payload = b"x" * 65536
        frame = build_frame(OP_BINARY, payload, mask=True)
        sent = 0
        deadline = time.monotonic() + 10
        # Echo requests by volume: far more than the socket buffers hold, well under
        # the 16 MiB outbound bound, so the gateway's sends stall on our full window.
        while sent < 6 * MIB and time.monotonic() < deadline:
            try:
                n = ws.sock.send(frame)
                sent += n
                if n < len(frame):
                    ws.sock.setblocking(True)
                    ws.sock.settimeout(5)
                    ws.sock.sendall(frame[n:])
                    ws.sock.setblocking(False)
                    sent += len(frame) - n
            except BlockingIOError:
                time.sleep(0.01)
        ws.sock.setblocking(True)
        ws.sock.settimeout(5)
        ws.sock.sendall(build_frame(OP_TEXT, b"unmasked", mask=False))  # protocol error
        self.assertEqual(gw.fd_count(), base_fds + 1, "connection should still be open right after")
        n = gw.wait_fds_at_most(base_fds, timeout=8)
        self.assertEqual(n, base_fds, "the gateway kept a connection it had failed and could not flush")
        ws.close_socket(rst=True)
        stats = self.stop_stats(gw)
        self.assertEqual(stats["accepted"], stats["closed"])
        self.assertEqual(stats["outbound_overflow_closes"], 0)


# --------------------------------------------------------------------------------------
# 4. Slot reuse under churn: no stale completion reaches a new connection
# --------------------------------------------------------------------------------------

class ChurnTest(BackpressureCase):
    CONNECTIONS = 2000     # 4 endings per group, then a fresh connection must echo

    def test_churn_every_ending(self):
        gw = self.start_gateway(handshake_timeout_ms=5000)
        rnd = random.Random(SEED + 40)
        fds_before = gw.fd_count()
        messages = failures = verified = 0
        t0 = time.monotonic()
        for g in range(self.CONNECTIONS // 4):
            # normal close handshake
            c = open_ws(gw.port, timeout=5)
            try:
                m = b"normal-%d" % g
                c.send_binary(m)
                self._echo(c, OP_BINARY, m, f"group {g} normal")
                self._clean_close(c, g)
            finally:
                c.sock.close()
            messages += 1

            # a good message, then an unmasked frame: echo, then close 1002
            c = open_ws(gw.port, timeout=5)
            try:
                good = b"good-%d" % g
                c.send_raw(build_frame(OP_BINARY, good) +
                           build_frame(OP_BINARY, b"unmasked", mask=False))
                out = c.read_until_close(timeout=5)
                self.assertEqual([(f.opcode, f.payload) for f in out.frames], [(OP_BINARY, good)],
                                 f"group {g} protocol error: frames before the close")
                self.assertEqual(out.code, 1002, f"group {g} protocol error: {out}")
                self.assertTrue(out.tcp_closed, f"group {g}: TCP not closed after 1002")
            finally:
                c.sock.close()
            messages += 1

            # RST in the middle of a frame; every other time with an echo send in flight
            # (a 256 KiB echo into a tiny receive window) so the send and the recv are both
            # cancelled under the RST
            c = open_ws(gw.port, rcvbuf=4096 if g % 2 else None, timeout=5)
            try:
                if g % 2:
                    c.send_binary(rnd.randbytes(256 * KIB))
                    c.sock.settimeout(5)   # the echo has started, so the message was counted
                    self.assertTrue(c.sock.recv(1, socket.MSG_PEEK), f"group {g}: no echo")
                    messages += 1
                n = rnd.randrange(200, 100_000)
                key = os.urandom(4)
                c.send_raw(frame_header(OP_BINARY, n, mask_key=key) +
                           mask_bytes(os.urandom(rnd.randrange(0, n)), key))
            finally:
                c.close_socket(rst=True)

            # handshake error: no Sec-WebSocket-Key
            r = http_exchange(gw.port, upgrade_request("/echo", key=False), timeout=5)
            self.assertEqual(r.status, 400, f"group {g}: bad handshake got {r.status_line}")
            self.assertTrue(r.closed, f"group {g}: connection left open after 400")
            failures += 1

            # a fresh connection still echoes correctly
            c = open_ws(gw.port, timeout=5)
            try:
                m = rnd.randbytes(rnd.randrange(0, 3000))
                c.send_binary(m)
                self._echo(c, OP_BINARY, m, f"group {g} verify")
                self._clean_close(c, g)
            finally:
                c.sock.close()
            messages += 1
            verified += 1
        took = time.monotonic() - t0
        fds_after = gw.wait_fds_at_most(fds_before, timeout=5)
        self.assertLessEqual(fds_after, fds_before, "gateway fds not released after the churn")
        stats = self.stop_stats(gw)
        print(f"  [churn] {self.CONNECTIONS} + {verified} connections in {took:.2f}s; "
              f"accepted={stats['accepted']} closed={stats['closed']}", flush=True)
        self.assertEqual(stats["accepted"], stats["closed"], "accepted != closed at exit")
        self.assertGreaterEqual(stats["accepted"], self.CONNECTIONS + verified)
        self.assertEqual(stats["handshake_failures"], failures, "handshake_failures")
        self.assertEqual(stats["handshake_timeouts"], 0, "handshake_timeouts")
        self.assertEqual(stats["messages_in"], messages, "messages_in")
        self.assertEqual(stats["messages_out"], messages, "messages_out")

    def _echo(self, c: RawWS, opcode: int, payload: bytes, what: str) -> None:
        op, data = c.recv_message(timeout=5)
        self.assertEqual(op, opcode, f"{what}: echo opcode")
        self.assertSameBytes(data, payload, f"{what}: echo")

    def _clean_close(self, c: RawWS, g: int) -> None:
        self.assertTrue(c.send_close(1000))
        out = c.read_until_close(timeout=5, reply=False)
        self.assertEqual(out.frames, [], f"group {g}: frames before the close reply")
        self.assertEqual(out.code, 1000, f"group {g}: close reply {out}")
        self.assertTrue(out.tcp_closed, f"group {g}: TCP not closed after the close handshake")


if __name__ == "__main__":
    unittest.main()
