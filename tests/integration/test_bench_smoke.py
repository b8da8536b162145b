"""The benchmark harness must keep working: wsgate-bench against the real gateway.

Not a performance test (no number is asserted): it checks that the load generator
connects, upgrades, echoes without a corrupt payload and reports JSON, for each
scenario (echo, idle, handshake, fanout, fanout across two gateways and Redis), and that the
raw-TCP ceiling server echoes too.
Skipped where the benchmark tools are not built (the sanitizer build).
"""

import json
import os
import subprocess
import unittest

from test_redis import REDIS, RedisServer
from wsgate_fixture import Gateway, free_port, gateway_binary

BENCH = os.environ.get("WSGATE_BENCH_BIN", "")
RAW = os.environ.get("WSGATE_RAW_ECHO_BIN", "")


def run_json(*args, timeout=60):
    p = subprocess.run([BENCH, *args, "--json"], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"wsgate-bench {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return json.loads(p.stdout)


@unittest.skipUnless(BENCH and os.path.exists(BENCH), "wsgate-bench not built")
class BenchSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = Gateway(threads=1).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.gw.stop()
        assert rc == 0, f"gateway exit {rc}\n{cls.gw.log_text()}"

    def test_echo_ws(self):
        for size in (16, 1024, 70000):
            r = run_json("echo", "--url", f"ws://127.0.0.1:{self.gw.port}/echo", "--connections", "20",
                         "--size", str(size), "--inflight", "2", "--duration", "0.5", "--warmup", "0.1")
            self.assertGreater(r["messages"], 0)
            self.assertEqual(r["bad_payloads"], 0)
            self.assertEqual(r["errors"], 0)
            self.assertEqual(r["connected"], 20)
            self.assertLessEqual(r["latency_us_p50"], r["latency_us_p99"])

    def test_idle_reports_rss_per_connection(self):
        r = run_json("idle", "--url", f"ws://127.0.0.1:{self.gw.port}/ws", "--connections", "500",
                     "--pid", str(self.gw.proc.pid), "--hold", "0.2")
        self.assertEqual(r["open"], 500)
        self.assertGreater(r["server_rss_after_bytes"], 0)

    def test_handshake_rate(self):
        r = run_json("handshake", "--url", f"ws://127.0.0.1:{self.gw.port}/ws", "--duration", "0.5",
                     "--concurrency", "8")
        self.assertGreater(r["handshakes"], 0)
        self.assertEqual(r["handshake_failed"], 0)

    def test_fanout_exactly_once(self):
        # Its own gateway: fan-out needs the rate limit off and two workers, so that
        # publications cross workers. The scenario fails itself (exit 1) on any lost,
        # duplicated, out-of-order, misrouted or corrupt delivery.
        gw = Gateway("--rate-limit", "0", threads=2).start()
        try:
            base = ["fanout", "--rooms", "3", "--subscribers", "20", "--size", "100",
                    "--duration", "0.5", "--warmup", "0.1", "--threads", "2", "--user-param"]
            runs = [
                run_json(*base, "--url", f"ws://127.0.0.1:{gw.port}/ws", "--inflight", "8"),
                run_json(*base, "--url", f"ws://127.0.0.1:{gw.port}/ws?batch=1", "--rate", "2000",
                         "--publishers", "2"),
            ]
            for r in runs:
                self.assertGreater(r["publications_total"], 0)
                self.assertEqual(r["deliveries_total"], r["publications_total"] * 20)
                for k in ("lost", "duplicates", "out_of_order", "misrouted", "bad_payloads",
                          "malformed", "server_errors", "errors"):
                    self.assertEqual(r[k], 0, k)
        finally:
            rc = gw.stop()
            self.assertEqual(rc, 0, gw.log_text())

    @unittest.skipUnless(REDIS, "redis-server not installed")
    def test_fanout_across_gateways(self):
        # --publish-url: publishers on gateway A, subscribers on gateway B, one Redis
        # between them (bench/run_backplane.sh); exactly once and in order over Redis.
        redis = RedisServer().start()
        url = f"redis://127.0.0.1:{redis.port}"
        a = Gateway("--rate-limit", "0", "--redis", url, "--server-id", "A", threads=2).start()
        b = Gateway("--rate-limit", "0", "--redis", url, "--server-id", "B", threads=2).start()
        try:
            r = run_json("fanout", "--rooms", "3", "--subscribers", "20", "--size", "100", "--duration", "0.5",
                         "--warmup", "0.1", "--threads", "2", "--user-param", "--rate", "1500", "--settle", "0.3",
                         "--url", f"ws://127.0.0.1:{b.port}/ws", "--publish-url", f"ws://127.0.0.1:{a.port}/ws",
                         "--pid", f"{a.proc.pid},{b.proc.pid},{redis.proc.pid}")
            self.assertGreater(r["publications_total"], 0)
            self.assertEqual(r["deliveries_total"], r["publications_total"] * 20)
            self.assertGreater(r["server_rss_bytes"], 0)
            for k in ("lost", "duplicates", "out_of_order", "misrouted", "bad_payloads", "malformed",
                      "server_errors", "errors"):
                self.assertEqual(r[k], 0, k)
        finally:
            for g in (a, b):
                self.assertEqual(g.stop(), 0, g.log_text())
            redis.stop()

    @unittest.skipUnless(RAW and os.path.exists(RAW), "raw-echo-server not built")
    def test_raw_ceiling_server(self):
        port = free_port()
        srv = subprocess.Popen([RAW, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            r = None
            for _ in range(50):
                try:
                    r = run_json("echo", "--raw", "--url", f"tcp://127.0.0.1:{port}", "--connections", "10",
                                 "--size", "64", "--duration", "0.3", "--warmup", "0.1")
                    break
                except AssertionError:
                    if srv.poll() is not None:
                        raise
                    import time
                    time.sleep(0.1)
            self.assertIsNotNone(r)
            self.assertGreater(r["messages"], 0)
            self.assertEqual(r["bad_payloads"], 0)
        finally:
            srv.terminate()
            srv.wait(timeout=5)


class DrainBenchSmoke(unittest.TestCase):
    """bench/drain.py (the drain measurement of issue 5) on a small scale: it starts its own two
    gateways from WSGATE_BIN; every client gets the notice and the close 1001 and reconnects."""

    def test_drain_bench(self):
        script = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "drain.py")
        p = subprocess.run(["/usr/bin/python3", script, "--binary", gateway_binary(), "--connections", "300",
                            "--drain-delay-ms", "300", "--drain-spread-ms", "300", "--reconnect-jitter-ms", "300",
                            "--settle", "0.2", "--json"], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual((r["connected_to_a"], r["notices"], r["closed"], r["reconnected_to_b"]), (300,) * 4, r)
        self.assertEqual(r["close_codes"], {"1001": 300})
        self.assertGreaterEqual(r["notice_first_s"], 0.25, "no notice before the drain delay")
        self.assertEqual(r["a_exit_status"], 0)


if __name__ == "__main__":
    unittest.main()
