"""
SIGTERM drains even when closing a listener fails: the failure is logged, the
request in flight is answered, the process exits 0 and removes its PID file.
"""

from __future__ import annotations

import os
import signal
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.mounts import remountReadOnly, tinyTmpfs
from tests.support.procs import BackgroundGet, Flip, freePort


class ListenerCloseFailureTests(TestCase):
    def test_unixPathOnAReadOnlyDisk(self):
        """
        The control socket lives on a filesystem that went read-only (a real
        tmpfs, remounted): its path cannot be removed at the shutdown.
        """
        disk = tinyTmpfs(self)
        port = freePort()
        control = os.path.join(disk, "control.sock")
        flip = Flip(
            self,
            ["--listen", f"tcp:{port}:interface=127.0.0.1", "--control", control],
        )
        pid = flip.start()
        proxy = DelayProxy(("127.0.0.1", port), delay=0.02).start()
        self.addCleanup(proxy.stop)
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=2")
        slowThroughProxy = BackgroundGet("127.0.0.1", proxy.port, "/sleep?seconds=2")
        flip.waitLog(f"sleeping 2.0s for a request (PID {pid})", count=2)
        remountReadOnly(disk)
        os.kill(pid, signal.SIGTERM)

        self.assertEqual(flip.process.wait(60), 0, flip.log()[-3000:])
        for request in (slow, slowThroughProxy):
            request.join()
            self.assertIsNone(request.error)
            self.assertEqual(request.response[0], 200)
        log = flip.log()
        self.assertIn(f"cannot remove {control}: Read-only file system", log)
        self.assertNotIn("Unhandled error", log)
        self.assertIn("generation exits (shut down)", log)
        self.assertFalse(os.path.exists(flip.pidFile))


FAILS_TO_STOP = """
import os
from twisted.application import service
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        return b"pid " + str(os.getpid()).encode()

class FailsToStop(service.Service):
    def startService(self):
        service.Service.startService(self)
        self.port = reactor.listenTCP(%(port)d, Site(Hello()), interface="127.0.0.1")

    def stopService(self):
        service.Service.stopService(self)
        raise RuntimeError("the database connection is already gone")

def makeService():
    return FailsToStop()
"""


class AppStopFailureTests(TestCase):
    def test_appServiceRaisesAtStop(self):
        """The app's stopService raises: logged, and the exit is still clean."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "failstop", FAILS_TO_STOP, port=port)
        flip = Flip(self, ["--app", "failstop.makeService"], workdir=workdir, env=appEnv(workdir))
        pid = flip.start()
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(flip.process.wait(60), 0, flip.log()[-3000:])
        self.assertIn(
            "stopping the app failed: RuntimeError: the database connection is already gone",
            flip.log(),
        )
        self.assertIn("generation exits (shut down)", flip.log())
        self.assertFalse(os.path.exists(flip.pidFile))
