"""
Cases found in review: a release that gives up after reporting ready, drains
of responses already under way, pipelined requests, symlink deploys, and the
command line over many restarts.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import TestCase

from tests.support.apps import GOOD_RESOURCE, STOPS_ITSELF, appEnv, writeApp
from tests.support.procs import (
    Flip,
    UNIXHTTPConnection,
    freePort,
    httpGet,
    pidAlive,
    readPidFile,
    twistdCommand,
    waitFor,
)


class ReleaseGivesUpTests(TestCase):
    def test_releaseThatStopsItselfLeavesEverythingInPlace(self):
        """
        A release that stops itself right after starting never takes over: the
        old generation keeps its TCP and unix listeners, its PID file and its
        control socket.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
        port = freePort()
        path = os.path.join(workdir, "app.sock")
        flip = Flip(
            self,
            [
                "--app",
                "myrelease.resource",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--listen",
                f"unix:{path}",
            ],
            workdir=workdir,
            env=appEnv(workdir),
        )
        old = flip.start()
        inode = os.stat(path).st_ino
        writeApp(workdir, "myrelease", STOPS_ITSELF, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving")
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")
        self.assertEqual(flip.pid(), old)
        self.assertEqual(os.stat(path).st_ino, inode)
        self.assertTrue(os.path.exists(flip.pidFile + ".control"))
        self.assertIn(f"pid {old}".encode(), httpGet("127.0.0.1", port, "/")[2])
        conn = UNIXHTTPConnection(path)
        conn.request("GET", "/")
        self.assertIn(f"pid {old}".encode(), conn.getresponse().read())
        conn.close()


class DrainEdgeTests(TestCase):
    def _demo(self) -> tuple[Flip, int]:
        port = freePort()
        return Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"]), port

    def test_nextRequestAfterLongResponseIsServed(self):
        """
        A response whose headers went out before the drain and that ends long
        after it: a request the client sends just after it is still answered,
        by the new generation, which the connection moved to once idle.
        """
        flip, port = self._demo()
        old = flip.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.addCleanup(conn.close)
        conn.request("GET", "/stream?seconds=3")
        response = conn.getresponse()
        self.assertEqual(response.getheader("Connection"), None)
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "a new PID")
        flip.waitServing(new)
        self.assertIn(f"finished by PID {old}".encode(), response.read())
        time.sleep(0.2)  # a client that thinks a little before its next request
        conn.request("GET", "/sleep?seconds=0")
        second = conn.getresponse()
        second.read()
        self.assertEqual(second.status, 200)
        self.assertEqual(second.getheader("X-Served-By"), str(new))
        self.assertIsNone(second.getheader("Connection"))

    def test_pipelinedRequestsAllAnswered(self):
        flip, port = self._demo()
        old = flip.start()
        skt = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.addCleanup(skt.close)
        skt.sendall(
            b"GET /sleep?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        flip.waitLog(f"sleeping 2.0s for a request (PID {old})")
        os.kill(old, signal.SIGHUP)
        received = b""
        end = time.monotonic() + 30
        # Both answered; the connection then moves to the new generation and stays open.
        while time.monotonic() < end and received.count(b"0\r\n\r\n") < 2:
            chunk = skt.recv(65536)
            if not chunk:
                break
            received += chunk
        self.assertEqual(received.count(b"HTTP/1.1 200"), 2, received)
        self.assertEqual(received.lower().count(f"x-served-by: {old}".encode()), 2, received)


class CommandLineTests(TestCase):
    def test_commandLineDoesNotGrow(self):
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        flip.start()
        for _ in range(3):
            pid = flip.restart()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        self.assertEqual(argv.count(b"--pidfile="), 1, argv)

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
