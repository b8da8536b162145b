"""A small synchronous client for the wsgate client protocol v1 (docs/protocol.md), for the
integration tests. Standard library only; runs on Debian's /usr/bin/python3. The binary
layout and JWT code are written from docs/protocol.md, independently of the C++ code.

API (kept stable; test_auth.py / test_limits.py / test_messaging.py import it):

Connecting
    Client.connect(port, user=None, fmt="json", batch=False, token=None, headers=(),
                   path="/ws", query=None, host="127.0.0.1", timeout=10.0) -> Client
        Opens a socket and does the WebSocket upgrade on `path` with the query string built
        from user= (percent-encoded), format= (omitted for fmt "json" or None, else fmt),
        batch=1 (batch True; a string is sent as is), token= (percent-encoded), then the
        extra `query` items (a dict or list of (name, value); values sent percent-encoded).
        `headers`: extra request header lines, "Name: value" strings or (name, value) pairs.
        A refused upgrade raises HandshakeRefused (.status, .response: fixture HttpResponse).
    upgrade_status(port, ...same arguments...) -> HttpResponse
        Does the upgrade and returns the HTTP response whatever its status (the socket is
        closed afterwards): for tests of 400/401/403/503 refusals.
    build_path(path="/ws", user=None, fmt="json", batch=False, token=None, query=None) -> str

Client (attributes: .ws the fixture RawWS, .sock, .user, .fmt, .batch, .response)
    send_json(obj_or_raw_text)         obj → json.dumps (compact); str/bytes sent verbatim as
                                       one text frame. Returns False if the peer had closed.
    send_binary(payload: bytes)        one binary frame.
    request(op, id=None, timeout=10, **fields) -> dict
        Sends {"op": op, "id": id, **fields} as JSON (id left out when None; a field whose
        value is a RawJSON is inserted verbatim) and returns the reply with that id (ack,
        error, pong, presence, online). With id=None it waits for the next reply without an
        id. Pushes and other replies arriving meanwhile stay buffered, in order.
    request_bin(op, id=None, timeout=10, **fields) -> dict
        The same in binary (op a name or code; id an int packed <I, or 4 raw bytes);
        returns the decoded binary reply (see decode_binary).
    next_reply(timeout=10, id=ANY) -> dict      next buffered/arriving reply (id=ANY: any id;
                                                id=None: a reply without id)
    next_push(timeout=10) -> dict               next push (message/direct/broadcast), pushes of
                                                a batch frame returned one by one
    next_push_item(timeout=10) -> Incoming      the same with the frame details (raw text,
                                                raw data slice, batch size)
    recv_message(timeout=10) -> Incoming        the next unconsumed *frame*, whatever it is
                                                (batch frames not flattened)
    recv_json(timeout=10) -> dict | list        recv_message() that must be a text frame, parsed
    drain(timeout=0.3) -> list[Incoming]        every frame still buffered or arriving within
                                                `timeout` (consumes them); [] = silence
    close(code=1000)                            polite close (send close, wait briefly, close socket)
    Timeouts raise socket.timeout; the server closing raises fixture.PeerClosed.

Incoming (one received frame, or one push out of a batch frame)
    .opcode (OP_TEXT/OP_BINARY), .payload (bytes of this message; for a batch element the
    bytes of that push alone), .obj (parsed JSON dict/list, or decode_binary() dict),
    .batch (number of pushes in the frame it came in; 0 for a frame that is not a batch),
    .type, .is_push, .is_reply, .is_batch, .items (Incoming per push of a batch frame),
    .raw_data (JSON: the raw text of the top-level "data" value exactly as on the wire, str;
    binary: the data bytes; None when absent).

JSON helpers
    RawJSON(text)                        a value inserted verbatim by encode_request/request
    encode_request(op, id=None, **fields) -> str
    raw_member(text, key) -> str | None  raw text of a top-level member's value
    raw_members(text) -> dict[str, str]  raw text of each top-level member's value
    raw_elements(text) -> list[str]      raw text of each element of a top-level array
    json_raw_scan(text)                  raises ValueError on text the scanner cannot parse

Binary (docs/protocol.md "Binary encoding"; every integer little-endian)
    OPS {"join":1..."ping":8}, TYPES {"message":1, ..., "online":8, "batch":12},
    ERROR_CODES {"bad_request":1, ..., "internal":7}, ERROR_NAMES (inverse)
    bin_header(code, id=None) -> bytes
    encode_binary(op, id=None, room=None, user=None, data=None, users=None) -> bytes
        any op by name or number; data str is UTF-8 encoded
    bin_join(room, id=None), bin_leave, bin_presence, bin_publish(room, data, id=None),
    bin_send(user, data, id=None), bin_broadcast(data, id=None), bin_online(users, id=None),
    bin_ping(id=None)
    encode_push_bin(type, room=None, from_=None, data=b"", id=None, code=None, message="",
                    users=None) -> bytes   gateway → client encoder (for decoder self-checks)
    encode_batch_bin(pushes: list[bytes]) -> bytes
    decode_binary(payload) -> dict
        {"type": name, "type_code": n, "flags": f, "id": 4 bytes or None, ...fields}:
        message: room, from, data(bytes); direct: from, data; broadcast: data; ack/pong: -;
        error: code (name), code_value, message; presence: room, users; online: users;
        batch (12): pushes (list of decoded dicts), raw_pushes (list of bytes).
        Raises ValueError on a malformed frame (truncated, trailing bytes, bad version).
    pack_id(id) -> bytes                  int → <I, bytes(4) as is

JWT
    b64url(data) -> str                  unpadded base64url
    make_token(secret, claims, header=None, alg="HS256") -> str
        header default {"alg": alg, "typ": "JWT"}; HS256/HS384/HS512 signed with hmac, "none"
        (any case) with an empty signature, any other alg signed with HS256 (so a test can
        send a well-signed token that claims an unsupported alg). claims/header may be dicts
        (compact json.dumps) or str/bytes (used verbatim, e.g. malformed JSON).

unittest base
    ProtoTestCase(GatewayTestCase)       one gateway per class like GatewayTestCase, started as
                                         Gateway(*GATEWAY_ARGS, **GATEWAY_KW) (GATEWAY_ARGS: extra
                                         command-line flags, e.g. ("--jwt-secret", "s")); default
                                         GATEWAY_KW = dict(threads=2, echo=False)
      .client(user=None, fmt="json", batch=False, token=None, headers=(), ...) -> Client
                                         Client.connect on this gateway, closed at cleanup
      .start_own_gateway(*args, threads=2, **kw) -> Gateway   an extra gateway for one test,
                                         killed at cleanup (for tests that read exit counters)

Gateway exit counters
    parse_worker_stats(log_text) -> list[dict[str, int]]   one dict per "event=worker_stats worker=N" line
    sum_stats(rows) -> dict[str, int]
    stop_with_stats(testcase, gw) -> list[dict]            SIGTERM, assert exit 0 and one line
                                                            per worker, return the rows
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import struct
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from wsgate_fixture import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Gateway,
                            GatewayTestCase, HttpResponse, PeerClosed, RawWS, accept_for,
                            new_key, read_response, upgrade_request)

__all__ = [
    "ANY", "Client", "HandshakeRefused", "Incoming", "RawJSON", "OPS", "TYPES", "ERROR_CODES",
    "ERROR_NAMES", "PUSH_TYPES", "REPLY_TYPES", "PeerClosed", "OP_TEXT", "OP_BINARY",
    "build_path", "upgrade_status", "encode_request", "raw_member", "raw_members",
    "raw_elements", "json_raw_scan", "bin_header", "encode_binary", "bin_join", "bin_leave",
    "bin_presence", "bin_publish", "bin_send", "bin_broadcast", "bin_online", "bin_ping",
    "encode_push_bin", "encode_batch_bin", "decode_binary", "pack_id", "b64url", "make_token",
    "parse_worker_stats", "sum_stats", "stop_with_stats", "ProtoTestCase",
]

OPS = {"join": 1, "leave": 2, "publish": 3, "send": 4, "broadcast": 5, "presence": 6,
       "online": 7, "ping": 8}
OP_NAMES = {v: k for k, v in OPS.items()}
TYPES = {"message": 1, "direct": 2, "broadcast": 3, "ack": 4, "error": 5, "pong": 6,
         "presence": 7, "online": 8, "server_shutdown": 9, "batch": 12}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
ERROR_CODES = {"bad_request": 1, "unknown_op": 2, "forbidden": 3, "not_member": 4, "limit": 5,
               "unavailable": 6, "internal": 7}
ERROR_NAMES = {v: k for k, v in ERROR_CODES.items()}
PUSH_TYPES = frozenset({"message", "direct", "broadcast", "server_shutdown"})
REPLY_TYPES = frozenset({"ack", "error", "pong", "presence", "online"})
BIN_VERSION = 1


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()   # next_reply(id=ANY): a reply with any id (or none)


class HandshakeRefused(AssertionError):
    def __init__(self, response: HttpResponse):
        super().__init__(f"upgrade refused: {response.status_line} {response.body[:200]!r}")
        self.response = response
        self.status = response.status


# --------------------------------------------------------------------------------------
# JSON: requests and a raw scanner (to see values exactly as they were on the wire)
# --------------------------------------------------------------------------------------

class RawJSON(str):
    """A JSON value inserted verbatim by encode_request() (e.g. data with odd whitespace)."""


def _dump(v: Any) -> str:
    if isinstance(v, RawJSON):
        return str(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def encode_request(op: Any, id: Any = None, **fields: Any) -> str:
    """{"op":op[,"id":id],fields...} with RawJSON values inserted verbatim."""
    parts = [f'"op":{_dump(op)}']
    if id is not None:
        parts.append(f'"id":{_dump(id)}')
    for k, v in fields.items():
        parts.append(f"{_dump(k)}:{_dump(v)}")
    return "{" + ",".join(parts) + "}"


_WS = " \t\r\n"


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_STRUCT_RE = re.compile(r'[\[\]{}"]')


def _skip_string(s: str, i: int) -> int:
    m = _STRING_RE.match(s, i)
    if not m:
        raise ValueError(f"unterminated string at {i}")
    return m.end()


def _skip_value(s: str, i: int) -> int:
    """Index just past the JSON value starting at s[i] (no leading whitespace)."""
    if i >= len(s):
        raise ValueError("value expected at end of text")
    c = s[i]
    if c == '"':
        return _skip_string(s, i)
    if c in "{[":
        depth = 0
        while True:
            m = _STRUCT_RE.search(s, i)
            if not m:
                raise ValueError("unterminated container")
            i = m.start()
            c = s[i]
            if c == '"':
                i = _skip_string(s, i)
                continue
            depth += 1 if c in "{[" else -1
            i += 1
            if depth == 0:
                return i
    j = i
    while j < len(s) and s[j] not in _WS + ",]}":
        j += 1
    if j == i:
        raise ValueError(f"unexpected {c!r} at {i}")
    return j


def raw_members(text: str) -> dict[str, str]:
    """Raw text of every top-level member's value of a JSON object (last one wins)."""
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "{":
        raise ValueError("not a JSON object")
    out: dict[str, str] = {}
    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == "}":
        return out
    while True:
        if i >= len(text) or text[i] != '"':
            raise ValueError(f"member name expected at {i}")
        j = _skip_string(text, i)
        key = text[i + 1:j - 1]
        if "\\" in key:
            key = json.loads(text[i:j])
        i = _skip_ws(text, j)
        if i >= len(text) or text[i] != ":":
            raise ValueError(f"':' expected at {i}")
        i = _skip_ws(text, i + 1)
        j = _skip_value(text, i)
        out[key] = text[i:j]
        i = _skip_ws(text, j)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "}":
            return out
        raise ValueError(f"',' or '}}' expected at {i}")


