"""
Bad input gets one line that says what is wrong, a non-zero exit, and nothing
left running: flip's own options, the --acme-* options and an empty C{le:}
directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.procs import Flip, demoFlip, freePort, pidAlive, refusedAtStart, waitFor


class BadInputTests(TestCase):
    def _refused(self, *args: str) -> str:
        return refusedAtStart(self, list(args))

    def test_badApp(self):
        line = self._refused("--app", "no_such_module_here.site")
        self.assertIn("no_such_module_here", line)

    def test_appOfTheWrongKind(self):
        line = self._refused("--app", "os.sep")
        self.assertIn("name a Resource, a protocol factory, an IService", line)

    def test_badEndpoint(self):
        line = self._refused("--listen", "nosuchtransport:8080")
        self.assertIn("bad --listen 'nosuchtransport:8080'", line)
        self.assertIn("tcp:8080", line)

    def test_portInUse(self):
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            line = self._refused("--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1", line)
        self.assertIn("Address already in use", line)

    def test_accessLogThatCannotBeOpened(self):
        line = self._refused("--access-log", "/nonexistent-txflip-dir/access.log")
        self.assertIn("--access-log /nonexistent-txflip-dir/access.log: cannot open it", line)
        self.assertIn("No such file or directory", line)

    def test_missingPidFileDirectory(self):
        line = self._refused("--pid-file", "/nonexistent-txflip-dir/app.pid")
        self.assertIn("/nonexistent-txflip-dir does not exist", line)

    def test_unwritablePidFileDirectory(self):
        target = tempfile.mkdtemp(prefix="txflip-ro-")
        os.chmod(target, 0o500)
        self.addCleanup(os.chmod, target, 0o700)
        probe = os.path.join(target, "probe")
        try:
            open(probe, "w").close()
        except OSError:
            pass
        else:
            os.unlink(probe)
            target = "/proc/self"
            try:
                open(os.path.join(target, "probe"), "w").close()
            except OSError:
                pass
            else:
                raise SkipTest("no directory here refuses writes (running as root?)")
        line = self._refused("--pid-file", os.path.join(target, "app.pid"))
        self.assertIn("cannot write the PID file in", line)

    def test_badTimeout(self):
        line = self._refused("--ready-timeout", "soon")
        self.assertIn("--ready-timeout 'soon'", line)

    def test_infiniteTimeout(self):
        line = self._refused("--drain-timeout", "inf")
        self.assertIn("--drain-timeout 'inf': give a number of seconds above 0", line)

    def test_tooManyWorkers(self):
        """Refused before a single worker starts (it used to start them by the hundred)."""
        line = self._refused("--workers", "100000")
        self.assertIn("--workers '100000': at most", line)

    def test_launcherRefusesAnInfiniteTimeout(self):
        result = subprocess.run(
            [sys.executable, "-m", "txflip", "run", "--drain-timeout", "inf", "server.py"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(
            lines[0].startswith(
                "txflip run: error: argument --drain-timeout: 'inf': "
                "give a number of seconds above 0"
            ),
            lines[0],
        )

    def test_alreadyRunning(self):
        """A second flip with the same PID file refuses to start; the first keeps serving."""
        flip, _ = demoFlip(self)
        pid = flip.start()
        line = self._refused("--pid-file", flip.pidFile, "--listen", f"tcp:{freePort()}")
        self.assertIn(f"names PID {pid}, which is running", line)
        self.assertTrue(pidAlive(pid))


class OptionErrorTests(TestCase):
    """Bad --acme-* input: flip exits with one line saying what to fix."""

    def assertRefused(self, args, expected):
        flip = Flip(self, args)
        flip.start(waitReady=False)
        waitFor(lambda: flip.process.poll() is not None, "flip to exit", 60)
        self.assertNotEqual(flip.process.returncode, 0)
        lines = [line for line in flip.stderr().splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(expected, lines[0])

    def acmeArgs(self, *more: str, domain: str = "a.test") -> list[str]:
        """A valid --acme-* set for C{domain}, then C{more}."""
        return [
            "--acme-listen",
            f"tcp:{freePort()}",
            "--acme-domain",
            domain,
            "--acme-dir",
            tempfile.mkdtemp(),
            *more,
        ]

    def test_domainWithoutDir(self):
        self.assertRefused(
            ["--acme-listen", f"tcp:{freePort()}", "--acme-domain", "a.test"],
            "--acme-domain needs --acme-dir",
        )

    def test_badDomain(self):
        self.assertRefused(self.acmeArgs(domain="a.test,bad_name!"), "is not a DNS name")

    def test_plainHttpDirectory(self):
        self.assertRefused(
            self.acmeArgs("--acme-directory", "http://ca.example/dir"),
            "give the https:// URL of an ACME directory",
        )

    def test_infiniteCheckInterval(self):
        self.assertRefused(
            self.acmeArgs("--acme-check-interval", "inf"),
            "--acme-check-interval 'inf': give a number above 0",
        )

    def test_missingBundle(self):
        self.assertRefused(
            self.acmeArgs("--acme-ca-bundle", "/nonexistent/bundle.pem"),
            "--acme-ca-bundle /nonexistent/bundle.pem: No such file or directory",
        )


class AcmeEndpointErrorTests(TestCase):
    def test_txacmeEndpointWithoutDomains(self):
        """An le: directory with no <name>.pem file is refused with a one-line fix."""
        store = tempfile.mkdtemp(prefix="txflip-acme-store-")
        flip = Flip(self, ["--listen", f"le:{store}:tcp:{freePort()}:interface=127.0.0.1"])
        flip.start(waitReady=False)
        waitFor(lambda: flip.process.poll() is not None, "flip to exit", 60)
        self.assertNotEqual(flip.process.returncode, 0)
        self.assertIn(
            "no domain to serve: create an empty file named after each domain", flip.stderr()
        )
