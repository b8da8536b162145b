"""wsgate's /echo driven by an independent client implementation: python3-websockets 10.4
(Debian). Echo of text and binary at the frame-length boundaries, ordering, fragmented
sends, ping/pong, close codes, the message size limit (1009) and many concurrent clients."""

import asyncio
import os
import unittest

import websockets
from websockets.exceptions import ConnectionClosedError, InvalidStatusCode

from wsgate_fixture import GatewayTestCase

MIB = 1 << 20
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1_000_000, MIB]


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class WebsocketsEchoBase(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True)

    def uri(self, path: str = "/echo") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def connect(self, path: str = "/echo", **kw):
        kw.setdefault("max_size", 4 * MIB)
        kw.setdefault("compression", None)
        kw.setdefault("ping_interval", None)
        kw.setdefault("open_timeout", 5)
        kw.setdefault("close_timeout", 5)
        return websockets.connect(self.uri(path), **kw)

    async def echo_once(self, message, **kw):
        async with self.connect(**kw) as ws:
            await ws.send(message)
            return await asyncio.wait_for(ws.recv(), 10)

    async def expect_close_code(self, ws, code: int):
        """The server closes the connection with `code` (seen in the close frame we receive)."""
        with self.assertRaises(ConnectionClosedError) as cm:
            await asyncio.wait_for(ws.recv(), 10)
        self.assertIsNotNone(cm.exception.rcvd, "connection dropped without a close frame")
        self.assertEqual(cm.exception.rcvd.code, code)


def _add_size_tests(cls):
    for n in SIZES:
        def text_case(self, n=n):
            msg = "".join(chr(0x41 + (i % 26)) for i in range(n))
            got = run(self.echo_once(msg))
            self.assertIsInstance(got, str, "text must come back as a text frame")
            self.assertEqual(len(got), n)
            self.assertEqual(got, msg)

        def binary_case(self, n=n):
            msg = os.urandom(n)
            got = run(self.echo_once(msg))
            self.assertIsInstance(got, bytes, "binary must come back as a binary frame")
            self.assertEqual(got, msg)
        setattr(cls, f"test_text_echo_{n}_bytes", text_case)
        setattr(cls, f"test_binary_echo_{n}_bytes", binary_case)
    return cls


@_add_size_tests
class WebsocketsEchoTest(WebsocketsEchoBase):

    def test_unicode_text_echo(self):
        msg = "κόσμε — ünïcödé ✓ 🚀 " * 100
        self.assertEqual(run(self.echo_once(msg)), msg)

    def test_many_messages_in_order(self):
        async def go():
            async with self.connect() as ws:
                msgs = [f"msg-{i}-" + "x" * (i % 300) for i in range(2000)]
                for m in msgs:               # all sent before reading anything
                    await ws.send(m)
                got = [await asyncio.wait_for(ws.recv(), 10) for _ in msgs]
                self.assertEqual(got, msgs)
        run(go())

    def test_alternating_text_and_binary_keep_their_type(self):
        async def go():
            async with self.connect() as ws:
                sent = [("t%d" % i) if i % 2 else bytes([i % 256]) * i for i in range(200)]
                for m in sent:
                    await ws.send(m)
                for m in sent:
                    got = await asyncio.wait_for(ws.recv(), 10)
                    self.assertEqual(type(got), type(m))
                    self.assertEqual(got, m)
        run(go())

    def test_fragmented_text_send(self):
        parts = ["Hello", ", ", "", "fragmented ", "κόσμε", " world" * 5000]
        self.assertEqual(run(self.echo_once(parts)), "".join(parts))

    def test_fragmented_binary_send(self):
        parts = [os.urandom(n) for n in (1, 125, 126, 65535, 65536, 3)]
        self.assertEqual(run(self.echo_once(parts)), b"".join(parts))

    def test_fragmented_1mib_in_64k_fragments(self):
        parts = [os.urandom(65536) for _ in range(16)]
        self.assertEqual(run(self.echo_once(parts)), b"".join(parts))

    def test_ping_pong(self):
        async def go():
            async with self.connect() as ws:
                for payload in (b"", b"abc", os.urandom(125)):
                    waiter = await ws.ping(payload)   # resolves only on a pong with this payload
                    await asyncio.wait_for(waiter, 5)
        run(go())

    def test_ping_answered_inside_fragmented_message(self):
        async def go():
            async with self.connect() as ws:
                async def fragments():
                    yield "first part, "
                    # control frame between fragments: the pong must come back now,
                    # while the message is still incomplete
                    waiter = await ws.ping(b"mid-message")
                    await asyncio.wait_for(waiter, 5)
                    yield "second part"
                await ws.send(fragments())
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "first part, second part")
        run(go())

    def test_close_normal_code_echoed(self):
        async def go():
            async with self.connect() as ws:
                await ws.send("x")
                await ws.recv()
                await ws.close(1000, "bye")
                self.assertEqual(ws.close_code, 1000)
        run(go())

    def test_close_application_code_echoed(self):
        async def go():
            ws = await self.connect()
            await ws.close(4321, "app")
            self.assertEqual(ws.close_code, 4321)
        run(go())

    def test_over_default_limit_closes_1009(self):
        async def go():
            async with self.connect() as ws:
                await ws.send(b"\x00" * (MIB + 1))
                await self.expect_close_code(ws, 1009)
        run(go())

    def test_permessage_deflate_offer_still_echoes(self):
        # Offering compression must work whether the gateway accepts or declines it.
        msg = "compressible " * 10000
        self.assertEqual(run(self.echo_once(msg, compression="deflate")), msg)

    def test_ws_path_opens_and_closes_cleanly(self):
        async def go():
            ws = await self.connect("/ws?user=test-user")
            await ws.close(1000)
            self.assertEqual(ws.close_code, 1000)
        run(go())

    def test_unknown_path_rejected_404(self):
        async def go():
            with self.assertRaises(InvalidStatusCode) as cm:
                await self.connect("/does-not-exist")
            self.assertEqual(cm.exception.status_code, 404)
        run(go())


