#!/usr/bin/env python3
"""Graceful-drain measurement (issue 5): N clients on gateway A, SIGTERM to A, each client
follows the protocol — on {"type":"server_shutdown","reconnect_in_ms":R} it waits for the close
1001, answers it, sleeps R ms and reconnects to gateway B (what a load balancer does once A is
out of rotation). Reports when the notices and closes arrived after the signal, A's exit, and
how many clients were connected to B again within 5 s of their close.

Standard library only (asyncio, a minimal RFC 6455 client), so it runs with any python3:

    bench/drain.py --connections 10000                  # starts A and B itself (build/release)
    bench/drain.py --connections 10000 --json           # one JSON object instead of the table

Clients bind to 127.0.0.2..127.0.0.9 in turn so that A and B can each hold many connections from
one process without exhausting one source address's ports. Bounded: every phase has a deadline.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(binary: str, port: int, args: list[str], log: str) -> subprocess.Popen:
    out = open(log, "wb")
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", *args], stdout=out,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"gateway on {port} did not start; see {log}")


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


async def ws_connect(port: int, src: str, user: str, timeout: float):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


class Client:
    def __init__(self, i: int):
        self.i = i
        self.src = f"127.0.0.{2 + i % 8}"
        self.user = f"d{i}"
        self.notice_t = self.close_t = self.reconnect_t = None
        self.reconnect_in_ms = None
        self.close_code = None
        self.error = None


async def follow(c: Client, reader, writer, port_b: int, deadline: float):
    try:
        while True:
            op, payload = await asyncio.wait_for(read_frame(reader), max(0.1, deadline - time.monotonic()))
            now = time.monotonic()
            if op == 0x1:
                msg = json.loads(payload)
                if msg.get("type") == "server_shutdown":
                    c.notice_t = now
                    c.reconnect_in_ms = int(msg.get("reconnect_in_ms", 0))
            elif op == 0x8:
                c.close_t = now
                c.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                writer.write(masked(0x8, payload[:2]))
                await writer.drain()
                break
            elif op == 0x9:
                writer.write(masked(0xA, payload))
    except Exception as e:  # noqa: BLE001 - reported per client
        c.error = f"A: {type(e).__name__}: {e}"
    finally:
        writer.close()
    if c.close_t is None:
        return
    await asyncio.sleep((c.reconnect_in_ms or 0) / 1000)
    try:
        r2, w2 = await ws_connect(port_b, c.src, c.user, 10)
        c.reconnect_t = time.monotonic()
        w2.close()
    except Exception as e:  # noqa: BLE001
        c.error = f"B: {type(e).__name__}: {e}"


async def run(args, port_a: int, port_b: int, pid_a: int) -> dict:
    clients = [Client(i) for i in range(args.connections)]
    conns = []
    t_connect = time.monotonic()
    sem = asyncio.Semaphore(256)

    async def dial(c):
        async with sem:
            return await ws_connect(port_a, c.src, c.user, 20)

    results = await asyncio.gather(*(dial(c) for c in clients), return_exceptions=True)
    for c, r in zip(clients, results):
        if isinstance(r, Exception):
            c.error = f"connect A: {r}"
        else:
            conns.append((c, *r))
    connect_s = time.monotonic() - t_connect
    await asyncio.sleep(args.settle)
    t0 = time.monotonic()
    os.kill(pid_a, signal.SIGTERM)
    deadline = t0 + args.drain_delay_ms / 1000 + args.drain_spread_ms / 1000 + 15
    await asyncio.gather(*(follow(c, r, w, port_b, deadline) for c, r, w in conns))

    def rel(ts):
        ts = [round(t - t0, 3) for t in ts if t is not None]
        return (min(ts), max(ts)) if ts else (None, None)

    notices = [c.notice_t for c in clients if c.notice_t]
    closes = [c.close_t for c in clients if c.close_t]
    within5 = sum(1 for c in clients if c.reconnect_t and c.close_t and c.reconnect_t - c.close_t <= 5.0)
    codes = {}
    for c in clients:
        codes[str(c.close_code)] = codes.get(str(c.close_code), 0) + 1
    errors = [c.error for c in clients if c.error]
    return {
        "connections": args.connections,
        "connected_to_a": len(conns),
        "connect_seconds": round(connect_s, 2),
        "notices": len(notices),
        "notice_first_s": rel(notices)[0],
        "notice_last_s": rel(notices)[1],
        "closed": len(closes),
        "close_codes": codes,
        "close_last_s": rel(closes)[1],
        "reconnected_to_b": sum(1 for c in clients if c.reconnect_t),
        "reconnected_within_5s_of_close": within5,
        "reconnect_last_s": rel([c.reconnect_t for c in clients])[1],
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "release", "wsgate"))
    ap.add_argument("--threads", type=int, default=1, help="workers per gateway")
    ap.add_argument("--drain-delay-ms", type=int, default=5000)
    ap.add_argument("--drain-spread-ms", type=int, default=2000)
    ap.add_argument("--reconnect-jitter-ms", type=int, default=5000)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between the last connect and SIGTERM")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port_a, port_b = free_port(), free_port()
    common = ["--threads", str(args.threads), "--rate-limit", "0", "--ping-interval-s", "0",
              "--drain-delay-ms", str(args.drain_delay_ms), "--drain-spread-ms", str(args.drain_spread_ms),
              "--reconnect-jitter-ms", str(args.reconnect_jitter_ms)]
    tmp = os.environ.get("TMPDIR", "/tmp")
    a = start_gateway(args.binary, port_a, common, os.path.join(tmp, "wsgate-drain-a.log"))
    b = start_gateway(args.binary, port_b, common, os.path.join(tmp, "wsgate-drain-b.log"))
    try:
        res = asyncio.run(run(args, port_a, port_b, a.pid))
        try:
            res["a_exit_status"] = a.wait(timeout=30)
        except subprocess.TimeoutExpired:
            a.kill()
            res["a_exit_status"] = None
        res["a_drain_took_s"] = None  # from A's own log line
        with open(os.path.join(tmp, "wsgate-drain-a.log")) as f:
            for line in f:
                if "event=drained" in line:
                    res["a_drain_took_s"] = int(line.split("took_ms=")[1].split()[0]) / 1000
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:34} {v}")
    return 0 if res["errors"] == 0 and res["a_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
