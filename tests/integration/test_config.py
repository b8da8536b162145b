"""Configuration: the TOML file, flags over it, --check-config, --print-config (SPEC section 8),
and the logs (one key=value line per event; connection events at debug only).

Every option has a key and a flag (core/options.h); an unknown key, a wrong type or a value out
of range is an error naming the key and its line; the shipped example (systemd/wsgate.toml)
documents every key at its default.
"""

import os
import re
import subprocess
import tempfile
import time
import tomllib
import unittest

from wsgate_fixture import OP_TEXT, Gateway, RawWS, gateway_binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "systemd", "wsgate.toml")
META_FLAGS = {"--help", "--version", "--config", "--check-config", "--print-config"}


def run(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([gateway_binary(), *args], capture_output=True, text=True, timeout=timeout)


def flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


class ConfigFileTest(unittest.TestCase):
    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(prefix="wsgate-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def assertRefused(self, text: str, *needles: str) -> str:
        path = self.write(text)
        p = run("--config", path, "--check-config")
        self.assertEqual(p.returncode, 2, f"{text!r} was accepted: {p.stderr}")
        for n in needles:
            self.assertIn(n.replace("FILE", path), p.stderr)
        return p.stderr

    def test_example_config_documents_every_key_at_its_default(self):
        p = run("--config", EXAMPLE, "--check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration OK", p.stderr)
        with open(EXAMPLE, "rb") as f:
            example = flatten(tomllib.load(f))
        printed = run("--print-config", "--server-id", "x")
        self.assertEqual(printed.returncode, 0, printed.stderr)
        defaults = flatten(tomllib.loads(printed.stdout))  # --print-config is valid TOML
        self.assertEqual(set(example), set(defaults), "the example names every key, and only keys")
        defaults["server_id"] = ""  # empty in the file means hostname-pid
        self.assertEqual(example, defaults, "the example's values are the defaults")
        # Every key's comment block in the example names its flag.
        with open(EXAMPLE) as f:
            text = f.read()
        for flag in re.findall(r"# (--[a-z-]+)$", printed.stdout, re.M):
            self.assertIn(flag, text, f"the example does not mention {flag}")

    def test_every_flag_has_a_key(self):
        helptext = run("--help").stdout
        flags = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", helptext, re.M)) - META_FLAGS
        printed = run("--print-config").stdout
        keyed = set(re.findall(r"# (--[a-z-]+)$", printed, re.M))
        self.assertTrue(len(flags) >= 25, flags)
        self.assertEqual(flags, keyed, "flags without a TOML key (or keys without a flag)")

    def test_file_sets_values_and_flags_override_it(self):
        path = self.write('threads = 1\n[limits]\nmax_message = 1000\n[heartbeat]\nping_interval_s = 7\n')
        p = run("--config", path, "--print-config", "--ping-interval-s", "9")
        self.assertEqual(p.returncode, 0, p.stderr)
        eff = flatten(tomllib.loads(p.stdout))
        self.assertEqual((eff["threads"], eff["limits.max_message"], eff["heartbeat.ping_interval_s"]), (1, 1000, 9))
        # And the running gateway uses them: a 2,000-byte message is over the file's limit (1009)...
        gw = Gateway("--config", path, threads=1).start()
        self.addCleanup(gw.kill)
        ws = RawWS.connect(gw.port, "/echo")
        ws.send_text("x" * 2000)
        f = ws.recv_frame(3)
        self.assertEqual((f.opcode, f.close_code), (0x8, 1009))
        ws.sock.close()
        self.assertEqual(gw.stop(), 0)
        # ... unless a flag raises it.
        gw = Gateway("--config", path, "--max-message", "4096", threads=1).start()
        self.addCleanup(gw.kill)
        ws = RawWS.connect(gw.port, "/echo")
        ws.send_text("y" * 2000)
        self.assertEqual(ws.recv_message(3), (OP_TEXT, b"y" * 2000))
        ws.sock.close()
        self.assertEqual(gw.stop(), 0)

    def test_bool_flag_overrides_file_both_ways(self):
        path = self.write("echo = true\n")
        on = flatten(tomllib.loads(run("--config", path, "--print-config").stdout))
        off = flatten(tomllib.loads(run("--config", path, "--no-echo", "--print-config").stdout))
        self.assertEqual((on["echo"], off["echo"]), (True, False))

    def test_errors_name_key_and_line(self):
        self.assertRefused('listen = "127.0.0.1:1"\n\n[limits]\nmax_mesage = 5\n',
                           "FILE:4: unknown key 'limits.max_mesage'", "did you mean 'limits.max_message'")
        self.assertRefused('[limits]\nping_interval_s = 5\n', "FILE:2: unknown key 'limits.ping_interval_s'",
                           "did you mean 'heartbeat.ping_interval_s'")
        self.assertRefused('threads = "two"\n', "FILE:1: 'threads' must be an integer, got a string")
        self.assertRefused('echo = 1\n', "FILE:1: 'echo' must be a boolean")
        self.assertRefused('\n[limits]\nmax_message = 0\n', "FILE:3: 'limits.max_message' = 0 is out of range [1, ")
        self.assertRefused('[heartbeat]\nping_interval_s = -1\n', "FILE:2: 'heartbeat.ping_interval_s' = -1 is out of range")
        self.assertRefused('[limits]\nslow_consumer = "maybe"\n',
                           "FILE:2: 'limits.slow_consumer' = \"maybe\" is not one of close, drop")
        self.assertRefused('[auth]\nallow_origins = "https://a"\n', "FILE:2: 'auth.allow_origins' must be an array")
        self.assertRefused('[nope]\nx = 1\n', "FILE:1: unknown section [nope]")
        self.assertRefused('limits = 3\n', "FILE:1: 'limits' is a section")
        self.assertRefused('threads = 1\nthreads = 2\n', "FILE:2:")  # duplicate key: a TOML error
        self.assertRefused('a = [\n', "FILE:1:")                     # syntax error with line:column
        # Several problems: all reported, in file order, with a count.
        err = self.assertRefused('threads = "x"\necho = 2\n', "FILE:1:", "FILE:2:", "2 errors in FILE")
        self.assertLess(err.index(":1:"), err.index(":2:"))

    def test_validation_errors_name_the_source(self):
        # Checked after both sources are read: the message says which one holds the value.
        self.assertRefused('\nlisten = "nowhere"\n', "FILE:2: listen: expected HOST:PORT")
        path = self.write('\nlisten = "nowhere"\n')
        p = run("--config", path, "--listen", "bad", "--check-config")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--listen: expected HOST:PORT, got 'bad'", p.stderr)
        self.assertRefused('[io]\nrecv_buffers = 1000\n', "FILE:2: io.recv_buffers: 1000 is not a power of two")
        self.assertRefused('server_id = "a:b"\n', "FILE:1: server_id:")
        self.assertRefused('[redis]\nurl = "http://x"\n', "FILE:2: redis.url:")

    def test_missing_file_and_bad_flag(self):
        p = run("--config", "/nonexistent/wsgate.toml", "--check-config")
        self.assertEqual(p.returncode, 2)
        self.assertIn("/nonexistent/wsgate.toml", p.stderr)
        p = run("--max-message", "0", "--check-config")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--max-message", p.stderr)

    def test_print_config_redacts_secrets(self):
        path = self.write('[auth]\njwt_secret = "hunter2hunter2"\n[redis]\nurl = "redis://app:pw123@127.0.0.1:6379/2"\n')
        p = run("--config", path, "--print-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("hunter2", p.stdout)
        self.assertNotIn("pw123", p.stdout)
        eff = flatten(tomllib.loads(p.stdout))
        self.assertEqual(eff["redis.url"], "redis://app:<redacted>@127.0.0.1:6379/2")
        self.assertEqual(eff["auth.jwt_secret"], "<redacted>")


class LogTest(unittest.TestCase):
    LINE = re.compile(r"^ts=\S+ level=(error|warn|info|debug) event=[a-z_]+( [a-z_]+=(\"[^\"]*\"|\S+))*$")

    def lines(self, gw: Gateway) -> list[str]:
        return [l for l in gw.log_text(limit=1 << 20).splitlines() if l]

    def exercise(self, gw: Gateway, messages: int) -> None:
        ws = RawWS.connect(gw.port, "/echo")
        for i in range(messages):
            ws.send_text(f"m{i}")
            self.assertEqual(ws.recv_message(3), (OP_TEXT, f"m{i}".encode()))
        ws.send_close(1000)
        self.assertEqual(ws.recv_frame(3).close_code, 1000)
        ws.sock.close()
        bad = RawWS.open(gw.port)
        bad.send_raw(b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        bad.wait_tcp_close(3)
        bad.sock.close()

    def test_info_level_logs_events_not_connections_or_messages(self):
        gw = Gateway(threads=1).start()
        self.addCleanup(gw.kill)
        self.exercise(gw, 200)
        self.assertEqual(gw.stop(), 0)
        lines = self.lines(gw)
        for l in lines:
            self.assertRegex(l, self.LINE)
        events = [re.search(r"event=(\S+)", l).group(1) for l in lines]
        self.assertEqual(events[0], "listening")
        self.assertIn("drain_started", events)
        self.assertEqual(events[-1], "exit")
        self.assertNotIn("ws_open", events)
        self.assertLess(len(lines), 12, "a handful of lines for a whole run of 200 messages")

    def test_debug_level_logs_connection_events(self):
        path = tempfile.mktemp(suffix=".toml")
        with open(path, "w") as f:
            f.write('[log]\nlevel = "debug"\n')
        self.addCleanup(os.unlink, path)
        gw = Gateway("--config", path, threads=1).start()
        self.addCleanup(gw.kill)
        self.exercise(gw, 50)
        deadline = time.monotonic() + 3
        while "event=ws_closed" not in gw.log_text(limit=1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(gw.stop(), 0)
        text = gw.log_text(limit=1 << 20)
        self.assertRegex(text, r"level=debug event=ws_open worker=0 conn=\d+ path=echo")
        self.assertRegex(text, r"level=debug event=ws_closed worker=0 conn=\d+ code=1000 peer_code=1000")
        self.assertRegex(text, r"level=debug event=upgrade_failed worker=0 status=404")
        self.assertLess(len(self.lines(gw)), 20, "still no line per message")


if __name__ == "__main__":
    unittest.main()
