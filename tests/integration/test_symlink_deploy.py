"""
Deploying by switching a C{current} symlink and sending SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import GOOD_RESOURCE, writeApp
from tests.support.procs import freePort, httpGet, pidAlive, readPidFile, twistdCommand, waitFor


class SymlinkDeployTests(TestCase):
    def test_symlinkDeploy(self):
        """Switching a 'current' symlink and sending SIGHUP serves the new release."""
        root = tempfile.mkdtemp(prefix="txflip-test-")
        for release in ("1", "2"):
            os.makedirs(os.path.join(root, "releases", release))
            writeApp(
                os.path.join(root, "releases", release), "myrelease", GOOD_RESOURCE, release=release
            )
        current = os.path.join(root, "current")
        os.symlink(os.path.join(root, "releases", "1"), current)
        port = freePort()
        env = dict(
            os.environ,
            PWD=current,
            PYTHONPATH=os.pathsep.join([".", os.environ.get("PYTHONPATH", "")]),
            PYTHONDONTWRITEBYTECODE="1",
        )
        pidFile = os.path.join(root, "flip.pid")
        process = subprocess.Popen(
            [
                *twistdCommand(),
                "-n",
                "flip",
                "--app",
                "myrelease.resource",
                "--pid-file",
                pidFile,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=current,
            env=env,
            stdout=open(os.path.join(root, "flip.log"), "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        seen = {process.pid}

        def cleanup():
            for pid in seen | {readPidFile(pidFile) or process.pid}:
                if pidAlive(pid):
                    os.kill(pid, signal.SIGKILL)
            process.wait(10)

        self.addCleanup(cleanup)

        def served():
            try:
                return httpGet("127.0.0.1", port, "/")[2]
            except OSError:
                return None

        waitFor(lambda: (body := served()) and b"release 1" in body, "release 1")
        os.unlink(current)
        os.symlink(os.path.join(root, "releases", "2"), current)
        os.kill(process.pid, signal.SIGHUP)
        body = waitFor(lambda: (b := served()) and b"release 2" in b and b, "release 2")
        seen.add(int(body.split()[-1]))
