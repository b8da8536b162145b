"""wsgate under abuse: garbage before and after the handshake, clients vanishing in the
middle of a frame (FIN and RST), and rounds of 5,000 concurrent connections — while a
well-behaved echo client keeps getting correct answers, and without memory or fd growth.

Seeded randomness (SEED) so a failure reproduces. Runs in well under 2 minutes on 2 cores."""

import asyncio
import os
import random
import socket
import struct
import threading
import time
import unittest

from wsgate_fixture import (OP_CLOSE, OP_TEXT, GatewayTestCase, RawWS, accept_for,
                            binary_is_asan, build_frame, close_payload, frame_header,
                            http_exchange, mask_bytes, new_key, upgrade_request)

SEED = int(os.environ.get("WSGATE_TEST_SEED", "6455"))
HANDSHAKE_TIMEOUT_MS = 500
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class EchoProbe:
    """A well-behaved client in a background thread: one long-lived /echo connection
    sending a message every few ms and checking each echo, plus a fresh connection every
    ~0.25 s. Records failures instead of raising, so the test can report them."""

    def __init__(self, port: int, interval: float = 0.005):
        self.port = port
        self.interval = interval
        self.errors: list[str] = []
        self.echoes = 0
        self.fresh_connections = 0
        self.max_rtt = 0.0
        self.after_ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 5
        while self.echoes == 0 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        # The gateway must still serve after the abuse: a few more echoes before stopping.
        target = self.echoes + 5
        deadline = time.monotonic() + 5
        while self.echoes < target and not self.errors and self._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self.after_ok = self.echoes >= target
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        try:
            c = RawWS.connect(self.port, "/echo", timeout=10)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"probe connect: {e!r}")
            return
        i, last_fresh = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                payload = f"probe-{i}-".encode() + bytes([i % 256]) * (i % 200)
                t0 = time.monotonic()
                c.send_binary(payload)
                op, data = c.recv_message(timeout=10)
                self.max_rtt = max(self.max_rtt, time.monotonic() - t0)
                if data != payload:
                    self.errors.append(f"probe echo {i}: got {data[:40]!r}")
                    return
                self.echoes += 1
                i += 1
                if time.monotonic() - last_fresh > 0.25:
                    last_fresh = time.monotonic()
                    f = RawWS.connect(self.port, "/echo", timeout=10)
                    f.send_text("fresh")
                    if f.recv_message(timeout=10) != (OP_TEXT, b"fresh"):
                        self.errors.append("fresh connection echo mismatch")
                    f.sock.close()
                    self.fresh_connections += 1
                self._stop.wait(self.interval)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"probe failed after {self.echoes} echoes: {e!r}")
        finally:
            c.sock.close()

    def check(self, tc: unittest.TestCase, min_echoes: int = 6):
        tc.assertEqual(self.errors, [], "well-behaved client saw errors")
        tc.assertTrue(self.after_ok, "well-behaved client got no echoes after the abuse ended")
        tc.assertGreaterEqual(self.echoes, min_echoes, "well-behaved client made too little progress")
        print(f"  [probe] {self.echoes} echoes, {self.fresh_connections} fresh connections, "
              f"max rtt {self.max_rtt * 1000:.1f} ms", flush=True)


class GarbageTest(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS)

    def test_garbage_request_heads_get_400(self):
        rnd = random.Random(SEED)
        with EchoProbe(self.port) as probe:
            for i in range(60):
                junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4000)))
                r = http_exchange(self.port, junk + b"\r\n\r\n")
                self.assertEqual(r.status_line, "HTTP/1.1 400 Bad Request", f"garbage #{i}")
                self.assertTrue(r.closed, f"garbage #{i}: connection left open after 400")
        probe.check(self)

    def test_garbage_without_end_of_head_is_rejected_or_timed_out(self):
        rnd = random.Random(SEED + 1)
        with EchoProbe(self.port) as probe:
            for i in range(20):
                junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000)))
                junk = junk.replace(b"\r\n\r\n", b"").replace(b"\n\n", b"")
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(junk)
                    s.settimeout(HANDSHAKE_TIMEOUT_MS / 1000 + 2)
                    data = b""
                    try:
                        while chunk := s.recv(65536):
                            data += chunk
                    except ConnectionResetError:
                        pass
                    except socket.timeout:
                        self.fail(f"garbage #{i}: connection neither answered nor closed")
                if data:
                    self.assertTrue(data.startswith(b"HTTP/1.1 400 Bad Request\r\n"),
                                    f"garbage #{i}: {data[:60]!r}")
        probe.check(self)

    def _after_handshake(self, rnd, variant):
        c = RawWS.connect(self.port, "/echo")
        try:
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(2, 3000)))
            before = []
            if variant == 0:      # random bytes, first byte with an RSV bit set
                data = bytes([junk[0] | (0x10 << rnd.randrange(3))]) + junk[1:]
            elif variant == 1:    # plausible header but unmasked
                data = build_frame(rnd.choice([1, 2]), junk, mask=False)
            elif variant == 2:    # reserved opcode
                data = build_frame(rnd.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), junk[:125])
            else:                 # a good message, then random bytes with an RSV bit set
                good = b"good message %d" % variant
                before = [(OP_TEXT, good)]
                data = build_frame(OP_TEXT, good) + bytes([junk[0] | 0x40]) + junk[1:]
            c.send_raw(data)
            out = c.read_until_close(timeout=5)
            self.assertEqual([(f.opcode, f.payload) for f in out.frames], before)
            self.assertEqual(out.code, 1002, f"variant {variant}: {out}")
            self.assertTrue(out.tcp_closed)
        finally:
            c.sock.close()

    def test_garbage_frames_after_handshake_get_1002(self):
        rnd = random.Random(SEED + 2)
        with EchoProbe(self.port) as probe:
            for i in range(80):
                with self.subTest(i=i):
                    self._after_handshake(rnd, i % 4)
        probe.check(self)


