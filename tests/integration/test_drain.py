"""
Draining on SIGTERM and after a handoff: in-flight work finishes on the old
PID, keep-alive connections are told to close (idle ones are closed after a
quiet period), responses under way and pipelined requests are all answered,
and the drain timeout is a hard limit.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time

from twisted.trial.unittest import TestCase

from tests.support.procs import BackgroundGet, demoFlip, httpGet, pidAlive, servedBy, waitFor


class ShutdownDrainTests(TestCase):
    def test_sigtermFinishesSlowRequest(self):
        """SIGTERM with a request in flight: it completes, then the process exits 0."""
        flip, port = demoFlip(self)
        pid = flip.start()
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=2")
        flip.waitLog(f"sleeping 2.0s for a request (PID {pid})")
        os.kill(pid, signal.SIGTERM)
        flip.process.wait(timeout=60)
        slow.join()
        self.assertIsNone(slow.error)
        self.assertEqual(slow.response[0], 200)
        self.assertEqual(flip.process.returncode, 0)
        self.assertFalse(os.path.exists(flip.pidFile))
        with self.assertRaises(ConnectionRefusedError):
            httpGet("127.0.0.1", port, "/", timeout=5)

    def test_sigintDrainsToo(self):
        flip, _ = demoFlip(self)
        pid = flip.start()
        os.kill(pid, signal.SIGINT)
        flip.process.wait(timeout=60)
        self.assertEqual(flip.process.returncode, 0)
        self.assertFalse(os.path.exists(flip.pidFile))

    def test_requestLongerThanDrainTimeoutIsAborted(self):
        """A request that outlives the drain timeout is aborted at the deadline."""
        flip, port = demoFlip(self, "--drain-timeout", "2")
        pid = flip.start()
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=60", timeout=90)
        flip.waitLog(f"sleeping 60.0s for a request (PID {pid})")
        os.kill(pid, signal.SIGTERM)
        flip.process.wait(timeout=30)
        slow.join(30)
        self.assertIsNotNone(slow.error)
        self.assertIn("drain timeout: aborted 1 connection(s)", flip.log())
        self.assertEqual(flip.process.returncode, 0)


class KeepAliveDrainTests(TestCase):
    """
    On SIGTERM nobody takes the connections over: keep-alive connections are
    told to close, and idle ones are closed. (After a handoff they move to the
    next generation instead: see tests.integration.test_keepalive_restarts.)
    """

    def test_nextResponseSaysConnectionClose(self):
        """
        A keep-alive connection that keeps sending while its generation drains
        is answered with C{Connection: close}; nobody accepts its next connection.
        """
        flip, port = demoFlip(self)
        old = flip.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.addCleanup(conn.close)
        conn.request("GET", "/sleep?seconds=0")
        first = conn.getresponse()
        first.read()
        self.assertFalse(first.will_close)
        self.assertEqual(first.getheader("X-Served-By"), str(old))

        os.kill(old, signal.SIGTERM)
        flip.waitLog(f"[txflip gen 1 pid {old}] draining")
        conn.request("GET", "/sleep?seconds=0")
        second = conn.getresponse()
        second.read()
        self.assertEqual(second.getheader("X-Served-By"), str(old))
        self.assertEqual(second.getheader("Connection"), "close")
        self.assertTrue(second.will_close)
        with self.assertRaises(ConnectionRefusedError):
            conn.request("GET", "/sleep?seconds=0")

    def test_idleConnectionClosedWithoutWaitingForTimeout(self):
        """
        An idle keep-alive connection is closed by the draining generation after
        a short quiet period, so the drain does not last the whole drain timeout.
        """
        flip, port = demoFlip(self, "--drain-timeout", "60")
        old = flip.start()
        skt = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.addCleanup(skt.close)
        skt.sendall(b"GET /sleep?seconds=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        waitFor(lambda: b"\r\n\r\n" in skt.recv(65536, socket.MSG_PEEK), "a response")
        skt.recv(65536)
        started = time.monotonic()
        os.kill(old, signal.SIGTERM)
        waitFor(lambda: not pidAlive(old), "the old generation to exit", 50)
        self.assertLess(time.monotonic() - started, 50)
        self.assertEqual(skt.recv(1), b"", "the idle connection should have been closed")
        self.assertNotIn("drain timeout", flip.log())


class InFlightRequestTests(TestCase):
    def test_slowRequestFinishesOnOldPid(self):
        """A request in flight at SIGHUP completes on the old PID; new ones reach the new PID."""
        flip, port = demoFlip(self)
        old = flip.start()
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=3")
        flip.waitLog(f"sleeping 3.0s for a request (PID {old})")
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := flip.pid()) != old and p, "new PID")
        flip.waitServing(new)
        self.assertEqual(servedBy(port), new)
        self.assertTrue(pidAlive(old), "the old generation should still be draining")
        slow.join()
        self.assertIsNone(slow.error)
        status, headers, body = slow.response
        self.assertEqual(status, 200)
        self.assertIn(f'"pid": {old}'.encode(), body)
        waitFor(lambda: not pidAlive(old), "old PID to exit after its last request")


class DrainEdgeTests(TestCase):
    def test_nextRequestAfterLongResponseIsServed(self):
        """
        A response whose headers went out before the drain and that ends long
        after it: the connection is not closed but moves to the new generation
        once idle, and the new generation answers its next request.
        """
        flip, port = demoFlip(self)
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
        # Idle now, it moves; a request sent before the move would be answered here.
        flip.waitLog(f"[txflip gen 1 pid {old}] moved 1 connection(s) to generation 2")
        conn.request("GET", "/sleep?seconds=0")
        second = conn.getresponse()
        second.read()
        self.assertEqual(second.status, 200)
        self.assertEqual(second.getheader("X-Served-By"), str(new))
        self.assertIsNone(second.getheader("Connection"))

    def test_pipelinedRequestsAllAnswered(self):
        flip, port = demoFlip(self)
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