def raw_member(text: str, key: str) -> str | None:
    return raw_members(text).get(key)


def raw_elements(text: str) -> list[str]:
    """Raw text of every element of a top-level JSON array."""
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "[":
        raise ValueError("not a JSON array")
    out: list[str] = []
    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == "]":
        return out
    while True:
        j = _skip_value(text, i)
        out.append(text[i:j])
        i = _skip_ws(text, j)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return out
        raise ValueError(f"',' or ']' expected at {i}")


def json_raw_scan(text: str) -> None:
    """Raises ValueError if the scanner cannot walk `text` as one JSON value."""
    i = _skip_ws(text, 0)
    j = _skip_value(text, i)
    if _skip_ws(text, j) != len(text):
        raise ValueError("trailing text")


# --------------------------------------------------------------------------------------
# Binary encoding
# --------------------------------------------------------------------------------------

def pack_id(id: Any) -> bytes:
    if isinstance(id, (bytes, bytearray)):
        if len(id) != 4:
            raise ValueError("a binary id is exactly 4 bytes")
        return bytes(id)
    return struct.pack("<I", id & 0xFFFFFFFF)


def _b(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def bin_header(code: int, id: Any = None, flags: int | None = None) -> bytes:
    f = (1 if id is not None else 0) if flags is None else flags
    return bytes([BIN_VERSION, code, f]) + (pack_id(id) if id is not None else b"")


def _bstr(v: Any) -> bytes:
    b = _b(v)[:65535]
    return struct.pack("<H", len(b)) + b


def _bdata(v: Any) -> bytes:
    b = _b(v)
    return struct.pack("<I", len(b)) + b


def _busers(users: Iterable[Any]) -> bytes:
    users = list(users)
    return struct.pack("<I", len(users)) + b"".join(_bstr(u) for u in users)


def encode_binary(op: Any, id: Any = None, room: Any = None, user: Any = None, data: Any = None,
                  users: Iterable[Any] | None = None) -> bytes:
    """A binary request; op by name or code (unknown codes: header plus given fields)."""
    code = OPS[op] if isinstance(op, str) else op
    out = bin_header(code, id)
    if code in (1, 2, 6):
        return out + _bstr(room)
    if code == 3:
        return out + _bstr(room) + _bdata(data)
    if code == 4:
        return out + _bstr(user) + _bdata(data)
    if code == 5:
        return out + _bdata(data)
    if code == 7:
        return out + _busers(users or [])
    if code == 8:
        return out
    # unknown op: whatever fields were given, in a plausible order
    if room is not None:
        out += _bstr(room)
    if user is not None:
        out += _bstr(user)
    if users is not None:
        out += _busers(users)
    if data is not None:
        out += _bdata(data)
    return out


def bin_join(room, id=None):
    return encode_binary("join", id, room=room)


def bin_leave(room, id=None):
    return encode_binary("leave", id, room=room)


def bin_presence(room, id=None):
    return encode_binary("presence", id, room=room)


def bin_publish(room, data, id=None):
    return encode_binary("publish", id, room=room, data=data)


def bin_send(user, data, id=None):
    return encode_binary("send", id, user=user, data=data)


def bin_broadcast(data, id=None):
    return encode_binary("broadcast", id, data=data)


def bin_online(users, id=None):
    return encode_binary("online", id, users=users)


def bin_ping(id=None):
    return encode_binary("ping", id)


def encode_push_bin(type: Any, room: Any = None, from_: Any = None, data: Any = b"",
                    id: Any = None, code: Any = None, message: Any = "",
                    users: Iterable[Any] | None = None) -> bytes:
    """A gateway → client binary message (for checking the decoder against the docs)."""
    t = TYPES[type] if isinstance(type, str) else type
    out = bin_header(t, id)
    if t == 1:
        return out + _bstr(room) + _bstr(from_) + _bdata(data)
    if t == 2:
        return out + _bstr(from_) + _bdata(data)
    if t == 3:
        return out + _bdata(data)
    if t in (4, 6):
        return out
    if t == 5:
        c = ERROR_CODES[code] if isinstance(code, str) else code
        return out + bytes([c]) + _bstr(message)
    if t == 7:
        return out + _bstr(room) + _busers(users or [])
    if t == 8:
        return out + _busers(users or [])
    raise ValueError(f"no encoder for type {t}")


def encode_batch_bin(pushes: Iterable[bytes]) -> bytes:
    return bytes([BIN_VERSION, 12, 0]) + b"".join(struct.pack("<I", len(p)) + p for p in pushes)


class _Reader:
    def __init__(self, b: bytes, pos: int):
        self.b, self.pos = b, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.b):
            raise ValueError(f"truncated {what} (need {n} bytes at {self.pos}, frame {len(self.b)})")
        v = self.b[self.pos:self.pos + n]
        self.pos += n
        return v

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what) -> str:
        return self.take(self.u16(what + " length"), what).decode("utf-8")

    def data(self) -> bytes:
        return self.take(self.u32("data length"), "data")

    def users(self) -> list[str]:
        n = self.u32("users count")
        return [self.string("users entry") for _ in range(n)]

    def end(self) -> None:
        if self.pos != len(self.b):
            raise ValueError(f"{len(self.b) - self.pos} trailing bytes at {self.pos}")


