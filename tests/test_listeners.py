"""
Listeners of every kind across restarts: an app that listens by itself, IPv6,
unix sockets, plain protocol factories; and no descriptor leaks.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import ECHO_FACTORY, SERVICE_THAT_LISTENS, appEnv, writeApp
from tests.support.load import Load
from tests.support.procs import (
    Flip,
    UNIXHTTPConnection,
    fdTargets,
    freePort,
    httpGet,
    ipv6LoopbackWorks,
    waitFor,
)


def unixServedBy(path: str) -> int:
    conn = UNIXHTTPConnection(path)
    try:
        conn.request("GET", "/sleep?seconds=0", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return int(response.getheader("X-Served-By"))
    finally:
        conn.close()


class ListenerKindTests(TestCase):
    def test_serviceThatListensByItself(self):
        """An IService that calls strports.service gets zero-downtime restarts unchanged."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "selflisten", SERVICE_THAT_LISTENS, port=port)
        flip = Flip(self, ["--app", "selflisten.makeService"], workdir=workdir, env=appEnv(workdir))
        pids = [flip.start()]
        with Load("127.0.0.1", port, kinds=("newConnection", "keepAliveGet"), path="/") as load:
            pids += flip.restartsUnderLoad(load, 3)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual(len(set(pids)), 4)
        self.assertIn(f"adopted inherited listener tcp:127.0.0.1:{port}", flip.log())
        self.assertEqual(flip.aliveGenerations(), [pids[-1]])

    def test_ipv6(self):
        if not ipv6LoopbackWorks():
            raise SkipTest("no IPv6 loopback on this machine")
        port = freePort(socket.AF_INET6, "::1")
        flip = Flip(self, ["--listen", f"tcp6:{port}:interface=\\:\\:1"])
        pids = [flip.start()]
        with Load("::1", port, kinds=("newConnection", "keepAliveGet")) as load:
            pids += flip.restartsUnderLoad(load, 3)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual(len(set(pids)), 4)
        self.assertIn(f"adopted inherited listener tcp:[::1]:{port}", flip.log())

    def test_unixSocketPathIsNeverRecreated(self):
        """The socket file keeps its inode and mode across restarts and goes at shutdown."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "app.sock")
        flip = Flip(self, ["--listen", f"unix:{path}:mode=0660"], workdir=workdir)
        first = flip.start()
        before = os.stat(path)
        self.assertEqual(stat.S_IMODE(before.st_mode), 0o660)
        self.assertEqual(unixServedBy(path), first)
        for _ in range(3):
            new = flip.restart()
            self.assertEqual(unixServedBy(path), new)
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


class DescriptorTests(TestCase):
    def test_noDescriptorLeakAfterTwentyRestarts(self):
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        first = flip.start()

        def settle(pid: int) -> list[str]:
            """The descriptors of C{pid} once a request has come and gone and nothing moves."""
            status, _, _ = httpGet("127.0.0.1", port, "/guestbook")
            assert status == 200
            samples: list[list[str]] = []

            def steady():
                samples.append(fdTargets(pid))
                return len(samples) >= 5 and all(
                    len(sample) == len(samples[-1]) for sample in samples[-5:]
                )

            waitFor(steady, f"the descriptors of PID {pid} to settle", 30)
            return samples[-1]

        baseline = settle(first)
        pid = first
        for _ in range(20):
            pid = flip.restart()
        final = settle(pid)
        self.assertEqual(len(final), len(baseline), f"{baseline} -> {final}")

    def test_everyDescriptorIsCloseOnExec(self):
        """
        In a generation started by a restart, every descriptor but 0-2 is
        close-on-exec: nothing leaks into processes the app starts.
        """
        port = freePort()
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "app.sock")
        flip = Flip(
            self, ["--listen", f"tcp:{port}:interface=127.0.0.1", "--listen", f"unix:{path}"]
        )
        flip.start()
        pid = flip.restart()
        httpGet("127.0.0.1", port, "/guestbook")
        inheritable = []
        for entry in os.listdir(f"/proc/{pid}/fd"):
            fd = int(entry)
            if fd <= 2:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except (OSError, IndexError):
                continue
            if not flags & 0o2000000:
                inheritable.append((fd, target))
        self.assertEqual(inheritable, [])