class DisconnectTest(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS)

    def test_disconnect_mid_frame_repeatedly(self):
        rnd = random.Random(SEED + 3)
        with EchoProbe(self.port) as probe:
            time.sleep(0.1)
            fds_before = self.gw.fd_count()
            rss_before = self.gw.rss_bytes()
            for i in range(400):
                rst = i % 2 == 1
                kind = i % 8
                if kind == 7:            # vanish in the middle of the handshake
                    c = RawWS.open(self.port)
                    c.send_raw(upgrade_request("/echo")[:rnd.randrange(5, 60)])
                    c.close_socket(rst=rst)
                    continue
                c = RawWS.connect(self.port, "/echo")
                n = rnd.randrange(200, 200_000)
                key = os.urandom(4)
                if kind == 6:            # in the middle of a fragmented message
                    c.send_raw(build_frame(OP_TEXT, b"x" * 1000, fin=False))
                if kind == 5:            # only part of the header
                    c.send_raw(frame_header(2, n, mask_key=key)[:rnd.randrange(1, 4)])
                else:
                    half = b"y" * (n // 2) if kind == 6 else os.urandom(n // 2)
                    part = mask_bytes(half, key)
                    c.send_raw(frame_header(2 if kind != 6 else 0, n, fin=True, mask_key=key) + part)
                c.close_socket(rst=rst)
            fds_after = self.gw.wait_fds_at_most(fds_before + 2, timeout=5)
            self.assertTrue(self.gw.healthy(), "/healthz failed after the disconnects")
        probe.check(self)
        rss_after = self.gw.rss_bytes()
        print(f"  [disconnect] fds {fds_before} -> {fds_after}, "
              f"rss {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB", flush=True)
        self.assertLessEqual(fds_after, fds_before + 2, "gateway fds not released after disconnects")

    def test_client_closes_after_sending_close_without_reading(self):
        with EchoProbe(self.port) as probe:
            for i in range(100):
                c = RawWS.connect(self.port, "/echo")
                # a large echo the client never reads, then close and go
                c.send_raw(build_frame(2, os.urandom(300_000)) + build_frame(OP_CLOSE, close_payload(1000)))
                c.close_socket(rst=i % 2 == 0)
            self.assertTrue(self.gw.healthy())
        probe.check(self)


# ---------------------------------------------------------------------------------------
# 5,000 concurrent connections, 3 rounds
# ---------------------------------------------------------------------------------------

class MassConnections:
    """Opens N raw WebSocket connections from several 127.0.0.x source addresses."""

    SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]

    def __init__(self, port: int, n: int):
        self.port = port
        self.n = n
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _open_one(self, i: int, sem: asyncio.Semaphore):
        async with sem:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.SOURCES[i % len(self.SOURCES)], 0))
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", self.port)), 15)
            except BaseException:
                sock.close()
                raise
            r, w = await asyncio.open_connection(sock=sock)
            key = new_key()
            w.write(upgrade_request("/echo", key=key))
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)
            if not head.startswith(b"HTTP/1.1 101 ") or accept_for(key).encode() not in head:
                w.close()
                raise AssertionError(f"connection {i}: bad handshake {head[:80]!r}")
            return r, w

    async def open_all(self):
        sem = asyncio.Semaphore(256)
        results = await asyncio.gather(*(self._open_one(i, sem) for i in range(self.n)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.conns = [r for r in results if not isinstance(r, BaseException)]
        return errors

    @staticmethod
    async def echo(r, w, payload: bytes) -> bool:
        w.write(build_frame(OP_TEXT, payload))
        hdr = await asyncio.wait_for(r.readexactly(2), 10)
        data = await asyncio.wait_for(r.readexactly(hdr[1] & 0x7F), 10)
        return hdr[0] == 0x81 and data == payload

    @staticmethod
    async def ping(r, w, payload: bytes) -> bool:
        w.write(build_frame(0x9, payload))
        hdr = await asyncio.wait_for(r.readexactly(2), 10)
        data = await asyncio.wait_for(r.readexactly(hdr[1] & 0x7F), 10)
        return hdr[0] == 0x8A and data == payload

    @staticmethod
    async def close_one(i: int, r, w) -> bool:
        try:
            if i % 2 == 0:       # WebSocket close handshake, then the server closes TCP
                w.write(build_frame(OP_CLOSE, close_payload(1000)))
                hdr = await asyncio.wait_for(r.readexactly(2), 10)
                body = await asyncio.wait_for(r.readexactly(hdr[1] & 0x7F), 10)
                rest = await asyncio.wait_for(r.read(), 10)     # EOF
                return hdr[0] == 0x88 and body[:2] == struct.pack("!H", 1000) and rest == b""
            return True          # plain TCP close
        finally:
            w.close()

    async def close_all(self):
        results = await asyncio.gather(*(self.close_one(i, r, w) for i, (r, w) in enumerate(self.conns)),
                                       return_exceptions=True)
        self.conns = []
        return [r for r in results if r is not True]


class ConcurrencyTest(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True, handshake_timeout_ms=5000)
    N = 5000
    ROUNDS = 3

    def test_5000_connections_3_rounds(self):
        gw = self.gw
        rss_start = gw.rss_bytes()
        rows = []
        with EchoProbe(self.port, interval=0.02) as probe:
            for rnd in range(1, self.ROUNDS + 1):
                t0 = time.monotonic()
                mass = MassConnections(self.port, self.N)

                async def round_trip():
                    errors = await mass.open_all()
                    opened = len(mass.conns)
                    t_open = time.monotonic() - t0
                    rss_open = gw.rss_bytes()
                    # all are open at once: sample across the whole range
                    step = max(1, opened // 100)
                    sample = list(range(0, opened, step)) + [opened - 1] if opened else []
                    echo_ok = await asyncio.gather(*(
                        mass.echo(*mass.conns[i], f"sample-{i}".encode()) for i in sample),
                        return_exceptions=True)
                    ping_ok = await asyncio.gather(*(
                        mass.ping(*mass.conns[i], b"p%d" % i) for i in sample[::2]),
                        return_exceptions=True)
                    close_errors = await mass.close_all()
                    return errors, opened, t_open, rss_open, echo_ok, ping_ok, close_errors

                errors, opened, t_open, rss_open, echo_ok, ping_ok, close_errors = \
                    asyncio.run(asyncio.wait_for(round_trip(), 120))
                self.assertEqual(errors[:3], [], f"round {rnd}: {len(errors)} connections failed")
                self.assertEqual(opened, self.N)
                self.assertTrue(all(x is True for x in echo_ok), f"round {rnd}: sample echo failed: "
                                f"{[x for x in echo_ok if x is not True][:3]}")
                self.assertTrue(all(x is True for x in ping_ok), f"round {rnd}: sample ping failed")
                self.assertEqual(close_errors[:3], [], f"round {rnd}: {len(close_errors)} bad closes")
                self.assertTrue(gw.healthy(), f"round {rnd}: /healthz failed")
                time.sleep(1.0)   # let the gateway finish closing and free memory
                rss_closed = gw.rss_bytes()
                rows.append((rnd, t_open, time.monotonic() - t0, rss_open, rss_closed))
                print(f"  [round {rnd}] {self.N} open in {t_open:.2f}s, round {rows[-1][2]:.2f}s, "
                      f"rss open {rss_open / 2**20:.1f} MiB, after close {rss_closed / 2**20:.1f} MiB",
                      flush=True)
        probe.check(self)
        growth = rows[-1][4] - rows[0][4]
        print(f"  [rss] start {rss_start / 2**20:.1f} MiB, after round 1 {rows[0][4] / 2**20:.1f} MiB, "
              f"after round {self.ROUNDS} {rows[-1][4] / 2**20:.1f} MiB, growth {growth / 2**20:+.2f} MiB",
              flush=True)
        if binary_is_asan():
            print("  [rss] AddressSanitizer build: its quarantine holds freed memory, "
                  "growth not asserted", flush=True)
            return
        self.assertLess(growth, 8 * 2**20, "RSS keeps growing across rounds (leak?)")


if __name__ == "__main__":
    unittest.main()