def decode_binary(payload: bytes) -> dict:
    """Decode a gateway → client binary message (docs/protocol.md); strict: ValueError on
    any layout violation."""
    payload = bytes(payload)
    r = _Reader(payload, 0)
    version, t, flags = r.u8("version"), r.u8("type"), r.u8("flags")
    if version != BIN_VERSION:
        raise ValueError(f"version {version}")
    if flags & ~1:
        raise ValueError(f"reserved flag bits set: {flags:#x}")
    out: dict = {"type": TYPE_NAMES.get(t, t), "type_code": t, "flags": flags,
                 "id": r.take(4, "id") if flags & 1 else None}
    if t == 1:
        out["room"] = r.string("room")
        out["from"] = r.string("from")
        out["data"] = r.data()
    elif t == 2:
        out["from"] = r.string("from")
        out["data"] = r.data()
    elif t == 3:
        out["data"] = r.data()
    elif t in (4, 6):
        pass
    elif t == 5:
        c = r.u8("code")
        out["code_value"] = c
        out["code"] = ERROR_NAMES.get(c, c)
        out["message"] = r.string("message")
    elif t == 7:
        out["room"] = r.string("room")
        out["users"] = r.users()
    elif t == 8:
        out["users"] = r.users()
    elif t == 12:
        if flags:
            raise ValueError("batch frame with flags")
        raws = []
        while r.pos < len(payload):
            raws.append(r.take(r.u32("batch entry length"), "batch entry"))
        out["raw_pushes"] = raws
        out["pushes"] = [decode_binary(p) for p in raws]
    else:
        raise ValueError(f"unknown type {t}")
    r.end()
    if t in (1, 2, 3, 12) and out["id"] is not None:
        raise ValueError("a push carries an id")
    return out


