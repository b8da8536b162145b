"""Install layout, systemd unit and .deb (issue 5): `cmake --install` into a staging root, file by
file; `systemd-analyze verify` and `security` on the staged unit; `cpack -G DEB` and the package's
contents, conffiles and maintainer scripts (run against command stubs: nothing on this machine is
touched).

WSGATE_BIN is the built gateway; its build directory (the one holding CMakeCache.txt above it) is
installed as it is: nothing is rebuilt here.
"""
import filecmp
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

REQUIRED_SYSCTL = ("90-wsgate-1m-connections.conf", "90-wsgate-low-latency.conf")
# Host paths an install that ignored DESTDIR (or used a configure-time absolute path) would write.
HOST_PATHS = [
    "/etc/wsgate", "/etc/opt/wsgate", "/usr/etc/wsgate", "/usr/local/etc/wsgate",
    "/etc/sysctl.d/90-wsgate-1m-connections.conf", "/etc/sysctl.d/90-wsgate-low-latency.conf",
    "/usr/bin/wsgate", "/usr/bin/wsgate-sysctl", "/usr/local/bin/wsgate", "/usr/local/bin/wsgate-sysctl",
    "/usr/lib/systemd/system/wsgate.service", "/lib/systemd/system/wsgate.service",
    "/usr/local/lib/systemd/system/wsgate.service", "/usr/lib/sysusers.d/wsgate.conf",
    "/usr/local/lib/sysusers.d/wsgate.conf", "/usr/share/wsgate", "/usr/local/share/wsgate",
    "/usr/share/doc/wsgate", "/usr/local/share/doc/wsgate",
]
# A maintainer script must never enable or start the service (that is the administrator's step).
FORBIDDEN_IN_SCRIPTS = re.compile(r"\b(enable|start|restart|reenable|try-restart|reload-or-restart|"
                                  r"preset|deb-systemd-invoke|invoke-rc\.d|update-rc\.d)\b")


def find_build_dir(binary):
    d = Path(binary).resolve().parent
    while d != d.parent:
        if (d / "CMakeCache.txt").is_file():
            return d
        d = d.parent
    raise RuntimeError(f"no CMakeCache.txt above {binary}")


def cache_value(build, key):
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split("=", 1)[1]
    return None


def snapshot(paths):
    out = {}
    for p in paths:
        try:
            st = os.lstat(p)
            out[p] = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            out[p] = None
    return out


def files_under(root):
    """Relative paths of every non-directory under root."""
    return {str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir()}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def is_exec(p):
    return os.stat(p).st_mode & stat.S_IXUSR != 0