class WebsocketsSmallLimitTest(WebsocketsEchoBase):
    GATEWAY_KW = dict(threads=2, echo=True, max_message=65536)

    def test_exactly_at_limit_echoed(self):
        msg = os.urandom(65536)
        self.assertEqual(run(self.echo_once(msg)), msg)

    def test_one_over_limit_closes_1009(self):
        async def go():
            async with self.connect() as ws:
                await ws.send("a" * 65537)
                await self.expect_close_code(ws, 1009)
        run(go())

    def test_fragmented_over_limit_closes_1009(self):
        async def go():
            async with self.connect() as ws:
                await ws.send([b"a" * 40000, b"b" * 40000])
                await self.expect_close_code(ws, 1009)
        run(go())

    def test_limit_applies_per_message_not_per_connection(self):
        async def go():
            async with self.connect() as ws:
                for i in range(8):           # 8 x 60 KB = 480 KB on one connection
                    m = bytes([i]) * 60000
                    await ws.send(m)
                    self.assertEqual(await ws.recv(), m)
        run(go())


class WebsocketsConcurrencyTest(WebsocketsEchoBase):
    GATEWAY_KW = dict(threads=2, echo=True)
    CLIENTS = 200
    MESSAGES = 20

    def test_200_concurrent_clients(self):
        async def client(i: int):
            async with self.connect() as ws:
                sent = [f"c{i}-m{j}-" + "p" * ((i * 7 + j) % 500) for j in range(self.MESSAGES)]
                for m in sent:
                    await ws.send(m)
                got = [await asyncio.wait_for(ws.recv(), 20) for _ in sent]
                if got != sent:
                    raise AssertionError(f"client {i}: echo mismatch")
                await ws.send(os.urandom(1000) + bytes([i % 256]))
                b = await asyncio.wait_for(ws.recv(), 20)
                if len(b) != 1001 or b[-1] != i % 256:
                    raise AssertionError(f"client {i}: binary echo mismatch")
            return i

        async def go():
            # all clients connected at the same time before any finishes
            results = await asyncio.gather(*(client(i) for i in range(self.CLIENTS)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            self.assertEqual(errors, [], f"{len(errors)} of {self.CLIENTS} clients failed")
        run(go(), timeout=90)


if __name__ == "__main__":
    unittest.main()