# --------------------------------------------------------------------------------------
# Received messages
# --------------------------------------------------------------------------------------

@dataclass
class Incoming:
    opcode: int
    payload: bytes
    obj: Any
    batch: int = 0                     # pushes in the frame this came in (0: not a batch)
    items: list["Incoming"] = field(default_factory=list)   # for a batch frame: its pushes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def is_batch(self) -> bool:
        if self.opcode == OP_TEXT:
            return isinstance(self.obj, list)
        return isinstance(self.obj, dict) and self.obj.get("type") == "batch"

    @property
    def type(self) -> str | None:
        if self.is_batch:
            return "batch"
        return self.obj.get("type") if isinstance(self.obj, dict) else None

    @property
    def is_push(self) -> bool:
        return self.is_batch or self.type in PUSH_TYPES

    @property
    def is_reply(self) -> bool:
        return self.type in REPLY_TYPES

    @property
    def raw_data(self) -> str | bytes | None:
        if self.opcode == OP_BINARY:
            return self.obj.get("data") if isinstance(self.obj, dict) else None
        return raw_member(self.text, "data")

    def __repr__(self) -> str:
        p = self.payload if len(self.payload) <= 120 else self.payload[:120] + b"..."
        kind = "text" if self.opcode == OP_TEXT else "binary"
        return f"Incoming({kind}, batch={self.batch}, {p!r})"