def strip_comments(script):
    return "\n".join(line.split("#", 1)[0] for line in script.splitlines()
                     if not line.lstrip().startswith("#!"))


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin = os.environ.get("WSGATE_BIN")
        if not cls.bin:
            raise unittest.SkipTest("WSGATE_BIN not set")
        cls.build = find_build_dir(cls.bin)
        cls.src = Path(cache_value(cls.build, "CMAKE_HOME_DIRECTORY") or Path(__file__).resolve().parents[2])
        cls.version = cache_value(cls.build, "CMAKE_PROJECT_VERSION")
        cls.tmp = Path(tempfile.mkdtemp(prefix="wsgate-install-"))
        cls.before = snapshot(HOST_PATHS)

        # The layout under a /usr prefix (the .deb's) and under /usr/local (a plain cmake --install).
        cls.stage = cls.tmp / "stage"
        cls.install = cls._install("/usr", cls.stage)
        cls.stage_local = cls.tmp / "stage-local"
        cls.install_local = cls._install("/usr/local", cls.stage_local)
        manifest = cls.build / "install_manifest.txt"
        cls.manifest = manifest.read_text().split() if manifest.exists() else []
        for res in (cls.install, cls.install_local):
            if res.returncode != 0:  # one clear error instead of every test failing on it
                shutil.rmtree(cls.tmp, ignore_errors=True)
                raise AssertionError(f"{' '.join(res.args)} failed:\n{res.stdout}{res.stderr}")

        cls.deb = None
        cls.deb_skip = None
        missing = [t for t in ("cpack", "dpkg-deb", "dpkg-shlibdeps") if shutil.which(t) is None]
        if missing:
            cls.deb_skip = f"{', '.join(missing)} not installed (dpkg-dev provides dpkg-shlibdeps)"
        else:
            pkg = cls.tmp / "pkg"
            # CPACK_CMAKE_GENERATOR=Ninja: a generator without a "preinstall" target, so cpack
            # packages the build as it is instead of running `make preinstall` (a rebuild of
            # everything out of date); only the generator's name is used, ninja need not exist.
            cls.cpack = run(["cpack", "--config", str(cls.build / "CPackConfig.cmake"), "-G", "DEB",
                             "-B", str(pkg), "-D", "CPACK_CMAKE_GENERATOR=Ninja"])
            debs = sorted(pkg.glob("*.deb"))
            cls.deb = debs[0] if len(debs) == 1 else None
            cls.debs = debs
        cls.after = snapshot(HOST_PATHS)

    @classmethod
    def _install(cls, prefix, stage):
        env = dict(os.environ, DESTDIR=str(stage))
        return run(["cmake", "--install", str(cls.build), "--prefix", prefix], env=env)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- expected layout -------------------------------------------------------------------
    def expected_files(self):
        src = self.src
        exp = {
            "usr/bin/wsgate",
            "usr/bin/wsgate-sysctl",
            "usr/lib/systemd/system/wsgate.service",
            "usr/lib/sysusers.d/wsgate.conf",
            "etc/wsgate/wsgate.toml",
            "usr/share/wsgate/wsgate.toml",
            "usr/share/doc/wsgate/README.md",
        }
        exp |= {f"usr/share/wsgate/sysctl/{p.name}" for p in (src / "systemd/sysctl").glob("*.conf")}
        exp |= {f"usr/share/doc/wsgate/{p.name}" for p in (src / "docs").glob("*.md")}
        lb = src / "tools/lb"
        if lb.is_dir():
            exp |= {f"usr/share/wsgate/lb/{p.relative_to(lb)}" for p in lb.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
        return exp

    def assertSame(self, staged, source):
        self.assertTrue(Path(staged).is_file(), f"{staged} missing")
        self.assertTrue(filecmp.cmp(staged, source, shallow=False), f"{staged} differs from {source}")

    # ---- cmake --install --------------------------------------------------------------------
    def test_layout_is_exactly_the_expected_files(self):
        self.assertEqual(files_under(self.stage), self.expected_files())

    def test_nothing_written_outside_the_staging_root(self):
        self.assertEqual(self.before, self.after, "a host path changed during install/cpack")
        for res, stage in ((self.install, self.stage), (self.install_local, self.stage_local)):
            for line in res.stdout.splitlines():
                m = re.match(r"-- (Installing|Up-to-date): (.*)", line)
                if m:
                    self.assertTrue(m.group(2).startswith(str(stage) + "/"), line)
        # Every file the /usr/local install recorded (paths without DESTDIR) is in its staging
        # root, and the staging root holds nothing else.
        self.assertTrue(self.manifest)
        self.assertEqual({p.lstrip("/") for p in self.manifest}, files_under(self.stage_local))

    def test_binary_runs(self):
        b = self.stage / "usr/bin/wsgate"
        self.assertTrue(is_exec(b))
        r = run([str(b), "--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"wsgate {self.version}", r.stdout + r.stderr)

    def test_unit_and_sysusers(self):
        self.assertSame(self.stage / "usr/lib/systemd/system/wsgate.service", self.src / "systemd/wsgate.service")
        self.assertSame(self.stage / "usr/lib/sysusers.d/wsgate.conf", self.src / "systemd/wsgate.sysusers.conf")
        unit = (self.stage / "usr/lib/systemd/system/wsgate.service").read_text()
        for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "KillSignal=SIGTERM",
                     "ExecStart=/usr/bin/wsgate --config /etc/wsgate/wsgate.toml",
                     "ExecStartPre=/usr/bin/wsgate --config /etc/wsgate/wsgate.toml --check-config",
                     "Restart=on-failure", "LimitNOFILE=1048576", "User=wsgate", "Group=wsgate",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet=",
                     "WantedBy=multi-user.target"):
            self.assertIn(line, unit.splitlines())
        self.assertNotIn("ExecReload=", unit.replace("# No ExecReload", ""))
        stop = int(re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.M).group(1))
        self.assertGreater(stop, 5 + 2 + 3 + 2, "TimeoutStopSec shorter than the default drain")
        if shutil.which("systemd-sysusers"):
            r = run(["systemd-sysusers", "--dry-run", f"--root={self.stage}", "wsgate.conf"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("wsgate", r.stdout + r.stderr)

    def test_config(self):
        self.assertSame(self.stage / "etc/wsgate/wsgate.toml", self.src / "systemd/wsgate.toml")
        self.assertSame(self.stage / "usr/share/wsgate/wsgate.toml", self.src / "systemd/wsgate.toml")

    def test_shipped_config_passes_check_config(self):
        b = self.stage / "usr/bin/wsgate"
        if "--check-config" not in run([str(b), "--help"]).stdout:
            self.skipTest("this wsgate has no --check-config yet")
        r = run([str(b), "--config", str(self.stage / "etc/wsgate/wsgate.toml"), "--check-config"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_sysctl_profiles_shipped_not_applied(self):
        for name in REQUIRED_SYSCTL:
            self.assertTrue((self.src / "systemd/sysctl" / name).is_file(), f"systemd/sysctl/{name} missing")
        for p in (self.src / "systemd/sysctl").glob("*.conf"):
            self.assertSame(self.stage / "usr/share/wsgate/sysctl" / p.name, p)
        for d in ("etc/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d"):
            self.assertFalse((self.stage / d).exists(), f"{d} must not be installed into")

    def test_tool_and_lb_examples(self):
        tool = self.stage / "usr/bin/wsgate-sysctl"
        self.assertSame(tool, self.src / "tools/wsgate-sysctl")
        self.assertTrue(is_exec(tool))
        lb = self.src / "tools/lb"
        self.assertTrue(any(lb.glob("*")), "tools/lb is empty")
        for p in lb.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                staged = self.stage / "usr/share/wsgate/lb" / p.relative_to(lb)
                self.assertSame(staged, p)
                self.assertEqual(is_exec(staged), is_exec(p), staged)

    def test_docs(self):
        self.assertSame(self.stage / "usr/share/doc/wsgate/README.md", self.src / "README.md")
        docs = list((self.src / "docs").glob("*.md"))
        self.assertTrue(docs)
        for p in docs:
            self.assertSame(self.stage / "usr/share/doc/wsgate" / p.name, p)

    def test_other_prefix_rewrites_the_unit_paths(self):
        s = self.stage_local
        self.assertSame(s / "usr/local/etc/wsgate/wsgate.toml", self.src / "systemd/wsgate.toml")
        self.assertTrue(is_exec(s / "usr/local/bin/wsgate"))
        unit = (s / "usr/local/lib/systemd/system/wsgate.service").read_text().splitlines()
        self.assertIn("ExecStart=/usr/local/bin/wsgate --config /usr/local/etc/wsgate/wsgate.toml", unit)
        self.assertIn("ExecStartPre=/usr/local/bin/wsgate --config /usr/local/etc/wsgate/wsgate.toml "
                      "--check-config", unit)
        self.assertFalse((s / "etc").exists())

    # ---- systemd-analyze ----------------------------------------------------------------------
    def staged_unit_for_analyze(self):
        """The staged unit with its binary path pointing into the staging root (verify checks that
        ExecStart exists; PID 1 need not be systemd)."""
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed (package systemd)")
        text = (self.stage / "usr/lib/systemd/system/wsgate.service").read_text()
        d = self.tmp / "analyze"
        d.mkdir(exist_ok=True)
        unit = d / "wsgate.service"
        unit.write_text(text.replace("/usr/bin/wsgate ", f"{self.stage}/usr/bin/wsgate "))
        return unit

    def test_systemd_analyze_verify(self):
        unit = self.staged_unit_for_analyze()
        r = run(["systemd-analyze", "verify", "--man=no", str(unit)], cwd=self.tmp)
        out = (r.stdout + r.stderr).strip()
        # verify exits 0 on unknown keys and bad values: its messages are the verdict.
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual([l for l in out.splitlines() if "wsgate" in l], [], out)

    def test_systemd_analyze_security(self):
        unit = self.staged_unit_for_analyze()
        r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)], cwd=self.tmp)
        m = re.search(r"Overall exposure level for wsgate\.service: (\d+\.\d+)", r.stdout + r.stderr)
        if m is None and "offline" in r.stderr:
            self.skipTest("this systemd-analyze cannot judge a unit offline: " + r.stderr.strip())
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)

    # ---- .deb ---------------------------------------------------------------------------------
    def need_deb(self):
        if self.deb_skip:
            self.skipTest(self.deb_skip)
        self.assertEqual(self.cpack.returncode, 0, self.cpack.stdout + self.cpack.stderr)
        self.assertEqual(len(self.debs), 1, self.debs)
        return self.deb

    def test_deb_name_and_control(self):
        deb = self.need_deb()
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(deb.name, f"wsgate_{self.version}_{arch}.deb")
        info = run(["dpkg-deb", "-I", str(deb)]).stdout
        fields = dict(re.findall(r"^ (\w[\w-]*): (.*)$", info, re.M))
        self.assertEqual(fields.get("Package"), "wsgate")
        self.assertEqual(fields.get("Version"), self.version)
        self.assertEqual(fields.get("Section"), "net")
        self.assertEqual(fields.get("Architecture"), arch)
        self.assertTrue(fields.get("Maintainer"))
        self.assertTrue(fields.get("Description"))
        # dpkg-shlibdeps ran: the shared libraries the binary links are dependencies.
        for lib in ("libc6", "liburing2"):
            self.assertIn(lib, fields.get("Depends", ""), info)

    def test_deb_contents(self):
        deb = self.need_deb()
        listing = run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
        paths = {l.split()[-1].removeprefix("./") for l in listing if not l.endswith("/")}
        self.assertEqual(paths, self.expected_files())
        x = self.tmp / "deb-root"
        self.assertEqual(run(["dpkg-deb", "-x", str(deb), str(x)]).returncode, 0)
        self.assertSame(x / "usr/lib/systemd/system/wsgate.service", self.src / "systemd/wsgate.service")
        self.assertSame(x / "etc/wsgate/wsgate.toml", self.src / "systemd/wsgate.toml")
        r = run([str(x / "usr/bin/wsgate"), "--version"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def deb_control(self):
        deb = self.need_deb()
        c = self.tmp / "deb-control"
        if not c.exists():
            self.assertEqual(run(["dpkg-deb", "-e", str(deb), str(c)]).returncode, 0)
        return c

    def test_deb_conffiles_and_scripts(self):
        c = self.deb_control()
        self.assertEqual((c / "conffiles").read_text().split(), ["/etc/wsgate/wsgate.toml"])
        for name in ("postinst", "prerm", "postrm"):
            p = c / name
            self.assertTrue(p.is_file() and is_exec(p), name)
            self.assertSame(p, self.src / "systemd/deb" / name)
            self.assertEqual(run(["sh", "-n", str(p)]).returncode, 0, name)
            code = strip_comments(p.read_text())
            self.assertIsNone(FORBIDDEN_IN_SCRIPTS.search(code), f"{name}: {FORBIDDEN_IN_SCRIPTS.search(code)}")

    def run_script(self, name, args, systemd_running, have_sysusers=True, active=True):
        """Run a maintainer script with every external command replaced by a stub that logs its
        arguments; '/run/systemd/system' is pointed at a directory that exists or not. Returns
        (exit status, logged commands)."""
        c = self.deb_control()
        d = Path(tempfile.mkdtemp(dir=self.tmp))
        log = d / "log"
        shims = d / "bin"
        shims.mkdir()
        # Exit status per stub: is-active as asked, no statoverride and no wsgate user yet.
        codes = {"systemctl": f'case "$*" in *is-active*) exit {0 if active else 3};; esac',
                 "dpkg-statoverride": 'case "$1" in --list) exit 1;; esac',
                 "getent": "exit 2"}
        names = ["systemctl", "useradd", "getent", "dpkg-statoverride", "rm", "rmdir"]
        if have_sysusers:
            names.append("systemd-sysusers")
        for n in names:
            s = shims / n
            s.write_text(f'#!/bin/sh\necho "{n} $*" >> "{log}"\n{codes.get(n, "")}\nexit 0\n')
            s.chmod(0o755)
        run_dir = d / "run-systemd-system"
        if systemd_running:
            run_dir.mkdir()
        script = d / name
        script.write_text((c / name).read_text().replace("/run/systemd/system", str(run_dir)))
        script.chmod(0o755)
        r = subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True,
                           env={"PATH": str(shims)}, timeout=30)
        calls = log.read_text().splitlines() if log.exists() else []
        return r.returncode, calls, r.stderr

    def test_deb_scripts_behaviour(self):
        for running in (False, True):
            with self.subTest(systemd_running=running):
                rc, calls, err = self.run_script("postinst", ["configure", ""], running)
                self.assertEqual(rc, 0, err)
                self.assertIn("systemd-sysusers wsgate.conf", calls)
                self.assertIn("dpkg-statoverride --update --add root wsgate 0640 /etc/wsgate/wsgate.toml", calls)
                systemctl = [c for c in calls if c.startswith("systemctl")]
                self.assertEqual(systemctl, ["systemctl --system daemon-reload"] if running else [])

                rc, calls, err = self.run_script("prerm", ["remove"], running, active=True)
                self.assertEqual(rc, 0, err)
                self.assertEqual(calls, ["systemctl --quiet is-active wsgate.service",
                                         "systemctl stop wsgate.service"] if running else [])
                rc, calls, err = self.run_script("prerm", ["remove"], running, active=False)
                self.assertEqual(rc, 0, err)
                self.assertNotIn("systemctl stop wsgate.service", calls)
                rc, calls, err = self.run_script("prerm", ["upgrade", "0.0.1"], running)
                self.assertEqual((rc, calls), (0, []), err)

                rc, calls, err = self.run_script("postrm", ["remove"], running)
                self.assertEqual(rc, 0, err)
                self.assertEqual(calls, ["systemctl --system daemon-reload"] if running else [])
                rc, calls, err = self.run_script("postrm", ["purge"], running)
                self.assertEqual(rc, 0, err)
                self.assertIn("rm -f /etc/systemd/system/multi-user.target.wants/wsgate.service", calls)
        # Without systemd-sysusers (a container): the same user through useradd.
        rc, calls, err = self.run_script("postinst", ["configure", ""], False, have_sysusers=False)
        self.assertEqual(rc, 0, err)
        self.assertTrue(any(c.startswith("useradd --system --user-group") and c.endswith(" wsgate")
                            for c in calls), calls)


if __name__ == "__main__":
    unittest.main()
