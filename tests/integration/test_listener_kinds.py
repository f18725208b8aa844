"""
Listeners of every kind across restarts: an app that listens by itself, IPv6,
unix sockets (never recreated), plain protocol factories.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import ECHO_FACTORY, SERVICE_THAT_LISTENS, appEnv, writeApp
from tests.support.procs import Flip, freePort, ipv6LoopbackWorks, servedBy, waitFor
from tests.support.together import restartsUnderLightLoad


class ListenerKindTests(TestCase):
    def test_serviceThatListensByItself(self):
        """An IService that calls strports.service gets zero-downtime restarts unchanged."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "selflisten", SERVICE_THAT_LISTENS, port=port)
        flip = Flip(self, ["--app", "selflisten.makeService"], workdir=workdir, env=appEnv(workdir))
        flip.start()
        restartsUnderLightLoad(self, flip, port, 3)
        self.assertIn(f"adopted inherited listener tcp:127.0.0.1:{port}", flip.log())

    def test_ipv6(self):
        if not ipv6LoopbackWorks():
            raise SkipTest("no IPv6 loopback on this machine")
        port = freePort(socket.AF_INET6, "::1")
        flip = Flip(self, ["--listen", f"tcp6:{port}:interface=\\:\\:1"])
        flip.start()
        restartsUnderLightLoad(self, flip, port, 3, host="::1", path="/sleep?seconds=0")
        self.assertIn(f"adopted inherited listener tcp:[::1]:{port}", flip.log())

    def test_unixSocketPathIsNeverRecreated(self):
        """The socket file keeps its inode and mode across restarts and goes at shutdown."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "app.sock")
        flip = Flip(self, ["--listen", f"unix:{path}:mode=0660"], workdir=workdir)
        first = flip.start()
        before = os.stat(path)
        self.assertEqual(stat.S_IMODE(before.st_mode), 0o660)
        self.assertEqual(servedBy(path), first)
        for _ in range(3):
            new = flip.restart()
            self.assertEqual(servedBy(path), new)
            after = os.stat(path)
            self.assertEqual((after.st_ino, stat.S_IMODE(after.st_mode)), (before.st_ino, 0o660))
        flip.terminate()
        self.assertFalse(os.path.exists(path))

    def test_protocolFactory(self):
        """A plain protocol factory (not HTTP) is served and restarted; the drain waits for it."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "echoapp", ECHO_FACTORY)
        port = freePort()
        flip = Flip(
            self,
            ["--app", "echoapp.factory", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            workdir=workdir,
            env=appEnv(workdir),
        )
        old = flip.start()
        held = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.addCleanup(held.close)
        held.sendall(b"ping")
        self.assertEqual(held.recv(4), b"ping")
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "a new PID")
        flip.waitServing(new)
        held.sendall(b"still old")
        self.assertEqual(held.recv(9), b"still old")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as fresh:
            fresh.sendall(b"new")
            self.assertEqual(fresh.recv(3), b"new")
        held.close()
        waitFor(lambda: flip.aliveGenerations() == [new], "the old generation to exit")
