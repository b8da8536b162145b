"""Authentication and admission of the /ws upgrade (docs/protocol.md "Connecting",
"Permissions"): HS256 tokens from the Authorization header or the `token` parameter,
their claims enforced end to end (rooms, pub, admin), every token failure a plain 401
that says nothing about the reason (the gateway log names it), the Origin allow-list
(403, checked before the token), anonymous mode (`user` parameter or a generated id) and
the exit counters auth_failures / origin_rejects.

Each test class runs its own gateway; the tests that read the exit counters or the log
start one per test. Runs in a few seconds (release) on 2 cores."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import time
import unittest

from client_proto import (Client, HandshakeRefused, ProtoTestCase, b64url, make_token,
                          stop_with_stats, sum_stats, upgrade_status)
from wsgate_fixture import Gateway, HttpResponse

SECRET = "integration-test-secret-\u00e9-0123456789"
OTHER_SECRET = "integration-test-secret-\u00e9-0123456788"
LEEWAY_S = 30                       # the gateway's default --jwt-leeway-s
REFUSAL_RE = re.compile(r"event=upgrade_refused worker=\d+ status=(\d+) reason=(\w+)")
FAILURE_NAMES = ("missing_token", "malformed", "bad_alg", "bad_signature", "expired",
                 "not_yet_valid", "missing_sub", "bad_user", "origin_not_allowed")
ALLOWED_ORIGIN = "https://app.example.com"
_ids = itertools.count(1)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def now() -> int:
    return int(time.time())


def sign_raw(header_b64: str, payload_b64: str, secret: str = SECRET) -> str:
    """A token with the right HS256 signature over exactly these (maybe invalid) segments."""
    signing = f"{header_b64}.{payload_b64}"
    return f"{signing}.{b64url(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())}"


def pct_all(s: str) -> str:
    """Percent-encode every byte (a gateway that skips %-decoding cannot read it)."""
    return "".join(f"%{b:02X}" for b in s.encode())


def bearer(tok: str) -> list[str]:
    return [f"Authorization: Bearer {tok}"]


def rq(c: Client, op: str, **fields) -> dict:
    """A request with a fresh id; the reply carrying it."""
    return c.request(op, id=next(_ids), timeout=5.0, **fields)


def pushes_within(c: Client, timeout: float = 0.3) -> list:
    return [m.obj for m in c.drain(timeout) if m.is_push]


class AuthCase(unittest.TestCase):
    """Helpers shared by the test classes."""

    def start_gateway(self, *args: str, threads: int = 1) -> Gateway:
        gw = Gateway(*args, threads=threads, echo=False).start()
        self.addCleanup(gw.kill)
        return gw

    def connect(self, port: int, path: str = "/ws", headers=()) -> Client:
        try:
            c = Client.connect(port, path=path, headers=headers, timeout=5.0)
        except HandshakeRefused as e:
            self.fail(f"upgrade {path} {list(headers)} refused: {e.response.status_line} "
                      f"{e.response.body!r}")
        self.addCleanup(c.sock.close)
        self.__dict__.setdefault("_clients", []).append(c)
        return c

    def stop_gateway(self, gw: Gateway) -> tuple[dict, list[dict], str]:
        """Close this test's connections (so shutdown does not wait for them), stop the
        gateway; its summed counters, per-worker counters and log."""
        for c in self.__dict__.get("_clients", []):
            c.sock.close()
        rows = stop_with_stats(self, gw)
        for k in ("auth_failures", "origin_rejects", "handshake_failures", "pushes"):
            self.assertIn(k, rows[0], f"counter {k} missing from the exit line")
        return sum_stats(rows), rows, gw.log_text(limit=1 << 22)

    def assertRefused(self, port: int, status: int, path: str = "/ws", headers=(),
                      what: str = "") -> HttpResponse:
        """The upgrade gets `status`, no upgrade headers, a body that says no more than the
        status line, and the connection is closed."""
        what = what or path
        resp = upgrade_status(port, path=path, headers=headers, timeout=5.0)
        self.assertEqual(resp.status, status, f"{what}: {resp.status_line} {resp.body!r}")
        self.assertIsNone(resp.header("Sec-WebSocket-Accept"), f"{what}: refusal carries an accept key")
        self.assertNotIn("websocket", resp.header_tokens("Upgrade"), f"{what}: refusal says Upgrade")
        self.assertTrue(resp.closed, f"{what}: connection left open after {status}")
        if status in (401, 403):
            body = resp.body.decode(errors="replace").strip().lower()
            parts = resp.status_line.split(" ", 2)
            reason = parts[2].lower() if len(parts) == 3 else ""
            self.assertIn(body, ("", str(status), reason, f"{status} {reason}"),
                          f"{what}: the {status} body says more than the status: {resp.body!r}")
            everything = resp.status_line + str(resp.headers) + resp.body.decode(errors="replace")
            for name in FAILURE_NAMES:
                self.assertNotIn(name, everything, f"{what}: the response reveals the reason ({name})")
        return resp

    def assertIdentity(self, c: Client, user: str, room: str | None = None) -> None:
        """The connection acts as `user`: its own publication comes back from `user`."""
        room = room or f"id-{os.urandom(4).hex()}"
        r = rq(c, "join", room=room)
        self.assertEqual(r["type"], "ack", f"join {room}: {r}")
        marker = os.urandom(6).hex()
        r = rq(c, "publish", room=room, data={"m": marker})
        self.assertEqual(r["type"], "ack", f"publish: {r}")
        p = c.next_push(timeout=5.0)
        self.assertEqual((p.get("type"), p.get("room"), p.get("data")), ("message", room, {"m": marker}),
                         f"own publication push: {p}")
        self.assertEqual(p.get("from"), user, "the connection's user id (push 'from')")


# --------------------------------------------------------------------------------------
# 1. valid tokens and their claims
# --------------------------------------------------------------------------------------

class TokenClaimsTest(ProtoTestCase, AuthCase):
    GATEWAY_ARGS = ("--jwt-secret", SECRET, "--rate-limit", "0")
    GATEWAY_KW = dict(threads=2, echo=False)

    def token(self, **claims) -> str:
        return make_token(SECRET, {"exp": now() + 600, **claims})

    def test_bearer_header(self):
        c = self.connect(self.port, headers=bearer(self.token(sub="alice", pub=True)))
        self.assertIdentity(c, "alice")

    def test_bearer_scheme_is_case_insensitive(self):
        t = self.token(sub="carol", pub=True)
        c = self.connect(self.port, headers=[f"Authorization: bearer   {t}"])
        self.assertIdentity(c, "carol")

    def test_query_token_plain_and_percent_encoded(self):
        t = self.token(sub="bob", pub=True)
        c = self.connect(self.port, f"/ws?token={t}")
        self.assertIdentity(c, "bob")
        c = self.connect(self.port, f"/ws?format=json&token={pct_all(t)}&batch=0")
        self.assertIdentity(c, "bob")

    def test_utf8_sub_is_the_user_id(self):
        c = self.connect(self.port, headers=bearer(self.token(sub="\u00e9mile \u2603", pub=True)))
        self.assertIdentity(c, "\u00e9mile \u2603")

    def test_header_wins_over_query(self):
        hdr, qry = self.token(sub="from-header", pub=True), self.token(sub="from-query", pub=True)
        c = self.connect(self.port, f"/ws?token={qry}", headers=bearer(hdr))
        self.assertIdentity(c, "from-header")
        # a bad header token is not rescued by a good query token ...
        self.assertRefused(self.port, 401, f"/ws?token={qry}",
                           bearer(make_token(OTHER_SECRET, {"sub": "x"})), "bad header, good query")
        # ... and a good header token is not spoiled by a bad query token
        c = self.connect(self.port, "/ws?token=garbage.not.atoken", headers=bearer(hdr))
        self.assertIdentity(c, "from-header")
        # a header with another scheme is not a token: the query token is used
        c = self.connect(self.port, f"/ws?token={qry}", headers=["Authorization: Basic Zm9vOmJhcg=="])
        self.assertIdentity(c, "from-query")

    def test_rooms_patterns(self):
        c = self.connect(self.port, headers=bearer(self.token(sub="r1", rooms=["team-*", "lobby", "a*b*c"])))
        for room in ("team-red", "team-", "team-*x", "lobby", "abc", "aXXbYYc", "a-b-c"):
            r = rq(c, "join", room=room)
            self.assertEqual(r["type"], "ack", f"join {room!r} matches a pattern: {r}")
        for room in ("team", "xteam-red", "lobby2", "Lobby", "other", "ab", "abcd"):
            r = rq(c, "join", room=room)
            self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"),
                             f"join {room!r} matches no pattern: {r}")
        # presence: allowed for a matching room (joined or not), forbidden otherwise
        r = rq(c, "presence", room="team-red")
        self.assertEqual((r["type"], r.get("users")), ("presence", ["r1"]), f"presence team-red: {r}")
        r = rq(c, "presence", room="team-blue")
        self.assertEqual((r["type"], r.get("users")), ("presence", []), f"presence team-blue: {r}")
        r = rq(c, "presence", room="other")
        self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"), f"presence other: {r}")
        # a forbidden join did not make it a member anyway
        other = self.connect(self.port, headers=bearer(self.token(sub="r2")))
        self.assertEqual(rq(other, "join", room="other")["type"], "ack")
        r = rq(other, "presence", room="other")
        self.assertEqual(r.get("users"), ["r2"], f"forbidden join left a member behind: {r}")

    def test_empty_rooms_claim_allows_no_room(self):
        c = self.connect(self.port, headers=bearer(self.token(sub="nobody-rooms", rooms=[], pub=True)))
        for room in ("lobby", "x", "*"):
            r = rq(c, "join", room=room)
            self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"), f"join {room!r}: {r}")
        # operations that need no room permission still work
        self.assertEqual(rq(c, "ping")["type"], "pong")
        r = rq(c, "online", users=["nobody-rooms"])
        self.assertEqual(r.get("users"), ["nobody-rooms"], f"online: {r}")

    def test_no_rooms_claim_allows_every_room(self):
        c = self.connect(self.port, headers=bearer(self.token(sub="any-rooms")))
        for room in ("lobby", "team-red", "\u00fcber", "x" * 128):
            self.assertEqual(rq(c, "join", room=room)["type"], "ack", f"join {room!r}")

    def test_publish_needs_pub(self):
        for claims in ({}, {"pub": False}):
            c = self.connect(self.port, headers=bearer(self.token(sub="reader", **claims)))
            self.assertEqual(rq(c, "join", room="news")["type"], "ack")
            r = rq(c, "publish", room="news", data="hello")
            self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"),
                             f"publish with claims {claims}: {r}")
            self.assertEqual(pushes_within(c, 0.3), [], "a forbidden publication was delivered")
        # with pub: only to joined rooms
        w = self.connect(self.port, headers=bearer(self.token(sub="writer", pub=True)))
        r = rq(w, "publish", room="news", data="hello")
        self.assertEqual((r["type"], r.get("code")), ("error", "not_member"), f"publish unjoined: {r}")
        self.assertIdentity(w, "writer", "news")
        # send needs no claim
        r = rq(c, "send", user="writer", data={"dm": 1})
        self.assertEqual(r["type"], "ack", f"send without pub: {r}")
        p = w.next_push()
        self.assertEqual((p["type"], p.get("from"), p.get("data")), ("direct", "reader", {"dm": 1}), f"{p}")

    def test_broadcast_needs_admin(self):
        for claims in ({}, {"admin": False}, {"pub": True}):
            c = self.connect(self.port, headers=bearer(self.token(sub="plain", **claims)))
            r = rq(c, "broadcast", data={"all": 1})
            self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"),
                             f"broadcast with claims {claims}: {r}")
            self.assertEqual(pushes_within(c, 0.3), [], "a forbidden broadcast was delivered")

    def test_expiry_within_leeway_is_accepted(self):
        c = self.connect(self.port, headers=bearer(make_token(SECRET, {"sub": "late", "pub": True,
                                                                     "exp": now() - LEEWAY_S // 3})))
        self.assertIdentity(c, "late")
        c = self.connect(self.port, headers=bearer(make_token(SECRET, {"sub": "early", "pub": True,
                                                                     "nbf": now() + LEEWAY_S // 3})))
        self.assertIdentity(c, "early")
        c = self.connect(self.port, headers=bearer(make_token(SECRET, {"sub": "no-exp", "pub": True})))
        self.assertIdentity(c, "no-exp")


class AdminBroadcastTest(AuthCase):
    RECEIVERS = 16

    def test_admin_broadcast_reaches_both_workers(self):
        gw = self.start_gateway("--jwt-secret", SECRET, threads=2)
        receivers = [self.connect(gw.port, headers=bearer(make_token(SECRET, {"sub": f"u{i}"})))
                     for i in range(self.RECEIVERS)]
        # a ping round trip on each: every connection is registered before the broadcast
        for c in receivers:
            self.assertEqual(rq(c, "ping")["type"], "pong")
        admin = self.connect(gw.port, headers=bearer(make_token(SECRET, {"sub": "root", "admin": True})))
        r = rq(admin, "broadcast", data={"notice": "maintenance"})
        self.assertEqual(r["type"], "ack", f"admin broadcast: {r}")
        for i, c in enumerate(receivers):
            p = c.next_push()
            self.assertEqual((p.get("type"), p.get("data")), ("broadcast", {"notice": "maintenance"}),
                             f"receiver {i}: {p}")
            self.assertEqual(pushes_within(c, 0.05), [], f"receiver {i}: more than one push")
        p = admin.next_push()
        self.assertEqual(p.get("type"), "broadcast", f"the admin is one of everyone: {p}")
        for c in receivers + [admin]:
            c.close()
        totals, rows, log = self.stop_gateway(gw)
        accepted = [r["accepted"] for r in rows]
        self.assertTrue(all(a > 0 for a in accepted),
                        f"connections did not land on both workers ({accepted}): the test proves nothing")
        self.assertEqual(totals["pushes"], self.RECEIVERS + 1, f"pushes per worker {[r['pushes'] for r in rows]}")
        self.assertTrue(all(r["pushes"] > 0 for r in rows), f"pushes per worker {[r['pushes'] for r in rows]}")
        self.assertEqual(totals["auth_failures"], 0)


# --------------------------------------------------------------------------------------
# 2. every token failure: 401, nothing said; the log names the reason
# --------------------------------------------------------------------------------------

def std_alphabet_token() -> str:
    """A correctly signed token whose payload segment uses '+' or '/' (the standard base64
    alphabet) where base64url has '-' or '_'."""
    for i in range(1000):
        h, p, _s = make_token(SECRET, {"sub": f"mallory?>{i}~~"}).split(".")
        if "-" in p or "_" in p:
            return sign_raw(h, p.replace("-", "+").replace("_", "/"))
    raise AssertionError("no claims found whose encoding uses - or _")


def failure_cases() -> list[tuple[str, str, list[str], str]]:
    """(description, path, headers, expected log reason) for each token failure."""
    t = now()
    good = {"sub": "mallory", "exp": t + 600}
    valid = make_token(SECRET, good)
    h, p, s = valid.split(".")
    tampered_payload = make_token(SECRET, {"sub": "mallory", "exp": t + 600, "admin": True}).split(".")[1]
    hs256_sig = lambda header, claims: make_token(SECRET, claims, header=header)   # noqa: E731
    cases = [
        ("no token", "/ws", [], "missing_token"),
        ("empty bearer", "/ws", ["Authorization: Bearer "], "missing_token"),
        ("empty query token", "/ws?token=", [], "missing_token"),
        ("basic auth only", "/ws", ["Authorization: Basic Zm9vOmJhcg=="], "missing_token"),
        ("tampered payload", "/ws", bearer(f"{h}.{tampered_payload}.{s}"), "bad_signature"),
        ("random signature", "/ws", bearer(f"{h}.{p}.{b64url(os.urandom(32))}"),
         "bad_signature"),
        ("short signature", "/ws", bearer(f"{h}.{p}.{s[:20]}"), "bad_signature"),
        ("wrong secret", "/ws", bearer(make_token(OTHER_SECRET, good)), "bad_signature"),
        ("wrong secret in query", f"/ws?token={make_token(OTHER_SECRET, good)}", [], "bad_signature"),
        ("expired beyond leeway", "/ws",
         bearer(make_token(SECRET, {"sub": "mallory", "exp": t - LEEWAY_S - 60})), "expired"),
        ("nbf in the future", "/ws",
         bearer(make_token(SECRET, {"sub": "mallory", "nbf": t + LEEWAY_S + 60})), "not_yet_valid"),
        ("HS512 header, HS256 signature", "/ws",
         bearer(hs256_sig({"alg": "HS512", "typ": "JWT"}, good)), "bad_alg"),
        ("RS256 header, HS256 signature", "/ws",
         bearer(hs256_sig({"alg": "RS256", "typ": "JWT"}, good)), "bad_alg"),
        ("hs256 in lower case", "/ws", bearer(hs256_sig({"alg": "hs256"}, good)), "bad_alg"),
        ("no alg", "/ws", bearer(hs256_sig({"typ": "JWT"}, good)), "bad_alg"),
        ("alg none, empty signature", "/ws",
         bearer(make_token(SECRET, good, header={"alg": "none", "typ": "JWT"}).rsplit(".", 1)[0] + "."),
         "bad_alg"),
        ("alg none, with a signature", "/ws",
         bearer(make_token(SECRET, good, header={"alg": "none", "typ": "JWT"})), "bad_alg"),
        ("alg None, empty signature, in query", "/ws?token=" +
         make_token(SECRET, good, header={"alg": "None"}).rsplit(".", 1)[0] + ".", [], "bad_alg"),
        ("two segments", "/ws", bearer(f"{h}.{p}"), "malformed"),
        ("four segments", "/ws", bearer(f"{h}.{p}.{s}.{s}"), "malformed"),
        ("one segment", "/ws", bearer("justonesegment"), "malformed"),
        # Signed over the text as sent, so the reason is "malformed" whichever segment the
        # gateway decodes first.
        ("bad base64 character in the payload", "/ws", bearer(sign_raw(h, p[:-2] + "!!")), "malformed"),
        ("bad base64 character in the header", "/ws", bearer(f"{h[:-1]}*.{p}.{s}"), "malformed"),
        ("bad base64 character in the signature", "/ws", bearer(f"{h}.{p}.{s[:-1]}~"), "malformed"),
        ("base64 padding", "/ws", bearer(sign_raw(h, p + "==")), "malformed"),
        ("impossible base64 length", "/ws", bearer(sign_raw(h, p + "A" * ((1 - len(p)) % 4))), "malformed"),
        ("standard base64 alphabet", "/ws", bearer(std_alphabet_token()), "malformed"),
        ("empty payload segment", "/ws", bearer(sign_raw(h, "")), "malformed"),
        ("header not JSON", "/ws", bearer(make_token(SECRET, good, header=b"HS256 please")), "malformed"),
        ("payload not JSON", "/ws", bearer(make_token(SECRET, b"sub=mallory")), "malformed"),
        ("payload a JSON array", "/ws", bearer(make_token(SECRET, b'["sub","mallory"]')), "malformed"),
        ("sub not a string", "/ws", bearer(make_token(SECRET, {"sub": 42})), "malformed"),
        ("exp not a number", "/ws", bearer(make_token(SECRET, {"sub": "m", "exp": "never"})), "malformed"),
        ("rooms not an array", "/ws", bearer(make_token(SECRET, {"sub": "m", "rooms": "lobby"})), "malformed"),
        ("admin not a boolean", "/ws", bearer(make_token(SECRET, {"sub": "m", "admin": 1})), "malformed"),
        ("sub over 128 bytes", "/ws", bearer(make_token(SECRET, {"sub": "m" * 129})), "malformed"),
        ("missing sub", "/ws", bearer(make_token(SECRET, {"exp": t + 600, "pub": True})), "missing_sub"),
        ("empty sub", "/ws", bearer(make_token(SECRET, {"sub": "", "exp": t + 600})), "missing_sub"),
    ]
    return cases


class TokenFailureTest(AuthCase):
    def test_every_failure_is_a_silent_401_and_logged_by_name(self):
        gw = self.start_gateway("--jwt-secret", SECRET, threads=1)
        cases = failure_cases()
        seen_log = 0
        for what, path, headers, reason in cases:
            t0 = time.monotonic()
            self.assertRefused(gw.port, 401, path, headers, what)
            # the log line (at most 10 per second per worker: pace the refusals)
            deadline = time.monotonic() + 2.0
            while True:
                lines = REFUSAL_RE.findall(gw.log_text(limit=1 << 20))
                if len(lines) > seen_log or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            self.assertEqual(lines[seen_log:], [("401", reason)],
                             f"{what}: log lines for this refusal (expected reason {reason})")
            seen_log = len(lines)
            time.sleep(max(0.0, 0.12 - (time.monotonic() - t0)))
        # after all that, a valid token still works
        c = self.connect(gw.port, headers=bearer(make_token(SECRET, {"sub": "ok", "pub": True})))
        self.assertIdentity(c, "ok")
        c.close()
        totals, rows, log = self.stop_gateway(gw)
        self.assertEqual(totals["auth_failures"], len(cases), "auth_failures at exit")
        self.assertEqual(totals["origin_rejects"], 0, "origin_rejects at exit")
        self.assertEqual(totals["handshake_failures"], len(cases), "handshake_failures at exit")
        self.assertNotIn("mallory", log, "the log must name the reason, not echo token contents")

    def test_refusal_log_is_rate_limited_but_all_are_counted(self):
        gw = self.start_gateway("--jwt-secret", SECRET, threads=1)
        n = 60
        t0 = time.monotonic()
        for i in range(n):
            self.assertRefused(gw.port, 401, "/ws", bearer(make_token(OTHER_SECRET, {"sub": f"s{i}"})),
                               f"refusal {i}")
        took = time.monotonic() - t0
        totals, rows, log = self.stop_gateway(gw)
        lines = REFUSAL_RE.findall(log)
        self.assertEqual(totals["auth_failures"], n, "every refusal counted, logged or not")
        self.assertGreater(len(lines), 0, "no refusal was logged")
        self.assertEqual(set(lines), {("401", "bad_signature")})
        allowed = 10 * (int(took) + 2)   # 10 per second, windows need not align with ours
        if allowed >= n:
            self.skipTest(f"{n} refusals took {took:.1f}s: too slow to see the log limit")
        self.assertLessEqual(len(lines), allowed,
                             f"{len(lines)} refusal log lines in {took:.2f}s (at most 10/s)")

    def test_leeway_flag(self):
        gw = self.start_gateway("--jwt-secret", SECRET, "--jwt-leeway-s", "5", threads=1)
        t = now()
        self.assertRefused(gw.port, 401, "/ws", bearer(make_token(SECRET, {"sub": "a", "exp": t - 20})),
                           "expired 20 s ago, leeway 5 s")
        self.assertRefused(gw.port, 401, "/ws", bearer(make_token(SECRET, {"sub": "a", "nbf": t + 20})),
                           "valid in 20 s, leeway 5 s")
        self.assertRefused(gw.port, 401, "/ws", bearer(make_token(SECRET, {"sub": "a", "exp": t - 7})),
                           "expired 7 s ago, leeway 5 s")
        self.connect(gw.port, headers=bearer(make_token(SECRET, {"sub": "a", "exp": t + 60})))
        self.connect(gw.port, headers=bearer(make_token(SECRET, {"sub": "a", "exp": t - 2, "nbf": t + 2})))
        totals, rows, log = self.stop_gateway(gw)
        self.assertEqual(totals["auth_failures"], 3)
        self.assertEqual([r for _, r in REFUSAL_RE.findall(log)], ["expired", "not_yet_valid", "expired"])


# --------------------------------------------------------------------------------------
# 3. Origin allow-list
# --------------------------------------------------------------------------------------

class OriginTest(AuthCase):
    def test_origin_allow_list_before_token(self):
        gw = self.start_gateway("--jwt-secret", SECRET, "--allow-origin", ALLOWED_ORIGIN,
                                "--allow-origin", "http://localhost:3000", threads=2)
        tok = bearer(make_token(SECRET, {"sub": "web", "pub": True}))
        bad_tok = bearer(make_token(OTHER_SECRET, {"sub": "web"}))
        c = self.connect(gw.port, headers=[f"Origin: {ALLOWED_ORIGIN}"] + tok)
        self.assertIdentity(c, "web")
        self.connect(gw.port, headers=["Origin: http://localhost:3000"] + tok)
        self.connect(gw.port, headers=["Origin: HTTPS://APP.Example.COM"] + tok)   # case-insensitive
        refusals_403 = [
            ("other origin", ["Origin: https://evil.example.com"] + tok),
            ("allowed origin's subdomain", ["Origin: https://x.app.example.com"] + tok),
            ("other port", ["Origin: http://localhost:3001"] + tok),
            ("origin with a path", [f"Origin: {ALLOWED_ORIGIN}/"] + tok),
            ("missing origin", tok),
            ("null origin", ["Origin: null"] + tok),
            ("other origin, no token (403 beats 401)", ["Origin: https://evil.example.com"]),
            ("missing origin, bad token (403 beats 401)", bad_tok),
            ("missing origin, no token", []),
        ]
        for what, headers in refusals_403:
            self.assertRefused(gw.port, 403, "/ws", headers, what)
        refusals_401 = [
            ("allowed origin, no token", [f"Origin: {ALLOWED_ORIGIN}"]),
            ("allowed origin, bad token", [f"Origin: {ALLOWED_ORIGIN}"] + bad_tok),
        ]
        for what, headers in refusals_401:
            self.assertRefused(gw.port, 401, "/ws", headers, what)
        totals, rows, log = self.stop_gateway(gw)
        self.assertEqual(totals["origin_rejects"], len(refusals_403), "origin_rejects at exit")
        self.assertEqual(totals["auth_failures"], len(refusals_401), "auth_failures at exit")
        self.assertEqual(totals["handshake_failures"], len(refusals_403) + len(refusals_401))

    def test_origin_allow_list_in_anonymous_mode(self):
        gw = self.start_gateway("--allow-origin", ALLOWED_ORIGIN, threads=1)
        self.assertIdentity(self.connect(gw.port, "/ws?user=dev", headers=[f"Origin: {ALLOWED_ORIGIN}"]),
                            "dev")
        self.assertRefused(gw.port, 403, "/ws?user=dev", ["Origin: https://evil.example.com"], "other origin")
        self.assertRefused(gw.port, 403, "/ws?user=dev", [], "missing origin")
        self.assertRefused(gw.port, 403, "/ws?user=", ["Origin: https://evil.example.com"],
                           "other origin and a bad user: 403 first")
        totals, rows, log = self.stop_gateway(gw)
        self.assertEqual(totals["origin_rejects"], 3, "origin_rejects at exit")
        self.assertEqual(totals["auth_failures"], 0, "auth_failures at exit")

    def test_wildcard_origin(self):
        gw = self.start_gateway("--allow-origin", "*", threads=1)
        c = self.connect(gw.port, "/ws?user=w", headers=["Origin: https://anything.example"])
        self.assertIdentity(c, "w")
        c = self.connect(gw.port, "/ws?user=w2", headers=["Origin: null"])
        self.assertIdentity(c, "w2")
        totals, rows, _ = self.stop_gateway(gw)
        self.assertEqual(totals["origin_rejects"], 0)


# --------------------------------------------------------------------------------------
# 4. anonymous (development) mode
# --------------------------------------------------------------------------------------

class AnonymousTest(AuthCase):
    def test_anonymous_mode(self):
        gw = self.start_gateway(threads=2)
        self.assertIdentity(self.connect(gw.port, "/ws?user=alice"), "alice")
        self.assertIdentity(self.connect(gw.port, "/ws?format=json&user=b%C3%B6b+x"), "b\u00f6b x")
        self.assertIdentity(self.connect(gw.port, "/ws?user=" + "u" * 128), "u" * 128)
        # no user: a generated id, different per connection
        ids = []
        for _ in range(3):
            c = self.connect(gw.port, "/ws")
            room = f"anon-{os.urandom(4).hex()}"
            self.assertEqual(rq(c, "join", room=room)["type"], "ack")
            r = rq(c, "presence", room=room)
            self.assertEqual(len(r.get("users", [])), 1, f"presence: {r}")
            ids.append(r["users"][0])
            self.assertRegex(ids[-1], r"^anon-[0-9a-f]{16}$", "generated anonymous id")
            self.assertIdentity(c, ids[-1])
        self.assertEqual(len(set(ids)), 3, f"generated ids repeat: {ids}")
        # anonymous users may publish to joined rooms but never broadcast
        c = self.connect(gw.port, "/ws?user=anon-admin")
        r = rq(c, "broadcast", data=1)
        self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"), f"anonymous broadcast: {r}")
        # tokens are ignored in this mode (even invalid ones), the user parameter counts
        c = self.connect(gw.port, "/ws?user=carol&token=not.a.token",
                         headers=bearer(make_token(SECRET, {"sub": "root", "admin": True})))
        self.assertIdentity(c, "carol")
        r = rq(c, "broadcast", data=1)
        self.assertEqual((r["type"], r.get("code")), ("error", "forbidden"), f"token ignored: {r}")
        # refusals: bad format, bad user
        bad_format = ["/ws?format=xml", "/ws?user=alice&format=", "/ws?format=JSON"]
        bad_user = ["/ws?user=", "/ws?user=" + "u" * 129, "/ws?user=%ZZ", "/ws?user=%FF%FE",
                    "/ws?user=%C3"]
        for path in bad_format + bad_user:
            self.assertRefused(gw.port, 400, path, what=path)
        # binary format is a valid choice
        self.connect(gw.port, "/ws?format=binary&user=bin")
        totals, rows, log = self.stop_gateway(gw)
        self.assertEqual(totals["handshake_failures"], len(bad_format) + len(bad_user))
        self.assertEqual(totals["auth_failures"], len(bad_user), "bad user ids are auth failures")
        self.assertEqual(totals["origin_rejects"], 0)
        self.assertEqual(sorted({r for _, r in REFUSAL_RE.findall(log)}), ["bad_user"])


if __name__ == "__main__":
    unittest.main()