def _parse(opcode: int, payload: bytes) -> Incoming:
    if opcode == OP_TEXT:
        text = payload.decode("utf-8")
        obj = json.loads(text)
        inc = Incoming(opcode, payload, obj)
        if isinstance(obj, list):
            raws = raw_elements(text)
            if len(raws) != len(obj):
                raise ValueError(f"raw scanner found {len(raws)} elements, json {len(obj)}")
            inc.batch = len(obj)
            inc.items = [Incoming(OP_TEXT, r.encode(), o, batch=len(obj))
                         for r, o in zip(raws, obj)]
        return inc
    obj = decode_binary(payload)
    inc = Incoming(opcode, payload, obj)
    if obj["type"] == "batch":
        n = len(obj["pushes"])
        inc.batch = n
        inc.items = [Incoming(OP_BINARY, r, o, batch=n)
                     for r, o in zip(obj["raw_pushes"], obj["pushes"])]
    return inc


# --------------------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------------------

def _q(v: Any) -> str:
    return urllib.parse.quote(_b(v), safe="")


def build_path(path: str = "/ws", user: Any = None, fmt: str | None = "json",
               batch: Any = False, token: str | None = None, query: Any = None) -> str:
    params: list[tuple[str, Any]] = []
    if user is not None:
        params.append(("user", user))
    if fmt is not None and fmt != "json":
        params.append(("format", fmt))
    if batch:
        params.append(("batch", "1" if batch is True else batch))
    if token is not None:
        params.append(("token", token))
    if query:
        params += list(query.items()) if isinstance(query, dict) else list(query)
    if not params:
        return path
    return path + ("&" if "?" in path else "?") + "&".join(f"{_q(k)}={_q(v)}" for k, v in params)


