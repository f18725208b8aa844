"""
Readiness is the app's: an app that listens only after set-up of its own, and
one that says READY=1 over sd_notify itself, are each served through restarts
under load without a failed request, and the PID file appears only once they
are ready.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeApp
from tests.support.procs import Flip, freePort, readPidFile, txflip, waitFor
from tests.support.together import restartsUnderLightLoad

LISTENS_LATE = """
import os

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"hello"


class OpensItsDatabaseFirst(service.Service):
    # As Synapse or Buildbot do: set-up first, listening later; startService
    # returns nothing that says when.
    def startService(self):
        service.Service.startService(self)
        deferLater(reactor, 1.5, reactor.listenTCP, %(port)d, Site(Hello()), interface="127.0.0.1")


app = OpensItsDatabaseFirst()
"""

SAYS_READY = """
import os
import socket

from twisted.internet import reactor
from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"hello"


def notify(message):
    # What an app with its own sd_notify code does.
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    skt.connect(os.environ["NOTIFY_SOCKET"])
    skt.send(message)
    skt.close()


resource = Hello()
reactor.callWhenRunning(reactor.callLater, 1.0, notify, b"STATUS=warm\\nREADY=1")
"""


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


class AppReadinessTests(TestCase):
    def flip(self, template: str, *args: str) -> tuple[Flip, int]:
        """A flip serving C{template} as myapp; C{{port}} in C{args} is its port."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "myapp", template, port=port)
        args = [arg.replace("{port}", str(port)) for arg in args]
        return Flip(self, args, workdir=workdir, env=appEnv(workdir)), port

    def test_appThatListensLate(self) -> None:
        flip, port = self.flip(LISTENS_LATE, "--app", "myapp.app")
        flip.start(waitReady=False)
        waitFor(lambda: readPidFile(flip.pidFile) is not None, "the PID file")
        self.assertTrue(accepts(port), "the PID file was written before the app listened")
        first = readPidFile(flip.pidFile)
        os.kill(first, signal.SIGHUP)
        # While the new generation sets up, txflip status says what it waits for.
        waitFor(
            lambda: (
                f"the next generation waits for: listening again on tcp:127.0.0.1:{port}"
                in txflip("status", "--pid-file", flip.pidFile).stdout
            ),
            "txflip status to show what the new generation waits for",
        )
        second = waitFor(lambda: (p := flip.pid()) != first and p, "the new generation")
        flip.waitServing(second)
        restartsUnderLightLoad(self, flip, port, 4)

    def test_appThatSaysReadyItself(self) -> None:
        flip, port = self.flip(
            SAYS_READY,
            "--app",
            "myapp.resource",
            "--app-notify",
            "--listen",
            "tcp:{port}:interface=127.0.0.1",
        )
        first = flip.start()
        self.assertIn(f"[txflip gen 1 pid {first}] the app says READY=1", flip.log())
        log = flip.log()
        self.assertLess(log.index("the app says READY=1"), log.index("serving (first generation)"))
        restartsUnderLightLoad(self, flip, port, 5)
        self.assertEqual(flip.log().count("the app says READY=1"), 6)
