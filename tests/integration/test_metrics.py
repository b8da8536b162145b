"""/metrics: the Prometheus text exposition format (version 0.0.4), checked by a strict parser.

The parser follows the format's rules (https://prometheus.io/docs/instrumenting/exposition_formats/):
metric and label names, `# HELP` / `# TYPE` at most once per family and before its samples, samples
of a family contiguous, label values escaped, values that parse as floats, no duplicate series,
counters named `_total`, a newline at the end. Then the counters are checked against traffic.
"""

import math
import re
import signal
import socket
import time
import unittest

from client_proto import Client
from test_redis import RedisServer
from wsgate_fixture import Gateway, RawWS, http_exchange

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')


def parse_exposition(text: str) -> dict:
    """family -> {"type", "help", "samples": {(name, labels tuple): float}}; raises AssertionError."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, dict] = {}
    order: list[str] = []
    closed: set[str] = set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line == line.strip() and line, f"line {n}: empty or padded: {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                assert len(parts) >= 3 and NAME.fullmatch(parts[2]), f"line {n}: bad {parts[1]}: {line!r}"
                fam = families.setdefault(parts[2], {"type": None, "help": None, "samples": {}})
                key = parts[1].lower()
                assert fam[key] is None, f"line {n}: second {parts[1]} for {parts[2]}"
                assert not fam["samples"], f"line {n}: {parts[1]} after samples of {parts[2]}"
                if key == "type":
                    assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary",
                                                            "untyped"), f"line {n}: bad TYPE {line!r}"
                fam[key] = parts[3] if len(parts) == 4 else ""
                if parts[2] not in order:
                    order.append(parts[2])
            continue
        m = NAME.match(line)
        assert m, f"line {n}: bad metric name: {line!r}"
        name, rest = m.group(0), line[m.end():]
        labels = ()
        if rest.startswith("{"):
            end = rest.index("}")
            body, rest = rest[1:end], rest[end + 1:]
            pairs = []
            pos = 0
            while pos < len(body):
                lm = LABEL.match(body, pos)
                assert lm, f"line {n}: bad label at {body[pos:]!r}"
                pairs.append((lm.group(1), lm.group(2)))
                pos = lm.end()
                if pos < len(body):
                    assert body[pos] == ",", f"line {n}: labels must be comma separated"
                    pos += 1
            assert len({k for k, _ in pairs}) == len(pairs), f"line {n}: repeated label"
            labels = tuple(sorted(pairs))
        assert rest.startswith(" "), f"line {n}: no space before the value"
        fields = rest[1:].split(" ")
        assert 1 <= len(fields) <= 2, f"line {n}: value [timestamp] expected"
        value = float(fields[0])  # raises on garbage
        assert not math.isnan(value) or fields[0] == "NaN"
        family = name
        for suffix in ("_bucket", "_sum", "_count"):  # a histogram's series belong to its family
            base = name[:-len(suffix)]
            if name.endswith(suffix) and base in families and families[base]["type"] == "histogram":
                family = base
                break
        assert family in families and families[family]["type"], f"line {n}: sample without TYPE: {name}"
        if families[family]["type"] == "histogram":
            assert name != family, f"line {n}: a histogram has only _bucket, _sum and _count series"
            if name.endswith("_bucket"):
                assert "le" in dict(labels), f"line {n}: a bucket without le"
                float(dict(labels)["le"])  # raises on garbage ("+Inf" parses)
        if current != family:
            assert family not in closed, f"line {n}: samples of {family} are not contiguous"
            if current:
                closed.add(current)
            current = family
        series = families[family]["samples"]
        assert (name, labels) not in series, f"line {n}: duplicate series {name}{labels}"
        series[(name, labels)] = value
    for fam, f in families.items():
        if f["type"] == "histogram":
            check_histogram(fam, f["samples"])
        if f["type"] == "counter":
            assert fam.endswith("_total"), f"counter {fam} must end in _total"
            assert all(v >= 0 for v in f["samples"].values()), f"negative counter {fam}"
    return families


HIST = ('# HELP h x\n# TYPE h histogram\nh_bucket{le="0.1"} 1\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 3\n'
        'h_sum 0.5\nh_count 3\n')


def check_histogram(fam: str, samples: dict) -> None:
    """Per label set (le aside): buckets cumulative in increasing le, the last +Inf, _count ==
    the +Inf bucket, a _sum."""
    groups: dict[tuple, dict] = {}
    for (name, labels), v in samples.items():
        rest = tuple(kv for kv in labels if kv[0] != "le")
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if name.endswith("_bucket"):
            g["buckets"].append((float(dict(labels)["le"]), v))
        elif name.endswith("_sum"):
            g["sum"] = v
        else:
            g["count"] = v
    for rest, g in groups.items():
        b = sorted(g["buckets"])
        assert b and b[-1][0] == math.inf, f"{fam}{rest}: no +Inf bucket"
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), f"{fam}{rest}: buckets not cumulative"
        assert g["count"] == b[-1][1], f"{fam}{rest}: _count != +Inf bucket"
        assert g["sum"] is not None and g["sum"] >= 0, f"{fam}{rest}: no _sum"


class MetricsTest(unittest.TestCase):
    def scrape(self, gw: Gateway) -> dict:
        r = http_exchange(gw.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", wait_close=0)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        return parse_exposition(r.body.decode())

    def total(self, fams: dict, name: str) -> float:
        return sum(fams[name]["samples"].values())

    def test_exposition_is_valid_and_counts(self):
        gw = Gateway("--server-id", "metrics-gw", threads=2).start()
        self.addCleanup(gw.kill)
        before = self.scrape(gw)
        self.assertEqual(before["wsgate_draining"]["samples"][("wsgate_draining", ())], 0)
        self.assertEqual({labels for _, labels in before["wsgate_accepted_total"]["samples"]},
                         {(("worker", "0"),), (("worker", "1"),)}, "one sample per worker")
        clients = [Client.connect(gw.port, user=f"m{i}") for i in range(4)]
        for c in clients:
            self.addCleanup(c.sock.close)
            self.assertEqual(c.request("join", id=1, room="r")["type"], "ack")
            self.assertEqual(c.request("nope", id=2)["type"], "error")
        after = self.scrape(gw)
        open_now = self.total(after, "wsgate_connections_open")
        self.assertTrue(4 <= open_now <= 5, f"{open_now}: the 4 clients (and this scrape)")
        accepted = self.total(after, "wsgate_accepted_total") - self.total(before, "wsgate_accepted_total")
        self.assertGreaterEqual(accepted, 4)
        self.assertGreaterEqual(self.total(after, "wsgate_messages_in_total"), 8)
        self.assertGreaterEqual(self.total(after, "wsgate_requests_rejected_total"), 4)
        for fam in ("wsgate_heartbeat_timeouts_total", "wsgate_redis_connects_total", "wsgate_drain_cut_total",
                    "wsgate_bytes_in_total", "wsgate_bytes_out_total", "wsgate_redis_rtt_seconds"):
            self.assertIn(fam, after)
            self.assertTrue(after[fam]["help"], f"{fam} has a HELP text")
        self.assertGreater(self.total(after, "wsgate_bytes_in_total"), 4 * 150, "upgrade requests + messages")
        self.assertGreater(self.total(after, "wsgate_bytes_out_total"), 4 * 129, "101 responses + replies")
        # Rooms and users are gauges refreshed on each worker's 100 ms tick.
        deadline = time.monotonic() + 3
        while True:
            g = self.scrape(gw)
            rooms = self.total(g, "wsgate_rooms")
            users = self.total(g, "wsgate_users")
            if (rooms, users) == (self.expected_rooms(g), 4) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(users, 4, "four users, one connection each")
        self.assertEqual(rooms, self.expected_rooms(g), "room r on every worker holding one of its members")
        self.assertEqual(g["wsgate_redis_rtt_seconds"]["type"], "histogram")
        info = g["wsgate_info"]["samples"]
        self.assertEqual(len(info), 1)
        (_, labels), value = next(iter(info.items()))
        self.assertEqual((dict(labels)["server_id"], value), ("metrics-gw", 1))
        self.assertRegex(dict(labels)["version"], r"^\d+\.\d+\.\d+$")

    @staticmethod
    def expected_rooms(fams: dict) -> int:
        # Room r exists once on each worker that holds one of the 4 members.
        return sum(1 for (_, labels), v in fams["wsgate_users"]["samples"].items() if v > 0)

    def test_redis_round_trip_histogram(self):
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        gw = Gateway("--redis", f"redis://127.0.0.1:{redis.port}", threads=2).start()
        self.addCleanup(gw.kill)
        deadline = time.monotonic() + 10
        while True:  # a PING per worker per second once connected
            fams = self.scrape(gw)
            counts = {dict(l)["worker"]: v for (n, l), v in fams["wsgate_redis_rtt_seconds"]["samples"].items()
                      if n.endswith("_count")}
            if min(counts.values()) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(set(counts), {"0", "1"})
        self.assertGreaterEqual(min(counts.values()), 2, counts)
        sums = [v for (n, _), v in fams["wsgate_redis_rtt_seconds"]["samples"].items() if n.endswith("_sum")]
        self.assertTrue(all(0 < s < 1 for s in sums), f"loopback round trips: {sums}")
        self.assertEqual(gw.stop(), 0)

    def test_refused_upgrades_and_closes_are_counted_by_status_and_code(self):
        gw = Gateway("--jwt-secret", "k" * 32, threads=1).start()
        self.addCleanup(gw.kill)
        for _ in range(3):  # no token: 401
            r = http_exchange(gw.port, b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                       b"Sec-WebSocket-Version: 13\r\n\r\n")
            self.assertEqual(r.status, 401)
        r = http_exchange(gw.port, b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(r.status, 404)
        # /echo needs no token: closes with 1000 (client first), 1001 and 4000 (application, "other").
        for code in (1000, 1001, 4000):
            ws = RawWS.connect(gw.port, "/echo")
            ws.send_close(code)
            f = ws.recv_frame(3)
            self.assertEqual(f.close_code, code)
            ws.sock.close()
        deadline = time.monotonic() + 3
        while True:
            fams = self.scrape(gw)
            by_code = {dict(l)["code"]: v for (_, l), v in
                       fams["wsgate_connections_closed_by_code_total"]["samples"].items()}
            if by_code["other"] >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        by_status = {dict(l)["status"]: v for (_, l), v in
                     fams["wsgate_handshake_failures_by_status_total"]["samples"].items()}
        self.assertEqual(by_status["401"], 3)
        self.assertEqual(by_status["404"], 1)
        self.assertEqual(sum(by_status.values()), self.total(fams, "wsgate_handshake_failures_total"))
        self.assertEqual((by_code["1000"], by_code["1001"], by_code["other"]), (1, 1, 1), by_code)
        self.assertEqual(gw.stop(), 0)

    def test_parser_rejects_what_prometheus_rejects(self):
        parse_exposition(HIST)
        good = "# HELP a_total x\n# TYPE a_total counter\na_total{w=\"1\"} 3\n"
        parse_exposition(good)
        for bad in (good[:-1],                                           # no final newline
                    good + "a_total{w=\"1\"} 4\n",                        # duplicate series
                    "a_total 1\n",                                       # no TYPE
                    "# TYPE a counter\na 1\n",                           # counter without _total
                    good.replace("3", "three"),                          # bad value
                    good.replace('w="1"', "w=1"),                        # unquoted label value
                    good + "# TYPE b gauge\nb 1\na_total{w=\"2\"} 1\n",  # family not contiguous
                    HIST.replace('le="+Inf"} 3', 'le="+Inf"} 1'),           # buckets not cumulative
                    HIST.replace("h_count 3", "h_count 4"),                # _count != +Inf bucket
                    HIST.replace('h_bucket{le="+Inf"} 3\n', ""),           # no +Inf bucket
                    HIST.replace("h_sum 0.5\n", "h 1\n")):                # a bare histogram sample
            with self.assertRaises((AssertionError, ValueError), msg=bad):
                parse_exposition(bad)

    def test_draining_gauge(self):
        gw = Gateway(threads=1, drain_delay_ms=3000).start()
        self.addCleanup(gw.kill)
        early = socket.create_connection(("127.0.0.1", gw.port))  # accepted before the signal
        self.addCleanup(early.close)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        early.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        early.settimeout(3)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            chunk = early.recv(65536)
            if not chunk:
                break
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[1].decode()
        fams = parse_exposition(body)
        self.assertEqual(fams["wsgate_draining"]["samples"][("wsgate_draining", ())], 1)
        self.assertEqual(gw.proc.wait(15), 0)


if __name__ == "__main__":
    unittest.main()
