"""permessage-deflate (RFC 7692) against the real gateway: negotiation of every parameter as seen
on the wire, compressed echo at many sizes (our inflater and our deflater), fragmented compressed
messages with RSV1 on the first frame only, a deflate bomb (1009 before memory grows), pushes
compressed once per publication for a mixed room, and two independent peers with compression on:
python3-websockets and Node `ws`.
"""

import asyncio
import json
import os
import shutil
import subprocess
import unittest
import zlib

import websockets

from client_proto import parse_worker_stats, sum_stats
from wsgate_fixture import (OP_BINARY, OP_CLOSE, OP_TEXT, Gateway, RawWS, binary_is_asan, build_frame)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE = shutil.which("node")
NODE_WS = os.path.join(ROOT, "bench", "node", "node_modules", "ws")
DEFAULT = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def compress(data: bytes, wbits: int = 15) -> bytes:
    """A client's permessage-deflate payload: raw DEFLATE, sync flush, 00 00 ff ff removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def text_of(n: int, seed: int = 0) -> bytes:
    words = [b"room", b"lobby", b"user", b"message", b"hello", b'{"type":', b"data", b"42,"]
    out = bytearray()
    i = seed
    while len(out) < n:
        out += words[(i * 7 + 3) % 8] + b" "
        i += 1
    return bytes(out[:n])


def stats_of(gw: Gateway) -> dict:
    return sum_stats(parse_worker_stats(gw.log_text(limit=1 << 22)))


class DeflateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = Gateway("--compression", "--compression-min-size", "64", threads=2).start()

    @classmethod
    def tearDownClass(cls):
        assert cls.gw.stop() == 0, cls.gw.log_text()

    def offer(self, *headers: str, gw: Gateway | None = None) -> str | None:
        ws = RawWS.connect((gw or self.gw).port, "/echo", extra=tuple(f"Sec-WebSocket-Extensions: {h}"
                                                                       for h in headers))
        self.addCleanup(ws.sock.close)
        return ws.response.header("Sec-WebSocket-Extensions")

    def test_negotiation_on_the_wire(self):
        self.assertIsNone(self.offer(), "no offer, no extension")
        self.assertEqual(self.offer("permessage-deflate"), DEFAULT)
        self.assertEqual(self.offer("permessage-deflate; client_max_window_bits"), DEFAULT)
        self.assertEqual(self.offer("permessage-deflate; server_max_window_bits=12"),
                         "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
                         "client_no_context_takeover")
        # Invalid offers are declined and the next one taken; offers across several headers.
        self.assertEqual(self.offer("permessage-deflate; server_max_window_bits=20, permessage-deflate"), DEFAULT)
        self.assertEqual(self.offer("x-webkit-deflate-frame", "permessage-deflate; client_no_context_takeover"),
                         DEFAULT)
        self.assertIsNone(self.offer("permessage-deflate; bogus"))
        self.assertIsNone(self.offer("x-webkit-deflate-frame"))

    def test_disabled_by_default_and_rsv1_refused(self):
        gw = Gateway(threads=1).start()
        self.addCleanup(gw.kill)
        self.assertIsNone(self.offer("permessage-deflate", gw=gw))
        ws = RawWS.connect(gw.port, "/echo")
        self.addCleanup(ws.sock.close)
        ws.send_raw(build_frame(OP_TEXT, compress(b"hello"), rsv=4))
        f = ws.recv_frame(3)
        self.assertEqual((f.opcode, f.close_code), (OP_CLOSE, 1002))
        self.assertEqual(gw.stop(), 0)

    def test_compressed_echo_at_many_sizes(self):
        ws = RawWS.connect(self.gw.port, "/echo", extra=("Sec-WebSocket-Extensions: permessage-deflate",))
        self.addCleanup(ws.sock.close)
        for n in (1, 63, 64, 125, 126, 1000, 4096, 65535, 65536, 300000):
            for op in (OP_TEXT, OP_BINARY):
                data = text_of(n, n)
                ws.send_raw(build_frame(op, compress(data), rsv=4))
                f = ws.recv_frame(10)
                self.assertEqual(f.opcode, op)
                got = inflate(f.payload) if f.rsv & 4 else f.payload
                self.assertEqual(got, data, f"size {n}")
                self.assertEqual(bool(f.rsv & 4), n >= 64, f"size {n}: compressed back iff >= min size")
        # Uncompressed messages are still fine on a compressed connection.
        ws.send_text("plain")
        self.assertEqual(ws.recv_message(3), (OP_TEXT, b"plain"))

    def test_fragmented_compressed_message_rsv1_on_first_frame_only(self):
        ws = RawWS.connect(self.gw.port, "/echo", extra=("Sec-WebSocket-Extensions: permessage-deflate",))
        self.addCleanup(ws.sock.close)
        data = text_of(50000, 5)
        z = compress(data)
        a, b = len(z) // 3, 2 * len(z) // 3
        ws.send_raw(build_frame(OP_TEXT, z[:a], fin=False, rsv=4) + build_frame(0x9, b"p") +
                    build_frame(0x0, z[a:b], fin=False) + build_frame(0x0, z[b:]))
        f = ws.recv_frame(5)
        self.assertEqual(f.opcode, 0xA)  # the pong comes first
        f = ws.recv_frame(5)
        self.assertEqual(inflate(f.payload) if f.rsv & 4 else f.payload, data)
        # RSV1 on a continuation frame: 1002.
        ws.send_raw(build_frame(OP_TEXT, z[:a], fin=False, rsv=4) + build_frame(0x0, z[a:], rsv=4))
        f = ws.recv_frame(5)
        self.assertEqual((f.opcode, f.close_code), (OP_CLOSE, 1002))

    def test_deflate_bomb_is_1009_before_memory_grows(self):
        gw = Gateway("--compression", "--max-message", "65536", threads=1).start()
        self.addCleanup(gw.kill)
        bystander = RawWS.connect(gw.port, "/echo")
        self.addCleanup(bystander.sock.close)
        rss0 = gw.rss_bytes()
        bomb = compress(bytes(48 << 20))  # 48 MiB of zeros in ~47 KiB: under the 64 KiB frame limit
        self.assertLess(len(bomb), 65536)
        for _ in range(5):
            ws = RawWS.connect(gw.port, "/echo", extra=("Sec-WebSocket-Extensions: permessage-deflate",))
            ws.send_raw(build_frame(OP_BINARY, bomb, rsv=4))
            f = ws.recv_frame(5)
            self.assertEqual((f.opcode, f.close_code), (OP_CLOSE, 1009))
            ws.sock.close()
        grew = gw.rss_bytes() - rss0
        if not binary_is_asan():
            self.assertLess(grew, 8 << 20, f"RSS grew {grew} bytes for 5 bombs of tens of MiB")
        bystander.send_text("still here")
        self.assertEqual(bystander.recv_message(3), (OP_TEXT, b"still here"))
        self.assertEqual(gw.stop(), 0)

    def test_push_compressed_once_for_a_mixed_room(self):
        gw = Gateway("--compression", "--compression-min-size", "64", threads=1).start()
        self.addCleanup(gw.kill)
        data = {"text": "the same news for everyone " * 80}

        async def scenario():
            zipped = [await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws?user=z{i}") for i in range(6)]
            plain = [await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws?user=p{i}", compression=None)
                     for i in range(6)]
            for i, ws in enumerate(zipped + plain):
                await ws.send(json.dumps({"op": "join", "room": "news", "id": i}))
                self.assertEqual(json.loads(await ws.recv())["type"], "ack")
            for k in range(5):
                await plain[0].send(json.dumps({"op": "publish", "room": "news", "data": data, "id": 100 + k}))
            for ws in zipped + plain:
                got = []
                while len(got) < 5:  # the publisher also gets its acks, interleaved
                    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if m["type"] != "ack":
                        got.append(m)
                self.assertTrue(all(m["type"] == "message" and m["data"] == data for m in got))
            self.assertTrue(all(ws.extensions for ws in zipped))
            self.assertFalse(any(ws.extensions for ws in plain))
            for ws in zipped + plain:
                await ws.close()

        asyncio.run(scenario())
        self.assertEqual(gw.stop(), 0)
        s = stats_of(gw)
        self.assertEqual(s["deflate_negotiated"], 6)
        self.assertEqual(s["compressed_frames"], 5, "one compression per publication, not per recipient")
        self.assertLess(s["bytes_out"], 6 * 5 * 2400 + 6 * 5 * 600 + 20000,
                        "the compressed recipients got much smaller frames")

    def test_batching_with_compression_keeps_order(self):
        # ?batch=1 and permessage-deflate: small pushes are batched, large ones come as their own
        # compressed frames (never batched), and the publish order is kept across both kinds.
        gw = Gateway("--compression", "--compression-min-size", "200", "--rate-limit", "0", threads=1).start()
        self.addCleanup(gw.kill)
        rx = RawWS.connect(gw.port, "/ws?user=zb&batch=1", extra=("Sec-WebSocket-Extensions: permessage-deflate",))
        self.addCleanup(rx.sock.close)
        self.assertTrue(rx.deflate)
        rx.send_text(json.dumps({"op": "join", "room": "b", "id": 1}))
        self.assertEqual(json.loads(rx.recv_message(3)[1])["type"], "ack")
        tx = RawWS.connect(gw.port, "/ws?user=pub")
        self.addCleanup(tx.sock.close)
        tx.send_text(json.dumps({"op": "join", "room": "b", "id": 1}))
        self.assertEqual(json.loads(tx.recv_message(3)[1])["type"], "ack")
        sent = [f"n{i} " + ("long " * 80 if i % 5 == 4 else "") for i in range(40)]
        # All 40 publications in one write, so their pushes share loop turns (and batches).
        tx.send_raw(b"".join(build_frame(OP_TEXT, json.dumps({"op": "publish", "room": "b", "data": t}))
                             for t in sent))  # no id: no ack
        got, compressed, batches = [], 0, 0
        while len(got) < len(sent):
            f = rx.recv_frame(5)
            self.assertEqual(f.opcode, OP_TEXT, f)
            if f.rsv & 4:
                compressed += 1
                push = json.loads(inflate(f.payload))
                self.assertEqual(push["type"], "message")
                got.append(push["data"])
                continue
            doc = json.loads(f.payload)
            if isinstance(doc, list):
                batches += 1
                self.assertTrue(all(len(p["data"]) < 200 for p in doc), "only small pushes are batched")
                got += [p["data"] for p in doc]
            else:
                got.append(doc["data"])
        self.assertEqual(got, sent, "every push once, in publish order")
        self.assertEqual(compressed, 8, "the 8 large pushes came compressed, one frame each")
        self.assertGreaterEqual(batches, 1, "small pushes queued together were batched")
        self.assertEqual(gw.stop(), 0)

    def test_python_websockets_with_context_takeover(self):
        gw = Gateway("--compression", "--compression-client-context-takeover", "--compression-client-window-bits",
                     "11", threads=1).start()
        self.addCleanup(gw.kill)

        async def scenario():
            async with websockets.connect(f"ws://127.0.0.1:{gw.port}/echo", max_size=None) as ws:
                hdr = ws.response_headers.get("Sec-WebSocket-Extensions")
                self.assertEqual(hdr, "permessage-deflate; server_no_context_takeover; client_max_window_bits=11")
                for i in range(20):  # similar messages: the client's window carries over
                    msg = (f"message {i}: " + "the quick brown fox jumps over the lazy dog " * 40)
                    await ws.send(msg)
                    self.assertEqual(await asyncio.wait_for(ws.recv(), 5), msg)

        asyncio.run(scenario())
        self.assertEqual(gw.stop(), 0)

    def test_echo_under_every_negotiation_variant(self):
        # Autobahn 13.x-style: each offer variant, then compressed messages both ways under what
        # was agreed (a client keeping its context compresses with one stream across messages).
        gw = Gateway("--compression", "--compression-min-size", "32", "--compression-client-context-takeover",
                     "--compression-client-window-bits", "12", threads=1).start()
        self.addCleanup(gw.kill)
        variants = [
            ("permessage-deflate", "server_no_context_takeover", True, 15),
            ("permessage-deflate; client_no_context_takeover", "client_no_context_takeover", False, 15),
            ("permessage-deflate; client_max_window_bits", "client_max_window_bits=12", True, 12),
            ("permessage-deflate; client_max_window_bits=9", "client_max_window_bits=9", True, 9),
            ("permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
             "client_max_window_bits=12", True, 12),
            ("permessage-deflate; server_max_window_bits=15; client_no_context_takeover",
             "server_max_window_bits=15", False, 15),
            ("permessage-deflate; server_max_window_bits=9", "server_max_window_bits=9", True, 15),
        ]
        for offer, expect_in_answer, takeover, wbits in variants:
            with self.subTest(offer=offer):
                ws = RawWS.connect(gw.port, "/echo", extra=(f"Sec-WebSocket-Extensions: {offer}",))
                self.addCleanup(ws.sock.close)
                answer = ws.response.header("Sec-WebSocket-Extensions") or ""
                self.assertIn(expect_in_answer, answer)
                self.assertIn("server_no_context_takeover", answer)
                self.assertEqual("client_no_context_takeover" not in answer, takeover, answer)
                if "client_max_window_bits" not in offer:
                    self.assertNotIn("client_max_window_bits", answer, "never answered unasked")
                c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
                for i in range(4):
                    data = text_of(600 + 300 * i, i) + b" repeated " * 20
                    if not takeover:
                        c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
                    z = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
                    ws.send_raw(build_frame(OP_TEXT, z[:-4], rsv=4))
                    f = ws.recv_frame(5)
                    got = inflate(f.payload) if f.rsv & 4 else f.payload
                    self.assertEqual(got, data, f"message {i}")
                    # Our window is 15: a client that allows us 9 bits gets plain frames only.
                    self.assertEqual(bool(f.rsv & 4), "server_max_window_bits=9" not in answer)
        self.assertEqual(gw.stop(), 0)

    @unittest.skipUnless(NODE and os.path.isdir(NODE_WS), "node or bench/node/node_modules/ws missing")
    def test_node_ws_with_compression(self):
        script = os.path.join(os.path.dirname(__file__), "deflate_peer.mjs")
        p = subprocess.run([NODE, script, str(self.gw.port), NODE_WS], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        result = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(result["extensions"], DEFAULT)
        self.assertEqual(result["echoed"], result["sent"])
        self.assertTrue(result["push_ok"])


if __name__ == "__main__":
    unittest.main()
