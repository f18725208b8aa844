"""
Simple mode: as PID 1 (a container's init) restarts are refused, SIGTERM drains.

Runs flip as PID 1 of a new PID namespace with C{unshare --pid --fork}; this
needs root (or user namespaces), and the test skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.procs import childrenOf, freePort, httpGet, pidAlive, twistdCommand, waitFor


def unshareAvailable() -> str | None:
    """Why C{unshare --pid --fork} cannot run here, or None."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"unshare --pid --fork is not permitted here: {probe.stderr.strip()}"
    return None


class SimpleModeTests(TestCase):
    def test_pidOneRefusesRestartsAndDrainsOnSigterm(self):
        why = unshareAvailable()
        if why:
            raise SkipTest(why)
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        logPath = os.path.join(workdir, "flip.log")
        process = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                *twistdCommand(),
                "-n",
                "flip",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=workdir,
            stdout=open(logPath, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, TXFLIP_DEMO_DB=os.path.join(workdir, "demo.sqlite3")),
            start_new_session=True,
        )

        def log() -> str:
            with open(logPath, errors="replace") as f:
                return f.read()

        def cleanup():
            for pid in [*childrenOf(process.pid), process.pid]:
                if pidAlive(pid):
                    os.kill(pid, signal.SIGKILL)
            process.wait(10)

        self.addCleanup(cleanup)
        waitFor(lambda: "serving (first generation)" in log(), "flip to serve as PID 1")
        self.assertIn("simple mode: running as PID 1", log())
        (inner,) = waitFor(lambda: childrenOf(process.pid), "the namespaced process")
        os.kill(inner, signal.SIGHUP)
        waitFor(
            lambda: "SIGHUP refused: restarts are unavailable in simple mode" in log(), "a refusal"
        )
        status, headers, body = httpGet("127.0.0.1", port, "/sleep?seconds=0")
        self.assertEqual(status, 200)
        self.assertEqual(childrenOf(inner), [], "no new generation may be started")
        os.kill(inner, signal.SIGTERM)
        self.assertEqual(process.wait(60), 0)
        self.assertIn("generation exits (shut down)", log())
