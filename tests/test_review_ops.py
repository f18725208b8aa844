"""
Operations cases found in review: a failed release must not tell systemd the
service is stopping, the control socket must not count as a listener the app
serves on, and txflip's client trusts only a server run by root or its user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import (
    GOOD_RESOURCE,
    LISTENS_ON_NOTHING,
    SERVICE_THAT_LISTENS,
    STOPS_ITSELF,
    appEnv,
    writeApp,
)
from tests.support.notifycapture import NotifyCapture
from tests.support.procs import Flip, freePort, servedBy, shortTempDir, txflip, waitFor


class FailedReleaseTests(TestCase):
    def test_releaseThatNeverServedSendsNoStopping(self):
        """A child that gives up before serving sends systemd no STOPPING=1."""
        address = os.path.join(shortTempDir(self), "notify")
        capture = NotifyCapture(self, address)
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
        port = freePort()
        flip = Flip(
            self,
            ["--app", "myrelease.resource", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            workdir=workdir,
            env={**appEnv(workdir), "NOTIFY_SOCKET": address},
        )
        old = flip.start()
        capture.waitFor(lambda m: m[0] == old and "READY" in m[1], "READY=1 at start")
        writeApp(workdir, "myrelease", STOPS_ITSELF, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving")
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")
        capture.receive(0.5)
        self.assertEqual([(sender, f) for sender, f, _ in capture.messages if "STOPPING" in f], [])

    def test_releaseListeningOnNothingDoesNotTakeOver(self):
        """
        A new release of a self-listening service that listens on nothing is
        refused, although the control socket was handed to it.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "selflisten", SERVICE_THAT_LISTENS, port=port)
        flip = Flip(self, ["--app", "selflisten.makeService"], workdir=workdir, env=appEnv(workdir))
        old = flip.start()
        writeApp(workdir, "selflisten", LISTENS_ON_NOTHING)
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("it listens on nothing", flip.log())
        self.assertEqual(servedBy(port, path="/"), old)
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")


class ClientTrustTests(TestCase):
    def test_refusesAServerRunByAnotherUser(self):
        """A control socket planted by another user is not believed."""
        if os.geteuid() != 0:
            raise SkipTest("needs root, to run the planted server as nobody")
        if not os.path.exists("/usr/bin/python3"):
            raise SkipTest("no /usr/bin/python3 to run the planted server as nobody")
        directory = tempfile.mkdtemp(prefix="txflip-test-")
        os.chmod(directory, 0o777)
        path = os.path.join(directory, "flip.pid.control")
        planted = subprocess.Popen(
            [
                "/usr/bin/python3",
                "-I",
                "-c",
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.bind(sys.argv[1])\n"
                "s.listen(1)\n"
                "print('up', flush=True)\n"
                "s.settimeout(60)\n"
                "c, _ = s.accept()\n"
                'c.sendall(b\'{"phase": "done", "ok": true}\\n\')\n'
                "c.recv(1)\n",
                path,
            ],
            user=65534,
            group=65534,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(planted.wait, 30)
        self.addCleanup(planted.kill)
        self.assertEqual(planted.stdout.readline().strip(), b"up")
        result = txflip("status", "--control", path)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("neither root nor you: not trusting it", result.stderr)