def _header_lines(headers: Iterable[Any]) -> list[str]:
    out = []
    for h in headers:
        out.append(h if isinstance(h, str) else f"{h[0]}: {h[1]}")
    return out


def upgrade_status(port: int, user: Any = None, fmt: str | None = "json", batch: Any = False,
                   token: str | None = None, headers: Iterable[Any] = (), path: str = "/ws",
                   query: Any = None, host: str = "127.0.0.1",
                   timeout: float = 10.0) -> HttpResponse:
    """The HTTP response to an upgrade request, whatever its status; socket closed after."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(upgrade_request(build_path(path, user, fmt, batch, token, query),
                                  extra=_header_lines(headers)))
        return read_response(s, timeout=timeout, wait_close=1.0)


class Client:
    """One /ws connection speaking protocol v1, synchronously."""

    def __init__(self, ws: RawWS, user: Any = None, fmt: str | None = "json", batch: Any = False):
        self.ws = ws
        self.sock = ws.sock
        self.user = user
        self.fmt = fmt
        self.batch = batch
        self.response: HttpResponse | None = ws.response
        self._frames: deque[Incoming] = deque()   # received, not consumed
        self._pushes: deque[Incoming] = deque()   # pushes of a batch frame being consumed

    @classmethod
    def connect(cls, port: int, user: Any = None, fmt: str | None = "json", batch: Any = False,
                token: str | None = None, headers: Iterable[Any] = (), path: str = "/ws",
                query: Any = None, host: str = "127.0.0.1", timeout: float = 10.0) -> "Client":
        ws = RawWS.open(port, host=host, timeout=timeout)
        try:
            key = new_key()
            ws.sock.sendall(upgrade_request(build_path(path, user, fmt, batch, token, query),
                                            key=key, extra=_header_lines(headers)))
            resp = read_response(ws.sock, timeout=timeout, wait_close=0.2)
            if resp.status != 101:
                raise HandshakeRefused(resp)
            if resp.header("Sec-WebSocket-Accept") != accept_for(key):
                raise AssertionError(f"bad Sec-WebSocket-Accept "
                                     f"{resp.header('Sec-WebSocket-Accept')!r}")
            ws.buf += resp.rest
            ws.response = resp
        except BaseException:
            ws.sock.close()
            raise
        return cls(ws, user, fmt, batch)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def close(self, code: int = 1000, wait: float = 1.0) -> None:
        try:
            self.ws.send_close(code)
            self.ws.read_until_close(timeout=wait, reply=False, tcp_timeout=wait)
        except OSError:
            pass
        finally:
            self.sock.close()

    # sending ----------------------------------------------------------------------------
    def send_json(self, obj: Any) -> bool:
        if isinstance(obj, (str, bytes, bytearray)):
            return self.ws.send_text(bytes(obj) if not isinstance(obj, str) else obj)
        return self.ws.send_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def send_binary(self, payload: bytes) -> bool:
        return self.ws.send_binary(bytes(payload))

    def send_request(self, op: Any, id: Any = None, **fields: Any) -> bool:
        return self.ws.send_text(encode_request(op, id, **fields))

    def request(self, op: Any, id: Any = None, timeout: float = 10.0, **fields: Any) -> dict:
        if not self.send_request(op, id, **fields):
            raise PeerClosed(f"connection closed before {op!r} could be sent")
        return self.next_reply(timeout, id=id)

    def request_bin(self, op: Any, id: Any = None, timeout: float = 10.0, **fields: Any) -> dict:
        if not self.send_binary(encode_binary(op, id, **fields)):
            raise PeerClosed(f"connection closed before binary {op!r} could be sent")
        return self.next_reply(timeout, id=pack_id(id) if id is not None else None)

    # receiving --------------------------------------------------------------------------
    def _read_frame(self, deadline: float) -> Incoming:
        """Next data message from the socket (control frames answered/skipped)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for a message")
            f = self.ws.recv_frame(left)
            if f.opcode == OP_PING:
                self.ws.send_pong(f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise PeerClosed(f"server sent close {f.payload[:2].hex()} {f.payload[2:]!r}")
            opcode, data = f.opcode, bytearray(f.payload)
            while not f.fin:
                f = self.ws.recv_frame(max(0.001, deadline - time.monotonic()))
                if f.opcode != 0:
                    raise AssertionError(f"expected a continuation frame, got {f}")
                data += f.payload
            return _parse(opcode, bytes(data))

    def recv_message(self, timeout: float = 10.0) -> Incoming:
        """The next unconsumed frame (a batch frame whole)."""
        if self._pushes:
            raise AssertionError("recv_message() while a batch frame is half consumed by "
                                 "next_push()")
        if self._frames:
            return self._frames.popleft()
        return self._read_frame(time.monotonic() + timeout)

    def recv_json(self, timeout: float = 10.0) -> Any:
        m = self.recv_message(timeout)
        if m.opcode != OP_TEXT:
            raise AssertionError(f"expected a text frame, got {m}")
        return m.obj

    def next_reply(self, timeout: float = 10.0, id: Any = ANY) -> dict:
        def match(m: Incoming) -> bool:
            if not m.is_reply:
                return False
            if id is ANY:
                return True
            got = m.obj.get("id")
            return got == id and type(got) is type(id) if id is not None else got is None

        for m in self._frames:
            if match(m):
                self._frames.remove(m)
                return m.obj
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self._read_frame(deadline)
            except socket.timeout:
                raise socket.timeout(f"no reply with id {id!r} within {timeout}s; buffered: "
                                     f"{list(self._frames)[:5]}") from None
            if match(m):
                return m.obj
            self._frames.append(m)

    def next_push_item(self, timeout: float = 10.0) -> Incoming:
        if self._pushes:
            return self._pushes.popleft()
        for m in self._frames:
            if m.is_push:
                self._frames.remove(m)
                break
        else:
            deadline = time.monotonic() + timeout
            while True:
                m = self._read_frame(deadline)
                if m.is_push:
                    break
                self._frames.append(m)
        if m.is_batch:
            if not m.items:
                raise AssertionError(f"empty batch frame {m}")
            self._pushes.extend(m.items)
            return self._pushes.popleft()
        return m

    def next_push(self, timeout: float = 10.0) -> dict:
        return self.next_push_item(timeout).obj

    def drain(self, timeout: float = 0.3) -> list[Incoming]:
        """Everything buffered plus whatever arrives within `timeout` (consumed)."""
        out = list(self._pushes) + list(self._frames)
        self._pushes.clear()
        self._frames.clear()
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self._read_frame(deadline))
            except socket.timeout:
                return out


