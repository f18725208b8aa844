"""
Bad input gets one line that says what is wrong, a non-zero exit, and nothing
left running; twistd's own options do not get in the way of a restart.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.procs import Flip, freePort, pidAlive, readPidFile, twistdCommand, waitFor


class BadInputTests(TestCase):
    def _refused(self, *args: str) -> str:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        result = subprocess.run(
            [*twistdCommand(), "-n", "flip", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertTrue(errors[0].startswith("twistd flip: error: "), errors[0])
        self.assertFalse(os.path.exists(os.path.join(workdir, "twistd.pid")))
        return errors[0]

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

    def test_alreadyRunning(self):
        """A second flip with the same PID file refuses to start; the first keeps serving."""
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        pid = flip.start()
        line = self._refused("--pid-file", flip.pidFile, "--listen", f"tcp:{freePort()}")
        self.assertIn(f"names PID {pid}, which is running", line)
        self.assertTrue(pidAlive(pid))


class TwistdPidfileTests(TestCase):
    def _startTwistd(self, twistdArgs: list[str], workdir: str) -> subprocess.Popen:
        port = freePort()
        process = subprocess.Popen(
            [
                *twistdCommand(),
                "-n",
                *twistdArgs,
                "flip",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, TXFLIP_DEMO_DB=os.path.join(workdir, "demo.sqlite3")),
            start_new_session=True,
        )
        return process

    def _restartThroughPidfile(self, pidfilePath: str, process: subprocess.Popen) -> None:
        seen = {process.pid}

        def cleanup():
            for pid in seen:
                if pidAlive(pid):
                    os.kill(pid, 9)
            process.wait(10)

        self.addCleanup(cleanup)
        waitFor(lambda: readPidFile(pidfilePath) == process.pid, "the first PID in the pidfile")
        os.kill(process.pid, 1)
        new = waitFor(
            lambda: (p := readPidFile(pidfilePath)) not in (None, process.pid) and p, "a new PID"
        )
        seen.add(new)
        process.wait(60)
        self.assertTrue(pidAlive(new))
        self.assertEqual(readPidFile(pidfilePath), new)
        os.kill(new, 15)
        waitFor(lambda: not pidAlive(new), "the new generation to exit")
        self.assertFalse(os.path.exists(pidfilePath))

    def test_twistdPidfileOptionIsManagedByFlip(self):
        """twistd --pidfile X without --pid-file: X follows each generation."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "custom.pid")
        self._restartThroughPidfile(path, self._startTwistd(["--pidfile", path], workdir))

    def test_twistdDefaultPidfile(self):
        """Neither option: twistd's default ./twistd.pid follows each generation."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        self._restartThroughPidfile(
            os.path.join(workdir, "twistd.pid"), self._startTwistd([], workdir)
        )
