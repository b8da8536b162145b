"""Shared helpers for the wsgate integration tests.

What is here:
- `Gateway`: starts the real wsgate binary on a free loopback port, waits for /healthz,
  stops it with SIGTERM and reports the exit code; reads its RSS and open fds from /proc.
- `http_exchange()`: one raw HTTP request over a socket, parsed response.
- `RawWS`: a deliberately permissive WebSocket client over a plain socket. It sends frames
  with any FIN/RSV/opcode/mask/length encoding and payload (so it can break the protocol on
  purpose), reads frames, close codes, and tells when the server closed the TCP connection.
- `GatewayTestCase`: unittest base class running one gateway per test class, restarting it
  (and failing the test that noticed) if it dies.

Runs on Debian's /usr/bin/python3, standard library only (the websockets package is used by
the test files that need an independent client, not here).

The binary comes from $WSGATE_BIN (ctest sets it); otherwise <repo>/build/release/wsgate
(or <repo>/build/release/core/wsgate, where the CMake target lands).
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import hashlib
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "build" / "release" / "wsgate"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# Exit code and time we allow for SIGTERM/SIGINT.
STOP_TIMEOUT_S = 5.0


def gateway_binary() -> str:
    """Path of the wsgate binary under test; fails loudly when it is missing."""
    candidates = [os.environ["WSGATE_BIN"]] if os.environ.get("WSGATE_BIN") else \
        [str(DEFAULT_BIN), str(DEFAULT_BIN.parent / "core" / "wsgate")]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"wsgate binary not found or not executable: tried {candidates} "
                       f"(set WSGATE_BIN or build the release preset)")


def binary_is_asan(path: str | None = None) -> bool:
    """True for an AddressSanitizer build (its quarantine makes RSS grow by design)."""
    return b"__asan_init" in Path(path or gateway_binary()).read_bytes()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def accept_for(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


# --------------------------------------------------------------------------------------
# The gateway process
# --------------------------------------------------------------------------------------

_started: list["Gateway"] = []
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGKILL it if the test process dies (even by SIGKILL,
    # e.g. a ctest timeout), so no gateway outlives its test.
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@atexit.register
def _kill_leftovers() -> None:
    # A test that failed before stopping its gateway must not leave it running.
    for gw in _started:
        gw.kill()


class Gateway:
    """One wsgate process on 127.0.0.1:<free port>."""

    def __init__(self, *extra_args: str, threads: int = 2, echo: bool = True,
                 handshake_timeout_ms: int | None = 500, max_message: int | None = None,
                 host: str = "127.0.0.1", drain_delay_ms: int | None = 0, drain_spread_ms: int | None = 0,
                 env: dict[str, str] | None = None):
        self.host = host
        self.env = env  # added to (or, with None values, removed from) the inherited environment
        # Tests stop gateways all the time: no drain delay and no close spreading unless a
        # test asks for them (None: the gateway's defaults, 5 s and 2 s).
        self.drain_delay_ms = drain_delay_ms
        self.drain_spread_ms = drain_spread_ms
        self.threads = threads
        self.echo = echo
        self.handshake_timeout_ms = handshake_timeout_ms
        self.max_message = max_message
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._log_data = b""

    def command(self, port: int) -> list[str]:
        cmd = [gateway_binary(), "--listen", f"{self.host}:{port}", "--threads", str(self.threads)]
        if self.echo:
            cmd.append("--echo")
        if self.max_message is not None:
            cmd += ["--max-message", str(self.max_message)]
        if self.handshake_timeout_ms is not None:
            cmd += ["--handshake-timeout-ms", str(self.handshake_timeout_ms)]
        if self.drain_delay_ms is not None:
            cmd += ["--drain-delay-ms", str(self.drain_delay_ms)]
        if self.drain_spread_ms is not None:
            cmd += ["--drain-spread-ms", str(self.drain_spread_ms)]
        return cmd + self.extra_args

    def start(self, ready_timeout: float = 10.0) -> "Gateway":
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            port = free_port(self.host)
            self._log = tempfile.TemporaryFile(prefix="wsgate-log-")
            env = None
            if self.env is not None:
                env = dict(os.environ)
                for k, v in self.env.items():
                    if v is None:
                        env.pop(k, None)
                    else:
                        env[k] = v
            self.proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL, env=env,
                                         stdout=self._log, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
            _started.append(self)
            self.port = port
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.healthy(timeout=0.5):
                    return self
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"wsgate did not answer /healthz within {ready_timeout}s; "
                                   f"cmd={self.command(port)}\n{self.log_text()}")
            last_error = f"exit {self.proc.returncode}\n{self.log_text()}"
        raise RuntimeError(f"wsgate failed to start: {last_error}")

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            r = http_exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                              host=self.host, timeout=timeout, wait_close=0)
        except OSError:
            return False
        return r.status == 200

    def kill(self) -> None:
        """Safety net: make sure the process is gone (no exit-code check)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_and_wait(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S):
        """Send `sig`; return (exit code, seconds taken). Kills it and returns None on timeout."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        took = time.monotonic() - t0
        self.log_text()
        return rc, took

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S):
        """Stop it; returns the exit code (None: it had to be killed after `timeout`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            self.log_text()
            return self.proc.returncode
        rc, _ = self.signal_and_wait(sig, timeout)
        return rc

    def log_text(self, limit: int = 4000) -> str:
        """The tail of the gateway's stdout+stderr."""
        if self._log is not None:
            self._log.seek(0)
            self._log_data = self._log.read()
            if self.proc is not None and self.proc.poll() is not None:
                self._log.close()   # exited: keep the text, release the file
                self._log = None
        return self._log_data[-limit:].decode(errors="replace")

    # /proc readings -------------------------------------------------------------------
    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def wait_fds_at_most(self, limit: int, timeout: float = 5.0) -> int:
        """Wait until the gateway holds at most `limit` fds; returns the last count."""
        deadline = time.monotonic() + timeout
        n = self.fd_count()
        while n > limit and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.fd_count()
        return n


# --------------------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------------------

@dataclass
class HttpResponse:
    status_line: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool                     # the server closed the connection after the response
    rest: bytes = b""                # bytes after the head that are not the body (frames)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_tokens(self, name: str) -> list[str]:
        out = []
        for k, v in self.headers:
            if k.lower() == name.lower():
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out


def parse_head(head: bytes) -> tuple[str, int, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP status line: {status_line!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise AssertionError(f"malformed response header line: {line!r}")
        headers.append((k.strip(), v.strip()))
    return status_line, int(parts[1]), headers


def read_response(sock: socket.socket, buf: bytes = b"", timeout: float = 5.0,
                  wait_close: float = 2.0) -> HttpResponse:
    """Read one HTTP response from `sock`. Body by Content-Length (or to EOF when absent
    and not 101). Then, unless it is a 101 or wait_close is 0, waits up to `wait_close`
    seconds for the server to close the connection and records whether it did."""
    sock.settimeout(timeout)
    eof = False
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock)
        if not chunk:
            raise AssertionError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, status, headers = parse_head(head)
    resp = HttpResponse(status_line, status, headers, b"", False)
    if status == 101:
        resp.rest = rest
        return resp
    clen = resp.header("Content-Length")
    if clen is not None:
        n = int(clen)
        while len(rest) < n:
            chunk = _recv(sock)
            if not chunk:
                raise AssertionError(f"EOF inside body: got {len(rest)} of {n} bytes")
            rest += chunk
        resp.body, resp.rest = rest[:n], rest[n:]
    else:
        sock.settimeout(wait_close or timeout)
        try:
            while True:
                chunk = _recv(sock)
                if not chunk:
                    eof = True
                    break
                rest += chunk
        except socket.timeout:
            pass
        resp.body = rest
    if eof:
        resp.closed = True
    elif wait_close:
        resp.closed = wait_eof(sock, wait_close)
    return resp


def _recv(sock: socket.socket, n: int = 65536) -> bytes:
    """recv() that maps a reset to EOF (a server may close with unread input → RST)."""
    try:
        return sock.recv(n)
    except (ConnectionResetError, ConnectionAbortedError):
        return b""


def wait_eof(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (FIN or RST) within `timeout`; data that arrives is dropped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not _recv(sock):
                return True
        except socket.timeout:
            return False


def http_exchange(port: int, request: bytes, host: str = "127.0.0.1", timeout: float = 5.0,
                  wait_close: float = 2.0) -> HttpResponse:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        return read_response(s, timeout=timeout, wait_close=wait_close)


def upgrade_request(path: str = "/echo", key: str | None = None, host: str | None = "127.0.0.1",
                    version: str | None = "13", extra: list[str] | tuple = (),
                    method: str = "GET", http: str = "HTTP/1.1",
                    upgrade: str | None = "websocket", connection: str | None = "Upgrade") -> bytes:
    """A WebSocket upgrade request. key: None → a fresh random key, False → no key header.
    host/version/upgrade/connection: None leaves that header out."""
    lines = [f"{method} {path} {http}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not False:
        lines.append(f"Sec-WebSocket-Key: {key or new_key()}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------------------
# Raw WebSocket frames
# --------------------------------------------------------------------------------------

def mask_bytes(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `key`, starting at payload position `offset`."""
    n = len(data)
    if n == 0:
        return b""
    k = (key[offset % 4:] + key[:offset % 4])
    stream = (k * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0,
                 mask_key: bytes | None = None, length_bits: int | None = None) -> bytes:
    """Header for a frame of `length` payload bytes. length_bits (7/16/64) forces an
    encoding; None picks the minimal one. mask_key None → unmasked."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask_key is not None else 0
    if length_bits is None:
        length_bits = 7 if length < 126 else 16 if length < 65536 else 64
    if length_bits == 7:
        assert length < 126
        hdr = bytes([b0, mbit | length])
    elif length_bits == 16:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", length)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", length)
    return hdr + (mask_key or b"")


def build_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                mask: bool = True, mask_key: bytes | None = None,
                length_bits: int | None = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    key = (mask_key or os.urandom(4)) if mask else None
    hdr = frame_header(opcode, len(payload), fin, rsv, key, length_bits)
    return hdr + (mask_bytes(payload, key) if mask else payload)


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self) -> str:
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return (f"Frame(fin={self.fin}, rsv={self.rsv}, op={self.opcode:#x}, "
                f"len={len(self.payload)}, payload={p!r})")


class PeerClosed(Exception):
    """The server closed the TCP connection (FIN or RST)."""


@dataclass
class CloseOutcome:
    frames: list[Frame] = field(default_factory=list)  # frames received before the close
    close: Frame | None = None                          # the close frame (None: TCP closed first)
    tcp_closed: bool = False                            # server closed TCP after the close
    elapsed: float = 0.0                                # seconds until the close frame / EOF
    timed_out: bool = False                             # neither a close frame nor EOF in time

    @property
    def code(self) -> int | None:
        return self.close.close_code if self.close else None


class RawWS:
    """A WebSocket client over a plain socket that does what it is told, valid or not."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.response: HttpResponse | None = None
        self.deflate = False  # permessage-deflate negotiated: RSV1 allowed on data frames

    @classmethod
    def open(cls, port: int, host: str = "127.0.0.1", timeout: float = 5.0,
             source: str | None = None) -> "RawWS":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
        return cls(sock, timeout)

    @classmethod
    def connect(cls, port: int, path: str = "/echo", **kw) -> "RawWS":
        ws = cls.open(port, **{k: v for k, v in kw.items() if k in ("host", "timeout", "source")})
        ws.handshake(path, extra=kw.get("extra", ()))
        return ws

    def handshake(self, path: str = "/echo", extra: tuple = (), pipelined: bytes = b"") -> HttpResponse:
        key = new_key()
        self.sock.sendall(upgrade_request(path, key=key, extra=extra) + pipelined)
        resp = read_response(self.sock, timeout=self.timeout)
        if resp.status != 101:
            raise AssertionError(f"handshake failed: {resp.status_line} {resp.body!r}")
        if resp.header("Sec-WebSocket-Accept") != accept_for(key):
            raise AssertionError(f"bad Sec-WebSocket-Accept {resp.header('Sec-WebSocket-Accept')!r}")
        self.buf += resp.rest
        self.response = resp
        self.deflate = "permessage-deflate" in (resp.header("Sec-WebSocket-Extensions") or "")
        return resp

    def close_socket(self, rst: bool = False) -> None:
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    # sending ----------------------------------------------------------------------------
    def send_raw(self, data: bytes, chop: int | None = None, delay: float = 0.0) -> bool:
        """Send bytes, optionally in chops of `chop` bytes with `delay` between them.
        Returns False (instead of raising) if the server has closed the connection."""
        try:
            if not chop:
                self.sock.sendall(data)
            else:
                for i in range(0, len(data), chop):
                    self.sock.sendall(data[i:i + chop])
                    if delay:
                        time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False
        return True

    def send_frame(self, opcode: int, payload: bytes | str = b"", fin: bool = True, rsv: int = 0,
                   mask: bool = True, length_bits: int | None = None,
                   chop: int | None = None, delay: float = 0.0) -> bool:
        return self.send_raw(build_frame(opcode, payload, fin, rsv, mask, None, length_bits),
                             chop, delay)

    def send_text(self, payload: bytes | str, **kw) -> bool:
        return self.send_frame(OP_TEXT, payload, **kw)

    def send_binary(self, payload: bytes, **kw) -> bool:
        return self.send_frame(OP_BINARY, payload, **kw)

    def send_ping(self, payload: bytes = b"", **kw) -> bool:
        return self.send_frame(OP_PING, payload, **kw)

    def send_pong(self, payload: bytes = b"", **kw) -> bool:
        return self.send_frame(OP_PONG, payload, **kw)

    def send_close(self, code: int | None = None, reason: bytes | str = b"", **kw) -> bool:
        return self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    # receiving --------------------------------------------------------------------------
    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"timed out waiting for {n} bytes (have {len(self.buf)})")
            self.sock.settimeout(left)
            chunk = _recv(self.sock, max(65536, n - len(self.buf)))
            if not chunk:
                raise PeerClosed(f"server closed TCP (buffered {len(self.buf)} bytes)")
            self.buf += chunk

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """Next frame from the server. Raises PeerClosed on EOF, socket.timeout on timeout.
        Asserts what RFC 6455 requires of server frames: unmasked, RSV 0 (no extension)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        masked = bool(b1 & 0x80)
        if masked:
            pos += 4
        self._fill(pos + n, deadline)
        payload = bytes(self.buf[pos:pos + n])
        if masked:
            payload = mask_bytes(payload, bytes(self.buf[pos - 4:pos]))
        del self.buf[:pos + n]
        frame = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)
        if masked:
            raise AssertionError(f"server sent a masked frame: {frame}")
        allowed = 4 if self.deflate and frame.opcode in (0x1, 0x2) else 0  # RSV1: permessage-deflate
        if frame.rsv & ~allowed:
            raise AssertionError(f"server sent a frame with RSV bits: {frame}")
        return frame

    def recv_message(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Next data message, reassembled; asserts no control frame is interleaved."""
        f = self.recv_frame(timeout)
        if f.opcode not in (OP_TEXT, OP_BINARY):
            raise AssertionError(f"expected a data frame, got {f}")
        op, data = f.opcode, bytearray(f.payload)
        while not f.fin:
            f = self.recv_frame(timeout)
            if f.opcode != OP_CONT:
                raise AssertionError(f"expected a continuation frame, got {f}")
            data += f.payload
        return op, bytes(data)

    def poll_frame(self, timeout: float) -> Frame | None:
        """A frame if one arrives within `timeout`, else None (EOF raises PeerClosed)."""
        try:
            return self.recv_frame(timeout)
        except socket.timeout:
            return None

    def wait_tcp_close(self, timeout: float = 2.0) -> bool:
        """True if the server closes TCP within `timeout` (frames still buffered are dropped)."""
        self.buf.clear()
        return wait_eof(self.sock, timeout)

    def read_until_close(self, timeout: float | None = None, reply: bool = True,
                         tcp_timeout: float = 2.0) -> CloseOutcome:
        """Collect frames until a close frame (or EOF), then (optionally) answer the close
        and check that the server closes TCP."""
        out = CloseOutcome()
        t0 = time.monotonic()
        deadline = t0 + (self.timeout if timeout is None else timeout)
        try:
            while True:
                f = self.recv_frame(max(0.0, deadline - time.monotonic()))
                if f.opcode == OP_CLOSE:
                    out.close = f
                    break
                out.frames.append(f)
        except PeerClosed:
            out.elapsed = time.monotonic() - t0
            out.tcp_closed = True
            return out
        except socket.timeout:
            out.elapsed = time.monotonic() - t0
            out.timed_out = True
            return out
        out.elapsed = time.monotonic() - t0
        if reply:
            self.send_frame(OP_CLOSE, out.close.payload[:2])
        out.tcp_closed = self.wait_tcp_close(tcp_timeout)
        return out


# --------------------------------------------------------------------------------------
# unittest base
# --------------------------------------------------------------------------------------

class GatewayTestCase(unittest.TestCase):
    """One gateway per test class. Subclasses set GATEWAY_KW (Gateway keyword arguments).
    After every test the gateway must still be running; if it died, that test fails and a
    fresh gateway is started for the rest of the class."""

    GATEWAY_KW: dict = {}
    gw: Gateway

    @classmethod
    def setUpClass(cls) -> None:
        cls.gw = Gateway(**cls.GATEWAY_KW).start()

    @classmethod
    def tearDownClass(cls) -> None:
        gw = cls.gw
        if not gw.alive():
            raise AssertionError(f"gateway died (exit {gw.proc.returncode})\n{gw.log_text()}")
        rc = gw.stop()
        if rc != 0:
            raise AssertionError(f"gateway exit code after SIGTERM: {rc} (expected 0 within "
                                 f"{STOP_TIMEOUT_S}s)\n{gw.log_text()}")

    def tearDown(self) -> None:
        if not self.gw.alive():
            rc, log = self.gw.proc.returncode, self.gw.log_text()
            type(self).gw = Gateway(**self.GATEWAY_KW).start()
            self.fail(f"gateway died during {self.id()} (exit {rc})\n{log}")

    @property
    def port(self) -> int:
        return self.gw.port

    def ws(self, path: str = "/echo", timeout: float = 5.0) -> RawWS:
        """A handshaken RawWS, closed at test cleanup."""
        c = RawWS.connect(self.port, path, timeout=timeout)
        self.addCleanup(c.sock.close)
        return c

    def assertEcho(self, c: RawWS, opcode: int, payload: bytes, timeout: float = 5.0) -> None:
        op, data = c.recv_message(timeout)
        self.assertEqual(op, opcode, "echo opcode")
        if data != payload:
            self.fail(f"echo payload differs: sent {len(payload)} bytes {payload[:60]!r}, "
                      f"got {len(data)} bytes {data[:60]!r}")

    def assertFailed(self, c: RawWS, code: int, before: list | tuple = (),
                     timeout: float = 5.0) -> CloseOutcome:
        """The server fails the connection: exactly the frames `before` (list of (opcode,
        payload)) arrive, then a close with `code`, then the server closes TCP."""
        out = c.read_until_close(timeout)
        got = [(f.opcode, f.payload) for f in out.frames]
        self.assertEqual(got, list(before), "frames received before the close")
        self.assertFalse(out.timed_out, f"no close frame and no TCP close within {timeout}s "
                                        f"(expected close {code})")
        self.assertIsNotNone(out.close, "server closed TCP without sending a close frame")
        self.assertEqual(out.code, code, f"close code (close payload {out.close.payload!r})")
        self.assertTrue(out.tcp_closed, "server did not close the TCP connection after the close")
        return out

    def assertCleanClose(self, c: RawWS, code: int | None, reason: bytes = b"",
                         before: list | tuple = ()) -> CloseOutcome:
        """We send a close (code/reason); the server echoes the code and closes TCP."""
        self.assertTrue(c.send_close(code, reason))
        out = c.read_until_close(reply=False)
        got = [(f.opcode, f.payload) for f in out.frames]
        self.assertEqual(got, list(before), "frames received before the close")
        self.assertFalse(out.timed_out, "our close was not answered (no close frame, no TCP close)")
        self.assertIsNotNone(out.close, "server closed TCP without answering the close")
        if code is None:
            self.assertEqual(out.close.payload, b"", "empty close must be answered by an empty close")
        else:
            self.assertEqual(out.code, code, "echoed close code")
        self.assertTrue(out.tcp_closed, "server did not close the TCP connection after the close")
        return out

