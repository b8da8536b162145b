"""HTTP side of wsgate over raw sockets: the upgrade (RFC 6455 section 4.2) and every
rejection with its exact status line and headers, /healthz, pipelined first frames,
the handshake timeout (slowloris), and the command line (SPEC.md sections 2 and 8)."""

import signal
import socket
import subprocess
import time
import unittest

from wsgate_fixture import (OP_BINARY, OP_TEXT, Gateway, GatewayTestCase, RawWS, accept_for,
                            build_frame, gateway_binary, http_exchange, read_response,
                            upgrade_request, wait_eof)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3 sample
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE_TIMEOUT_MS = 500


class HandshakeTest(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS)

    def exchange(self, request: bytes, wait_close: float = 2.0):
        return http_exchange(self.port, request, wait_close=wait_close)

    def assertRejected(self, request: bytes, status_line: str):
        """The exact status line, and the connection is closed after the answer."""
        r = self.exchange(request)
        self.assertEqual(r.status_line, status_line, f"response body: {r.body!r}")
        self.assertTrue(r.closed, "connection not closed after an error response")
        return r

    # --- 101 ---------------------------------------------------------------------------
    def test_101_rfc_sample_key(self):
        r = self.exchange(upgrade_request("/echo", key=RFC_KEY), wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(r.header("Sec-WebSocket-Accept"), RFC_ACCEPT)
        self.assertIn("websocket", r.header_tokens("Upgrade"))
        self.assertIn("upgrade", r.header_tokens("Connection"))
        self.assertIsNone(r.header("Sec-WebSocket-Extensions"), "no extension was offered")
        self.assertIsNone(r.header("Sec-WebSocket-Protocol"), "no subprotocol was offered")

    def test_101_on_ws_path_with_query(self):
        key = "AQIDBAUGBwgJCgsMDQ4PEA=="
        r = self.exchange(upgrade_request("/ws?user=alice", key=key), wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(r.header("Sec-WebSocket-Accept"), accept_for(key))

    def test_101_header_names_and_tokens_case_insensitive(self):
        key = "x3JJHMbDL1EzLkh9GBhXDw=="
        req = (f"GET /echo HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n"
               f"connection: keep-alive, Upgrade\r\nsec-websocket-key: {key}\r\n"
               f"SEC-WEBSOCKET-VERSION: 13\r\nUser-Agent: test\r\n\r\n").encode()
        r = self.exchange(req, wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(r.header("Sec-WebSocket-Accept"), accept_for(key))

    def test_101_then_echo_works(self):
        c = self.ws("/echo")
        c.send_text("hello")
        self.assertEcho(c, OP_TEXT, b"hello")

    def test_pipelined_frames_in_same_packet_as_upgrade(self):
        c = RawWS.open(self.port)
        self.addCleanup(c.sock.close)
        frames = build_frame(OP_TEXT, b"first") + build_frame(OP_BINARY, b"\x00\x01\x02")
        c.handshake("/echo", pipelined=frames)   # one sendall: request + frames
        self.assertEcho(c, OP_TEXT, b"first")
        self.assertEcho(c, OP_BINARY, b"\x00\x01\x02")

    def test_header_block_just_under_limit_accepted(self):
        base = len(upgrade_request("/echo", extra=["X-Pad: "]))
        pad = "a" * (8000 - base)
        req = upgrade_request("/echo", extra=[f"X-Pad: {pad}"])
        self.assertEqual(len(req), 8000)
        r = self.exchange(req, wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 101 Switching Protocols")

    # --- 400 ---------------------------------------------------------------------------
    def test_400_garbage_request_line(self):
        self.assertRejected(b"HELLO THERE\r\n\r\n", "HTTP/1.1 400 Bad Request")

    def test_400_header_line_without_colon(self):
        req = upgrade_request("/echo", extra=["this line has no colon"])
        self.assertRejected(req, "HTTP/1.1 400 Bad Request")

    def test_400_missing_key(self):
        self.assertRejected(upgrade_request("/echo", key=False), "HTTP/1.1 400 Bad Request")

    def test_400_key_not_base64(self):
        self.assertRejected(upgrade_request("/echo", key="not*base64*at*all!!"),
                            "HTTP/1.1 400 Bad Request")

    def test_400_key_wrong_length(self):
        # valid base64 of 15 bytes (a key must decode to exactly 16)
        self.assertRejected(upgrade_request("/echo", key="AAAAAAAAAAAAAAAAAAAA"),
                            "HTTP/1.1 400 Bad Request")

    def test_400_missing_host(self):
        self.assertRejected(upgrade_request("/echo", host=None), "HTTP/1.1 400 Bad Request")

    def test_400_missing_upgrade(self):
        self.assertRejected(upgrade_request("/echo", upgrade=None), "HTTP/1.1 400 Bad Request")

    def test_400_upgrade_not_websocket(self):
        self.assertRejected(upgrade_request("/echo", upgrade="h2c"), "HTTP/1.1 400 Bad Request")

    def test_400_missing_connection(self):
        self.assertRejected(upgrade_request("/echo", connection=None), "HTTP/1.1 400 Bad Request")

    def test_400_connection_without_upgrade_token(self):
        self.assertRejected(upgrade_request("/echo", connection="keep-alive"),
                            "HTTP/1.1 400 Bad Request")

    def test_400_http_1_0(self):
        self.assertRejected(upgrade_request("/echo", http="HTTP/1.0"), "HTTP/1.1 400 Bad Request")

    # --- 426 / 404 / 405 / 431 ---------------------------------------------------------
    def test_426_version_8(self):
        r = self.assertRejected(upgrade_request("/echo", version="8"), "HTTP/1.1 426 Upgrade Required")
        self.assertEqual(r.header("Sec-WebSocket-Version"), "13")

    def test_426_version_14(self):
        r = self.assertRejected(upgrade_request("/echo", version="14"), "HTTP/1.1 426 Upgrade Required")
        self.assertEqual(r.header("Sec-WebSocket-Version"), "13")

    def test_missing_version_rejected(self):
        # No version at all: a malformed request (400) or an unsupported version (426);
        # either way no upgrade, and a 426 must name the version we speak.
        r = self.exchange(upgrade_request("/echo", version=None))
        self.assertIn(r.status_line, ("HTTP/1.1 400 Bad Request", "HTTP/1.1 426 Upgrade Required"))
        if r.status == 426:
            self.assertEqual(r.header("Sec-WebSocket-Version"), "13")
        self.assertTrue(r.closed)

    def test_404_unknown_path(self):
        self.assertRejected(upgrade_request("/nope"), "HTTP/1.1 404 Not Found")

    def test_404_path_prefix_is_not_a_match(self):
        self.assertRejected(upgrade_request("/echo2"), "HTTP/1.1 404 Not Found")

    def test_405_post(self):
        r = self.assertRejected(upgrade_request("/echo", method="POST"),
                                "HTTP/1.1 405 Method Not Allowed")
        self.assertEqual(r.header("Allow"), "GET")

    def test_405_put_on_healthz(self):
        r = self.assertRejected(b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                                "HTTP/1.1 405 Method Not Allowed")
        self.assertEqual(r.header("Allow"), "GET")

    def test_431_header_block_over_8192(self):
        req = upgrade_request("/echo", extra=["X-Pad: " + "a" * 9000])
        self.assertRejected(req, "HTTP/1.1 431 Request Header Fields Too Large")

    def test_431_many_headers_no_terminator_yet(self):
        # Over the limit before the head even ends: answered without waiting for the rest.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"X-A: 0123456789012345\r\n" * 400)
            r = read_response(s, timeout=3)
        self.assertEqual(r.status_line, "HTTP/1.1 431 Request Header Fields Too Large")
        self.assertTrue(r.closed)

    # --- /healthz ----------------------------------------------------------------------
    def test_healthz(self):
        r = self.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 200 OK")
        self.assertEqual(r.body.rstrip(b"\r\n"), b"ok")

    # --- handshake timeout (slowloris) -------------------------------------------------
    def test_slowloris_partial_head_closed_after_timeout(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            closed = wait_eof(s, HANDSHAKE_TIMEOUT_MS / 1000 + 2.0)
            took = time.monotonic() - t0
        self.assertTrue(closed, "partial request head not closed within the handshake timeout")
        self.assertGreaterEqual(took, HANDSHAKE_TIMEOUT_MS / 1000 * 0.8,
                                f"closed after {took:.3f}s, before the handshake timeout")

    def test_slowloris_drip_feed_does_not_extend_timeout(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.monotonic()
            closed = False
            for b in b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    closed = True
                    break
                if wait_eof(s, 0.05):
                    closed = True
                    break
                if time.monotonic() - t0 > HANDSHAKE_TIMEOUT_MS / 1000 + 2.0:
                    break
            took = time.monotonic() - t0
        self.assertTrue(closed, f"drip-fed head still open after {took:.2f}s")
        self.assertLess(took, HANDSHAKE_TIMEOUT_MS / 1000 + 2.0)

    def test_silent_connection_closed_after_timeout(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            self.assertTrue(wait_eof(s, HANDSHAKE_TIMEOUT_MS / 1000 + 2.0),
                            "connection that sent nothing was not closed")

    def test_upgraded_connection_outlives_handshake_timeout(self):
        c = self.ws("/echo")
        time.sleep(HANDSHAKE_TIMEOUT_MS / 1000 * 2.5)
        c.send_text("still here")
        self.assertEcho(c, OP_TEXT, b"still here")

    def test_gateway_still_serves_after_rejections(self):
        for req in (b"junk\r\n\r\n", upgrade_request("/nope"), upgrade_request("/echo", version="7")):
            self.exchange(req)
        c = self.ws("/echo")
        c.send_binary(b"\xff\x00")
        self.assertEcho(c, OP_BINARY, b"\xff\x00")


class EchoDisabledTest(GatewayTestCase):
    GATEWAY_KW = dict(threads=1, echo=False, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS)

    def test_404_echo_without_echo_flag(self):
        r = http_exchange(self.port, upgrade_request("/echo"))
        self.assertEqual(r.status_line, "HTTP/1.1 404 Not Found")

    def test_ws_path_still_upgrades(self):
        r = http_exchange(self.port, upgrade_request("/ws", key=RFC_KEY), wait_close=0)
        self.assertEqual(r.status_line, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(r.header("Sec-WebSocket-Accept"), RFC_ACCEPT)


class CommandLineTest(unittest.TestCase):
    def run_gateway(self, *args, timeout=10):
        return subprocess.run([gateway_binary(), *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def test_unknown_flag_rejected_and_named(self):
        p = self.run_gateway("--echo", "--bogus-flag-xyz")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--bogus-flag-xyz", p.stderr, f"stderr: {p.stderr!r}")

    def test_bad_threads_value_rejected(self):
        p = self.run_gateway("--threads", "many")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("threads", p.stderr, f"stderr: {p.stderr!r}")

    def test_help_exits_0(self):
        p = self.run_gateway("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        for flag in ("--listen", "--threads", "--echo", "--version", "--help"):
            self.assertIn(flag, p.stdout + p.stderr)

    def test_version_exits_0(self):
        p = self.run_gateway("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"\d+\.\d+\.\d+")

    def start_gateway(self) -> Gateway:
        gw = Gateway(threads=2).start()
        self.addCleanup(gw.kill)
        return gw

    def test_sigint_exits_0(self):
        gw = self.start_gateway()
        rc, took = gw.signal_and_wait(signal.SIGINT)
        self.assertEqual(rc, 0, f"exit code after SIGINT (took {took:.2f}s)\n{gw.log_text()}")

    def test_sigterm_with_open_connections_exits_0_promptly(self):
        gw = self.start_gateway()
        clients = [RawWS.connect(gw.port, "/echo") for _ in range(20)]
        try:
            for c in clients:
                c.send_text("x")
            for c in clients:
                self.assertEqual(c.recv_message(), (OP_TEXT, b"x"))
            rc, took = gw.signal_and_wait(signal.SIGTERM)
            self.assertEqual(rc, 0, f"exit code after SIGTERM (took {took:.2f}s)\n{gw.log_text()}")
            for c in clients:   # every client learns: a close (1001 going away) and/or EOF
                out = c.read_until_close(timeout=2, reply=False, tcp_timeout=2)
                self.assertTrue(out.close is not None or out.tcp_closed)
                if out.close is not None and out.close.payload:
                    self.assertEqual(out.code, 1001)
        finally:
            for c in clients:
                c.sock.close()


if __name__ == "__main__":
    unittest.main()