# --------------------------------------------------------------------------------------
# JWT
# --------------------------------------------------------------------------------------

def b64url(data: bytes | str) -> str:
    return base64.urlsafe_b64encode(_b(data)).rstrip(b"=").decode()


_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def make_token(secret: str | bytes, claims: Any, header: Any = None, alg: str = "HS256") -> str:
    if header is None:
        header = {"alg": alg, "typ": "JWT"}

    def part(v: Any) -> str:
        if isinstance(v, (str, bytes, bytearray)):
            return b64url(v)
        return b64url(json.dumps(v, separators=(",", ":")))

    signing_input = part(header) + "." + part(claims)
    if alg.lower() == "none":
        return signing_input + "."
    digest = _HASHES.get(alg, hashlib.sha256)
    sig = hmac.new(_b(secret), signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


# --------------------------------------------------------------------------------------
# Gateway exit counters
# --------------------------------------------------------------------------------------

STATS_RE = re.compile(r"event=worker_stats worker=(\d+) (.*)$", re.M)


def parse_worker_stats(log_text: str) -> list[dict[str, int]]:
    rows = []
    for idx, fields in STATS_RE.findall(log_text):
        row: dict[str, int] = {"worker": int(idx)}
        ok = False
        for kv in fields.split():
            k, sep, v = kv.partition("=")
            if sep and v.lstrip("-").isdigit():
                row[k] = int(v)
                ok = True
        if ok:
            rows.append(row)
    return rows


def sum_stats(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            if k != "worker":
                total[k] = total.get(k, 0) + v
    return total


def stop_with_stats(testcase, gw) -> list[dict[str, int]]:
    """SIGTERM `gw`; assert exit 0 and one counter line per worker; return the rows."""
    testcase.assertTrue(gw.alive(), f"gateway died (exit {gw.proc.returncode})\n{gw.log_text()}")
    rc, took = gw.signal_and_wait()
    log = gw.log_text(limit=1 << 20)
    testcase.assertEqual(rc, 0, f"exit code after SIGTERM (took {took:.1f}s)\n{log[-4000:]}")
    rows = parse_worker_stats(log)
    testcase.assertEqual(len(rows), gw.threads,
                         f"one counter line per worker expected\n{log[-4000:]}")
    return rows


# --------------------------------------------------------------------------------------
# unittest base
# --------------------------------------------------------------------------------------

class ProtoTestCase(GatewayTestCase):
    """GatewayTestCase whose gateway also gets the command-line flags GATEWAY_ARGS."""

    GATEWAY_ARGS: tuple = ()
    GATEWAY_KW: dict = dict(threads=2, echo=False)

    @classmethod
    def setUpClass(cls) -> None:
        cls.gw = Gateway(*cls.GATEWAY_ARGS, **cls.GATEWAY_KW).start()

    def tearDown(self) -> None:
        if not self.gw.alive():
            rc, log = self.gw.proc.returncode, self.gw.log_text()
            type(self).gw = Gateway(*self.GATEWAY_ARGS, **self.GATEWAY_KW).start()
            self.fail(f"gateway died during {self.id()} (exit {rc})\n{log}")

    def client(self, user: Any = None, fmt: str | None = "json", batch: Any = False,
               token: str | None = None, headers: Iterable[Any] = (), path: str = "/ws",
               query: Any = None, port: int | None = None, timeout: float = 10.0) -> Client:
        c = Client.connect(port or self.port, user=user, fmt=fmt, batch=batch, token=token,
                           headers=headers, path=path, query=query, timeout=timeout)
        self.addCleanup(c.sock.close)
        return c

    def start_own_gateway(self, *args: str, threads: int = 2, **kw: Any) -> Gateway:
        kw.setdefault("echo", False)
        gw = Gateway(*args, threads=threads, **kw).start()
        self.addCleanup(gw.kill)
        return gw
