"""systemd notify protocol (Type=notify), observed for real: the test plays systemd's part by
binding the datagram socket named in NOTIFY_SOCKET and reading what the gateway sends.

READY=1 (with a STATUS) once every worker listens; STATUS= with connection counts when they
change; WATCHDOG=1 every WATCHDOG_USEC/4 while every worker loop turns (and only when
WATCHDOG_USEC is set for this process); at SIGTERM STOPPING=1, then EXTEND_TIMEOUT_USEC= covering
the drain while it lasts.
"""

import os
import re
import signal
import socket
import tempfile
import time
import unittest

from wsgate_fixture import Gateway, RawWS


class NotifySocket:
    def __init__(self, test: unittest.TestCase):
        d = tempfile.mkdtemp(prefix="wsgate-notify-")
        self.path = os.path.join(d, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []
        test.addCleanup(self.sock.close)
        test.addCleanup(os.rmdir, d)
        test.addCleanup(os.unlink, self.path)

    def read_for(self, seconds: float, until=None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            self.messages.append((time.monotonic(), data.decode()))
            if until and until(data.decode()):
                return

    def fields(self) -> list[tuple[float, str, str]]:
        """(time, key, value) for each assignment of each message, in order."""
        out = []
        for t, m in self.messages:
            for line in m.split("\n"):
                if line:
                    k, _, v = line.partition("=")
                    out.append((t, k, v))
        return out


class NotifyTest(unittest.TestCase):
    def test_ready_status_watchdog_stopping_in_order(self):
        ns = NotifySocket(self)
        gw = Gateway(threads=2, drain_delay_ms=1500,
                     env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": None})
        gw.start()
        self.addCleanup(gw.kill)
        ns.read_for(5, until=lambda m: "READY=1" in m)
        first = ns.messages[0][1] if ns.messages else ""
        self.assertIn("READY=1", first, f"READY must come first: {ns.messages}")
        self.assertRegex(first, r"STATUS=0 WebSocket connections \(\d+ TCP\) on 2 workers")
        clients = [RawWS.connect(gw.port, "/echo") for _ in range(3)]
        for c in clients:
            self.addCleanup(c.sock.close)
        ns.read_for(6, until=lambda m: "STATUS=3 WebSocket connections" in m)
        statuses = [v for _, k, v in ns.fields() if k == "STATUS"]
        self.assertTrue(any(v.startswith("3 WebSocket connections") for v in statuses), statuses)
        ns.read_for(0.6)
        gw.proc.send_signal(signal.SIGTERM)
        ns.read_for(15, until=lambda m: False)  # until the gateway exits and nothing more comes
        self.assertEqual(gw.proc.wait(15), 0, gw.log_text())
        f = ns.fields()
        keys = [k for _, k, _ in f]
        self.assertEqual(keys.count("READY"), 1)
        i_ready, i_stop = keys.index("READY"), keys.index("STOPPING")
        self.assertLess(i_ready, i_stop)
        extends = [(i, int(v)) for i, (_, k, v) in enumerate(f) if k == "EXTEND_TIMEOUT_USEC"]
        self.assertTrue(extends, "EXTEND_TIMEOUT_USEC during the drain")
        self.assertTrue(all(i > i_stop for i, _ in extends), "extensions come after STOPPING")
        # The first extension covers the drain: delay 1.5 s + spread 0 + close timeout 3 s (+ margins).
        self.assertGreaterEqual(extends[0][1], 4_500_000)
        self.assertLessEqual(extends[0][1], 30_000_000)
        self.assertTrue(any(v.startswith("draining: ") for _, k, v in f[i_stop:] if k == "STATUS"))
        # Keep-alives: several before the signal, at about WATCHDOG_USEC/4 = 100 ms, and during the drain.
        wd = [t for t, k, _ in f if k == "WATCHDOG"]
        t_stop = f[i_stop][0]
        before = [t for t in wd if t < t_stop]
        self.assertGreaterEqual(len(before), 10, f"{len(before)} keep-alives before SIGTERM")
        gaps = [b - a for a, b in zip(before, before[1:])]
        self.assertLess(max(gaps), 0.35, f"a keep-alive gap near the 0.4 s watchdog: {max(gaps):.3f}s")
        self.assertTrue(any(t > t_stop for t in wd), "keep-alives continue while draining")

    def test_no_watchdog_unless_asked_for_this_process(self):
        for env in ({"WATCHDOG_USEC": None}, {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}):
            with self.subTest(env=env):
                ns = NotifySocket(self)
                gw = Gateway(threads=1, env={"NOTIFY_SOCKET": ns.path, **env}).start()
                self.addCleanup(gw.kill)
                ns.read_for(1.5)
                self.assertEqual(gw.stop(), 0)
                ns.read_for(1)
                keys = [k for _, k, _ in ns.fields()]
                self.assertIn("READY", keys)
                self.assertIn("STOPPING", keys)
                self.assertNotIn("WATCHDOG", keys)

    def test_without_notify_socket_nothing_breaks(self):
        gw = Gateway(threads=1, env={"NOTIFY_SOCKET": None, "WATCHDOG_USEC": "100000"}).start()
        self.addCleanup(gw.kill)
        self.assertTrue(gw.healthy())
        self.assertEqual(gw.stop(), 0)
        self.assertRegex(gw.log_text(), re.compile(r"event=listening .*workers=1"))


if __name__ == "__main__":
    unittest.main()
