"""Load balancers in front of the gateway, tested (SPEC section 5, docs/load-balancers.md).

Each of the three shipped configurations in tools/lb/ is rendered (placeholders @LISTEN@,
@GW1@, @GW2@, @RUNDIR@) and run as the real nginx or haproxy in front of two real gateways
(`--threads 1`, `--server-id gw1` / `gw2`), all on loopback ports, RUNDIR in a temp dir:

- nginx-ip-hash.conf       sticky by client address (clients bind 127.0.N.2: ip_hash keys on
                           the /24, so each client gets its own /24)
- nginx-cookie-hash.conf   sticky by the application's `session` cookie, else the address
- haproxy.cfg              sticky by haproxy's own WSGATE cookie, /readyz health check,
                           redispatch (check intervals and maxconn lowered for the test)

For each: WebSocket traffic and /healthz pass through; the same client lands on the same
gateway on every reconnect while different clients use both gateways; and the drain: with
clients on both gateways, SIGTERM one (drain delay 3 s): new clients during the delay all go
to the other gateway (nginx: refused connect -> next upstream; haproxy: the check marks it DOWN,
and clients racing the check are redispatched), its old clients get server_shutdown and a close
1001 through the proxy, reconnect through the proxy to the other gateway and exchange messages
there, and the stopped gateway exits 0.

Which gateway a client landed on: every client joins room "lb" with a unique user id, and a
probe connected directly to each gateway asks `presence lb` (without --redis presence is per
gateway). The gateway exposes its --server-id to nobody without Redis, so this is the exact,
per-client observation; haproxy's cookie value (gw1/gw2) is cross-checked against it.

Skipped only when the nginx / haproxy binary is missing.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from dataclasses import dataclass

from client_proto import Client, build_path
from wsgate_fixture import (OP_TEXT, REPO_ROOT, Gateway, RawWS, _die_with_parent, accept_for,
                            free_port, http_exchange, new_key, read_response, upgrade_request)

LB_DIR = REPO_ROOT / "tools" / "lb"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)

ROOM = "lb"
DRAIN_DELAY_MS = 3000     # long enough for a loaded 2-core machine to do the "during" part
DRAIN_SPREAD_MS = 300
RECONNECT_JITTER_MS = 500
PLACEHOLDER = re.compile(r"@[A-Z0-9_]+@")


def render(template: str, values: dict[str, str], replace: dict[str, str] | None = None) -> str:
    """The template with every @NAME@ substituted; `replace`: exact text edits, each of which
    must match exactly once (so an edited template cannot silently escape the test)."""
    text = (LB_DIR / template).read_text()
    for old, new in (replace or {}).items():
        n = text.count(old)
        if n != 1:
            raise AssertionError(f"{template}: expected {old!r} exactly once, found {n}")
        text = text.replace(old, new)
    for name, value in values.items():
        if f"@{name}@" not in text:
            raise AssertionError(f"{template}: placeholder @{name}@ not used")
        text = text.replace(f"@{name}@", value)
    left = set(PLACEHOLDER.findall(text))
    if left:
        raise AssertionError(f"{template}: unknown placeholders {sorted(left)}")
    return text


# --------------------------------------------------------------------------------------
# The proxy process
# --------------------------------------------------------------------------------------

_proxies: list["Proxy"] = []


@atexit.register
def _kill_proxies() -> None:
    for p in _proxies:
        p.kill()


class Proxy:
    """nginx or haproxy, rendered from a template into its own RUNDIR, in the foreground, in
    its own process group (nginx's workers die with the group)."""

    def __init__(self, kind: str, template: str, gw1: Gateway, gw2: Gateway,
                 replace: dict[str, str] | None = None):
        self.kind, self.template, self.gws, self.replace = kind, template, (gw1, gw2), replace
        self.rundir = tempfile.mkdtemp(prefix=f"wsgate-lb-{kind}-")
        # nginx started as root runs its workers as "nobody": they must be able to reach RUNDIR.
        os.chmod(self.rundir, 0o755)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def conf_path(self) -> str:
        return os.path.join(self.rundir, "nginx.conf" if self.kind == "nginx" else "haproxy.cfg")

    def command(self) -> list[str]:
        if self.kind == "nginx":
            return [NGINX, "-p", self.rundir + "/", "-c", self.conf_path, "-g", "daemon off;"]
        return [HAPROXY, "-f", self.conf_path, "-db"]

    def start(self, timeout: float = 15.0) -> "Proxy":
        last = ""
        for _attempt in range(3):   # the free port can be taken between probe and bind
            self.port = free_port()
            listen = f"127.0.0.1:{self.port}"
            text = render(self.template, {"LISTEN": listen, "RUNDIR": self.rundir,
                                          "GW1": f"127.0.0.1:{self.gws[0].port}",
                                          "GW2": f"127.0.0.1:{self.gws[1].port}"}, self.replace)
            with open(self.conf_path, "w") as f:
                f.write(text)
            if self._log is not None:
                self._log.close()
            self._log = open(os.path.join(self.rundir, "stdout.log"), "w+b")
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent, cwd=self.rundir)
            _proxies.append(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ready():
                    return self
                time.sleep(0.05)
            last = f"exit {self.proc.poll()}\n{self.log_text()}"
            self.kill()
        raise RuntimeError(f"{self.kind} did not start ({self.command()}): {last}")

    def ready(self) -> bool:
        try:
            r = http_exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                              timeout=1.0, wait_close=0)
        except (OSError, AssertionError):
            return False
        if r.status != 200:
            return False
        if self.kind == "haproxy":   # both gateways checked UP (not just "up until checked")
            try:
                st = self.server_states()
            except OSError:
                return False
            return all(st.get(n, {}).get("check_status") == "L7OK" and
                       st[n]["status"] == "UP" for n in ("gw1", "gw2"))
        return True

    # haproxy runtime API ------------------------------------------------------------------
    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(os.path.join(self.rundir, "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out.decode()
                out += chunk

    def server_states(self) -> dict[str, dict[str, str]]:
        """`show stat` rows of backend wsgate, by server name."""
        text = self.admin("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row.get("pxname") == "wsgate" and row["svname"] not in ("FRONTEND", "BACKEND")}

    # lifecycle ----------------------------------------------------------------------------
    def log_text(self, limit: int = 6000) -> str:
        parts = []
        if self._log is not None and not self._log.closed:
            self._log.flush()
            self._log.seek(0)
            parts.append(self._log.read().decode(errors="replace"))
        err = os.path.join(self.rundir, "error.log")
        if os.path.exists(err):
            with open(err, errors="replace") as f:
                parts.append(f.read())
        return "\n".join(parts)[-limit:]

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the master and any worker
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (both exit at once), then make sure the whole group is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # stray nginx workers, if any
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.rundir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Clients through the proxy
# --------------------------------------------------------------------------------------

@dataclass
class Ident:
    """What makes a client "the same client" for a balancer."""
    source: str | None = None     # local address the client socket binds (ip_hash)
    cookie: str | None = None     # Cookie header sent with the upgrade

    def __str__(self) -> str:
        return f"source={self.source} cookie={self.cookie}"


def deadline_loop(timeout: float, interval: float = 0.05):
    """Yields until the deadline (poll with a deadline, never a fixed sleep)."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= end:
            return
        time.sleep(interval)


class LBCases:
    """The three behaviours, for one balancer configuration (mixed into a TestCase)."""

    KIND = ""                 # "nginx" | "haproxy"
    TEMPLATE = ""
    REPLACE: dict[str, str] | None = None

    # hooks --------------------------------------------------------------------------------
    def ident(self, i: int) -> Ident:
        raise NotImplementedError

    def learn(self, ident: Ident, c: Client, landed: str) -> None:
        """After a connection: what the balancer told the client (haproxy: its cookie)."""

    # setup --------------------------------------------------------------------------------
    def start_fleet(self, drain_delay_ms: int = 0) -> None:
        self.users = 0
        self.gws: dict[str, Gateway] = {}
        for name in ("gw1", "gw2"):
            gw = Gateway("--server-id", name, "--reconnect-jitter-ms", str(RECONNECT_JITTER_MS),
                         threads=1, echo=False, handshake_timeout_ms=5000,
                         drain_delay_ms=drain_delay_ms, drain_spread_ms=DRAIN_SPREAD_MS)
            gw.start()
            self.addCleanup(gw.kill)
            self.gws[name] = gw
        self.proxy = Proxy(self.KIND, self.TEMPLATE, self.gws["gw1"], self.gws["gw2"], self.REPLACE)
        self.addCleanup(self.proxy.stop)
        self.proxy.start()
        # One probe per gateway, connected directly: asks `presence lb` to locate clients.
        self.probes: dict[str, Client] = {}
        self.probe_id = 0
        for name, gw in self.gws.items():
            p = Client.connect(gw.port, user=f"probe-{name}")
            self.addCleanup(p.sock.close)
            self.probes[name] = p

    def fail_with_logs(self, msg: str) -> None:
        logs = "\n".join(f"--- {n} log:\n{gw.log_text(2000)}" for n, gw in self.gws.items())
        self.fail(f"{msg}\n--- {self.KIND} log:\n{self.proxy.log_text()}\n{logs}")

    def lb_connect(self, ident: Ident, timeout: float = 10.0) -> Client:
        """Upgrade /ws through the proxy as `ident`, join room lb; returns the client
        (its .response is the 101 as the proxy relayed it)."""
        self.users += 1
        user = f"u{self.users}"
        ws = RawWS.open(self.proxy.port, timeout=timeout, source=ident.source)
        self.addCleanup(ws.sock.close)
        key = new_key()
        extra = [f"Cookie: {ident.cookie}"] if ident.cookie else []
        ws.sock.sendall(upgrade_request(build_path("/ws", user=user), key=key, extra=extra))
        resp = read_response(ws.sock, timeout=timeout, wait_close=0.2)
        if resp.status != 101:
            self.fail_with_logs(f"upgrade through {self.KIND} as {ident}: {resp.status_line} "
                                f"{resp.body[:200]!r}")
        self.assertEqual(resp.header("Sec-WebSocket-Accept"), accept_for(key), "accept key via proxy")
        ws.buf += resp.rest
        ws.response = resp
        c = Client(ws, user)
        ack = c.request("join", id="j", room=ROOM)
        self.assertEqual(ack, {"type": "ack", "id": "j"}, f"join through {self.KIND}")
        return c

    def located(self, user: str, only: tuple[str, ...] | None = None) -> list[str]:
        """Names of the gateways (among `only`, default all) whose room lb holds `user`."""
        out = []
        for name in only or tuple(self.probes):
            self.probe_id += 1
            reply = self.probes[name].request("presence", id=self.probe_id, room=ROOM, timeout=5)
            self.assertEqual(reply.get("type"), "presence", reply)
            if user in reply["users"]:
                out.append(name)
        return out

    def landing(self, c: Client, only: tuple[str, ...] | None = None) -> str:
        where = self.located(c.user, only)
        if len(where) != 1:
            self.fail_with_logs(f"{c.user} found on {where} (expected exactly one gateway)")
        return where[0]

    # 1. traffic ---------------------------------------------------------------------------
    def test_websocket_and_health_through_proxy(self):
        self.start_fleet()
        for path, body in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
            r = http_exchange(self.proxy.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n"
                              f"Connection: close\r\n\r\n".encode(), wait_close=0)
            self.assertEqual((r.status, r.body), (200, body), f"{path} through {self.KIND}")
        r = http_exchange(self.proxy.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n"
                          b"Connection: close\r\n\r\n", wait_close=0)
        self.assertEqual(r.status, 404, "/metrics must not be exposed through the balancer")

        # Two clients with the same identity are on the same gateway (stickiness): a
        # publication reaches both, through the proxy, in both directions.
        ident = self.ident(0)
        a = self.lb_connect(ident)
        self.learn(ident, a, self.landing(a))
        b = self.lb_connect(ident)
        self.assertEqual(self.landing(a), self.landing(b), "same identity, same gateway")
        self.assertEqual(a.request("publish", id=1, room=ROOM, data={"n": 1})["type"], "ack")
        for c in (a, b):
            push = c.next_push(5)
            self.assertEqual((push["type"], push["room"], push["from"], push["data"]),
                             ("message", ROOM, a.user, {"n": 1}))
        self.assertEqual(b.request("ping", id="p")["type"], "pong")
        self.assertTrue(b.send_request("publish", room=ROOM, data="x" * 70000))  # > one 64 KiB buffer
        for c in (a, b):
            self.assertEqual(c.next_push(5)["data"], "x" * 70000)

    # 2. stickiness -------------------------------------------------------------------------
    def test_sticky_on_reconnect(self):
        self.start_fleet()
        first: dict[str, list[int]] = {"gw1": [], "gw2": []}
        i = 0
        while i < 6 or not (first["gw1"] and first["gw2"]):
            if i >= 40:
                self.fail_with_logs(f"40 clients, all on one gateway: {first}")
            ident = self.ident(i)
            c = self.lb_connect(ident)
            home = self.landing(c)
            self.learn(ident, c, home)
            first[home].append(i)
            c.close()
            for attempt in range(3):
                c = self.lb_connect(ident)
                got = self.landing(c)
                self.assertEqual(got, home, f"client {i} ({ident}) reconnect {attempt + 1}: moved")
                self.after_reconnect(c)
                c.close()
            i += 1
        self.extra_stickiness(first)

    def after_reconnect(self, c: Client) -> None:
        pass

    def extra_stickiness(self, first: dict[str, list[int]]) -> None:
        pass

    # 3. drain -----------------------------------------------------------------------------
    def test_drain_moves_clients_to_the_other_gateway(self):
        self.start_fleet(drain_delay_ms=DRAIN_DELAY_MS)
        # Clients on both gateways, at least 3 each.
        on: dict[str, list[tuple[Ident, Client]]] = {"gw1": [], "gw2": []}
        i = 0
        while len(on["gw1"]) < 3 or len(on["gw2"]) < 3:
            if i >= 40:
                self.fail_with_logs(f"40 clients, not 3 on each gateway: "
                                    f"{ {k: len(v) for k, v in on.items()} }")
            ident = self.ident(i)
            c = self.lb_connect(ident)
            home = self.landing(c)
            self.learn(ident, c, home)
            on[home].append((ident, c))
            i += 1
        victim_name, survivor_name = "gw1", "gw2"
        victim = self.gws[victim_name]
        witness = on[survivor_name][0][1]

        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        # The signal is handled asynchronously: the drain has begun once the victim's
        # listener refuses connections (a client the victim accepted just before that is
        # legitimately its client until the notice). A reset means our probe sat in the
        # accept queue when the listener closed: closed too. A SYN caught by the close is
        # dropped (the kernel would retransmit it after 1 s): just try again.
        for _ in deadline_loop(3.0, 0.005):
            try:
                socket.create_connection(("127.0.0.1", victim.port), timeout=0.2).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break
            except socket.timeout:
                continue
        else:
            self.fail_with_logs("the victim's listener still accepts 2 s after SIGTERM")

        # A client racing the balancer's discovery, with a victim identity.
        racer = self.lb_connect(self.ident_for_new_client(on[victim_name][0][0]))
        self.assertEqual(self.landing(racer), survivor_name, "client right after SIGTERM")
        self.wait_out_of_rotation(victim_name, t0)
        # New clients during the drain delay: the victims' own identities (their sticky key
        # points at the victim) and fresh ones, all on the survivor.
        newcomers = [self.ident_for_new_client(ident) for ident, _ in on[victim_name]]
        newcomers += [self.ident(100 + k) for k in range(3)]
        for ident in newcomers:
            c = self.lb_connect(ident)
            self.assertEqual(self.landing(c), survivor_name, f"new client {ident} during the drain")
            self.check_new_client(c, survivor_name)
        # The victim still serves its clients during the delay.
        for _, c in on[victim_name]:
            self.assertEqual(c.request("ping", id="still", timeout=5)["type"], "pong")
        took = time.monotonic() - t0
        self.assertTrue(victim.alive(), "victim exited during its drain delay")
        self.assertLess(took, DRAIN_DELAY_MS / 1000, "the checks during the drain delay took longer "
                        "than the delay itself (machine too slow for this test)")

        # Old clients: server_shutdown, close 1001 through the proxy, TCP closed.
        waits = []
        for ident, c in on[victim_name]:
            out = c.ws.read_until_close(timeout=DRAIN_DELAY_MS / 1000 + 10, reply=True)
            self.assertIsNotNone(out.close, f"{c.user}: no close frame through {self.KIND} "
                                            f"(timed out: {out.timed_out})")
            self.assertEqual(out.code, 1001, f"{c.user}: close code through {self.KIND}")
            texts = [json.loads(f.payload) for f in out.frames if f.opcode == OP_TEXT]
            self.assertEqual(len(texts), 1, f"{c.user}: frames before the close {out.frames}")
            notice = texts[0]
            self.assertEqual(notice["type"], "server_shutdown", notice)
            self.assertTrue(0 <= notice["reconnect_in_ms"] <= RECONNECT_JITTER_MS, notice)
            self.assertTrue(out.tcp_closed, f"{c.user}: {self.KIND} kept the TCP connection")
            waits.append((ident, notice["reconnect_in_ms"]))
        # The survivor's clients were not disturbed.
        self.assertEqual(witness.request("ping", id="w", timeout=5)["type"], "pong")

        # They reconnect (after reconnect_in_ms, as told) through the proxy, as the same
        # clients, and land on the survivor, where they exchange messages.
        back = []
        for ident, wait_ms in sorted(waits, key=lambda w: w[1]):
            left = t0 + DRAIN_DELAY_MS / 1000 + wait_ms / 1000 - time.monotonic()
            if left > 0:
                time.sleep(min(left, RECONNECT_JITTER_MS / 1000))
            c = self.lb_connect(ident)
            self.assertEqual(self.landing(c, only=(survivor_name,)), survivor_name,
                             f"reconnected {ident}")
            self.check_new_client(c, survivor_name)
            back.append(c)
        self.assertEqual(witness.request("publish", id="pw", room=ROOM, data="welcome")["type"], "ack")
        for c in back:
            self.assertEqual(c.next_push(5)["data"], "welcome", c.user)
        self.assertEqual(back[0].request("publish", id="pb", room=ROOM, data="thanks")["type"], "ack")
        self.assertEqual(witness.next_push(5)["data"], "welcome")
        self.assertEqual(witness.next_push(5), {"type": "message", "room": ROOM,
                                                "from": back[0].user, "data": "thanks"})
        try:
            rc = victim.proc.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        self.assertEqual(rc, 0, f"victim exit code\n{victim.log_text()}")

    def ident_for_new_client(self, ident: Ident) -> Ident:
        """A new connection from the same client (same address / same cookie)."""
        return Ident(ident.source, ident.cookie)

    def wait_out_of_rotation(self, victim: str, t0: float) -> None:
        """haproxy: until the check marks the victim DOWN. nginx has no active check."""

    def check_new_client(self, c: Client, landed: str) -> None:
        pass


# --------------------------------------------------------------------------------------
# The three configurations
# --------------------------------------------------------------------------------------

@unittest.skipUnless(NGINX, "nginx binary not found (Debian package nginx)")
class NginxIpHashTest(LBCases, unittest.TestCase):
    KIND, TEMPLATE = "nginx", "nginx-ip-hash.conf"

    def ident(self, i: int) -> Ident:
        # ip_hash keys on the first three octets: one /24 per client.
        return Ident(source=f"127.0.{i + 1}.2")

    def extra_stickiness(self, first: dict[str, list[int]]) -> None:
        # Documented ip_hash behaviour: the last octet is ignored, so a whole /24 (everyone
        # behind one NAT) shares a gateway.
        for home, idx in first.items():
            for i in idx[:2]:
                for host in (3, 77, 254):
                    c = self.lb_connect(Ident(source=f"127.0.{i + 1}.{host}"))
                    self.assertEqual(self.landing(c), home, f"127.0.{i + 1}.{host}: same /24, same gateway")
                    c.close()


@unittest.skipUnless(NGINX, "nginx binary not found (Debian package nginx)")
class NginxCookieHashTest(LBCases, unittest.TestCase):
    KIND, TEMPLATE = "nginx", "nginx-cookie-hash.conf"

    def ident(self, i: int) -> Ident:
        # Every client from the same address: only the cookie can tell them apart.
        return Ident(source="127.0.0.1", cookie=f"theme=dark; session=s{i:03d}-{os.getpid()}")

    def extra_stickiness(self, first: dict[str, list[int]]) -> None:
        # The cookie decides, not the address: the same cookie from other addresses.
        for home, idx in first.items():
            ident = self.ident(idx[0])
            for net in (11, 12, 13):
                c = self.lb_connect(Ident(source=f"127.0.{net}.9", cookie=ident.cookie))
                self.assertEqual(self.landing(c), home, f"{ident.cookie} from 127.0.{net}.9")
                c.close()
        # Without the cookie the key is the client address: sticky per address, and
        # different addresses use both gateways.
        homes: dict[str, str] = {}
        for n in range(1, 41):
            src = f"127.0.{n}.5"
            c = self.lb_connect(Ident(source=src))
            homes[src] = self.landing(c)
            c.close()
            if len(homes) >= 4 and len(set(homes.values())) == 2:
                break
        self.assertEqual(len(set(homes.values())), 2, f"cookieless clients by address: {homes}")
        for src, home in list(homes.items())[:4]:
            for _ in range(2):
                c = self.lb_connect(Ident(source=src))
                self.assertEqual(self.landing(c), home, f"cookieless client from {src}")
                c.close()


@unittest.skipUnless(HAPROXY, "haproxy binary not found (Debian package haproxy)")
class HaproxyTest(LBCases, unittest.TestCase):
    KIND, TEMPLATE = "haproxy", "haproxy.cfg"
    # Production check intervals are seconds; the test's drain lasts 3 s.
    REPLACE = {"inter 2s fastinter 500ms downinter 2s": "inter 200ms fastinter 100ms downinter 200ms",
               "\n    maxconn 100000\n": "\n    maxconn 4000\n"}

    def ident(self, i: int) -> Ident:
        return Ident()     # a new browser: no cookie yet, haproxy will set one

    def learn(self, ident: Ident, c: Client, landed: str) -> None:
        cookie = c.response.header("Set-Cookie")
        if ident.cookie is None:
            self.assertIsNotNone(cookie, "haproxy did not set its cookie on the 101")
            self.assertRegex(cookie, r"^WSGATE=gw[12];")
            self.assertIn("HttpOnly", cookie)
            ident.cookie = cookie.split(";", 1)[0]
            self.assertEqual(ident.cookie, f"WSGATE={landed}", "cookie names the gateway served")

    def after_reconnect(self, c: Client) -> None:
        # indirect: a client that already has a valid cookie is not sent it again.
        self.assertIsNone(c.response.header("Set-Cookie"), "cookie re-sent to a sticky client")

    def check_new_client(self, c: Client, landed: str) -> None:
        # A client whose cookie named the drained gateway gets the survivor's cookie.
        cookie = c.response.header("Set-Cookie")
        self.assertIsNotNone(cookie, "no new cookie for a moved client")
        self.assertTrue(cookie.startswith(f"WSGATE={landed};"), cookie)

    def wait_out_of_rotation(self, victim: str, t0: float) -> None:
        # The /readyz check fails (listener closed: L4CON; or 503: L7STS) and after fall=2
        # the victim is DOWN, well before the drain delay is over.
        state = {}
        for _ in deadline_loop(DRAIN_DELAY_MS / 1000 - 0.5, 0.02):
            state = self.proxy.server_states()[victim]
            if state["status"] == "DOWN":
                break
        else:
            self.fail_with_logs(f"haproxy did not mark {victim} DOWN during the drain delay: {state}")
        self.assertIn(state["check_status"], ("L4CON", "L7STS"), state)
        self.assertTrue(self.gws[victim].alive())
        self.assertEqual(self.proxy.server_states()["gw2"]["status"], "UP")

    def extra_stickiness(self, first: dict[str, list[int]]) -> None:
        # A forged or stale cookie value naming no server: balanced, and given a real one.
        c = self.lb_connect(Ident(cookie="WSGATE=nosuch"))
        cookie = c.response.header("Set-Cookie")
        self.assertIsNotNone(cookie)
        self.assertEqual(cookie.split(";", 1)[0], f"WSGATE={self.landing(c)}")


if __name__ == "__main__":
    unittest.main()
