"""Thread-per-core: one pinned worker per CPU, SO_REUSEPORT spreading connections.

Checks what the process really looks like from /proc while it runs (thread names,
CPU affinity of each worker), that connections land on every worker, and the
per-worker counters printed at exit.
"""

import os
import re
import socket
import unittest

from client_proto import parse_worker_stats
from wsgate_fixture import Gateway, RawWS


def allowed_cpus():
    return sorted(os.sched_getaffinity(0))


def worker_threads(pid):
    """{thread name: Cpus_allowed_list} for the gateway's worker threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except FileNotFoundError:
            continue
        if name.startswith("wsgate-w"):
            out[name] = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.M).group(1)
    return out


def stats(log):
    """Per-worker counters from the lines printed at exit, by worker index."""
    return {row["worker"]: row for row in parse_worker_stats(log)}


class Workers(unittest.TestCase):
    def test_one_pinned_worker_per_thread(self):
        cpus = allowed_cpus()
        n = max(2, len(cpus))
        gw = Gateway(threads=n).start()
        try:
            threads = worker_threads(gw.proc.pid)
            self.assertEqual(sorted(threads), [f"wsgate-w{i}" for i in range(n)])
            for i in range(n):
                # Worker i runs on the i-th CPU the process may use, and only there.
                self.assertEqual(threads[f"wsgate-w{i}"], str(cpus[i % len(cpus)]))
        finally:
            self.assertEqual(gw.stop(), 0)

    def test_default_threads_is_one_per_usable_cpu(self):
        gw = Gateway(threads=0).start()
        try:
            self.assertEqual(len(worker_threads(gw.proc.pid)), len(allowed_cpus()))
        finally:
            self.assertEqual(gw.stop(), 0)

    def test_reuseport_spreads_connections_and_counters_add_up(self):
        gw = Gateway(threads=2).start()
        conns = []
        try:
            for i in range(200):
                ws = RawWS.connect(gw.port, path="/echo")
                conns.append(ws)
            for i, ws in enumerate(conns):
                ws.send_text(f"m{i}")
            for i, ws in enumerate(conns):
                op, data = ws.recv_message()
                self.assertEqual(data, f"m{i}".encode())
            for ws in conns:
                ws.close_socket()
        finally:
            self.assertEqual(gw.stop(), 0)
        rows = stats(gw.log_text(100000))
        self.assertEqual(sorted(rows), [0, 1], gw.log_text())
        # The kernel hashes connections over the two listeners: both get a share.
        for w in rows.values():
            self.assertGreater(w["accepted"], 20, rows)
            self.assertEqual(w["accepted"], w["closed"], rows)
        # 200 upgrades plus the fixture's /healthz probes.
        self.assertGreaterEqual(sum(w["accepted"] for w in rows.values()), 200)
        self.assertEqual(sum(w["messages_in"] for w in rows.values()), 200)
        self.assertEqual(sum(w["messages_out"] for w in rows.values()), 200)


class FdLimitGateway(Gateway):
    """A gateway whose open-file limit is tiny, so accept() fails with EMFILE."""

    def __init__(self, nofile, **kw):
        super().__init__(**kw)
        self.nofile = nofile

    def command(self, port):
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] + super().command(port)


class AcceptErrors(unittest.TestCase):
    def test_fd_table_full_then_recovers(self):
        gw = FdLimitGateway(48, threads=1).start()
        clients = []
        try:
            # More connections than the gateway has descriptors: the kernel queues
            # them, accept() fails with EMFILE, and the gateway must neither spin
            # nor stop accepting for good.
            for _ in range(80):
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                clients.append(s)
            for s in clients:
                s.close()
            clients.clear()
            # Once descriptors are free again, a new client is served (the accept
            # is re-armed by the worker's timer tick).
            ws = RawWS.connect(gw.port, path="/echo", timeout=10)
            ws.send_text("after emfile")
            op, data = ws.recv_message(timeout=10)
            self.assertEqual(data, b"after emfile")
            ws.close_socket()
        finally:
            for s in clients:
                s.close()
            self.assertEqual(gw.stop(), 0, gw.log_text())
        log = gw.log_text(100000)
        rows = stats(log)
        self.assertGreater(rows[0]["accept_errors"], 0, log)
        # Rate-limited: a handful of log lines, not one per failed accept.
        self.assertLessEqual(log.count("accept: Too many open files"), 10, log)


if __name__ == "__main__":
    unittest.main()
