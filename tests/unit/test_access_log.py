"""
C{--access-log}: HTTP requests logged straight to a file, appended to, a
moment's lines in one write, and the file opened again by path on request.
"""

from __future__ import annotations

import fcntl
import os
import re

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.support.inprocess import ScriptedGeneration, clockReactor
from txflip.core.accesslog import FLUSH_BYTES, FLUSH_SECONDS, AccessLog

COMBINED = re.compile(
    r'^"10\.0\.0\.7" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"GET /hello\?n=(\d+) HTTP/1\.1" 200 5 "-" "probe/1"$'
)


def site(reactor) -> Site:
    root = Resource()
    root.putChild(b"hello", Data(b"hello", "text/plain"))
    return Site(root, reactor=reactor)


def get(factory, n: int, expect: bytes = b"200 OK") -> None:
    """One request on a connection of C{factory}'s, answered at once."""
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.7", 5555))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 5555))
    protocol.makeConnection(transport)
    protocol.dataReceived(
        f"GET /hello?n={n} HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n".encode()
    )
    assert expect in transport.value(), transport.value()


def read(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


class AccessLogTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.path = os.path.join(self.mktemp() + "-dir", "access.log")
        os.makedirs(os.path.dirname(self.path))
        self.log = AccessLog(self.clock, self.path)
        self.addCleanup(self.log.close)

    def test_siteRequestsInCombinedFormatWithinTheFlushDelay(self) -> None:
        factory = self.log.attach(site(self.clock))
        get(factory, 1)
        get(factory, 2)
        self.assertEqual(read(self.path), [], "gathered, not written one by one")
        self.clock.advance(FLUSH_SECONDS)
        written = read(self.path)
        self.assertEqual([COMBINED.match(line).group(1) for line in written], ["1", "2"])
        self.assertIn("[14/Nov/2023:22:13:20 +0000]", written[0])

    def test_openedForAppendingAndNotInherited(self) -> None:
        with open(self.path, "w") as f:
            f.write("earlier line\n")
        self.log.write("later line\n")
        self.log.flush()
        self.assertEqual(read(self.path), ["earlier line", "later line"])
        fd = self.log._fd
        self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
        self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)

    def test_aLargeBacklogIsWrittenAtOnce(self) -> None:
        line = "x" * 99 + "\n"
        for _ in range(FLUSH_BYTES // len(line) + 1):
            self.log.write(line)
        self.assertEqual(len(read(self.path)), FLUSH_BYTES // len(line) + 1)

    def test_reopenAfterAMoveStartsANewFile(self) -> None:
        """What was pending goes to the moved file; what follows, to a new one at the path."""
        self.log.write("before 1\n")
        self.log.flush()
        self.log.write("before 2\n")
        os.rename(self.path, self.path + ".1")
        self.log.reopen()
        self.log.write("after\n")
        self.clock.advance(FLUSH_SECONDS)
        self.assertEqual(read(self.path + ".1"), ["before 1", "before 2"])
        self.assertEqual(read(self.path), ["after"])

    def test_closeWritesWhatIsPending(self) -> None:
        self.log.write("last\n")
        self.log.close()
        self.log.write("after the close\n")
        self.assertEqual(read(self.path), ["last"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_onlyHTTPFactoriesAreLogged(self) -> None:
        factory = Factory.forProtocol(Protocol)
        self.assertIs(self.log.attach(factory), factory)
        self.assertNotIn("log", vars(factory))

    def test_unopenablePathRaises(self) -> None:
        self.assertRaises(OSError, AccessLog, self.clock, os.path.join(self.path, "under-a-file"))


class GenerationAccessLogTests(TestCase):
    def test_everyFactoryTheAppListensWithIsLogged(self) -> None:
        """A Site the app listens with itself (not through --listen) logs there too."""
        generation = ScriptedGeneration(self, clockReactor())
        path = os.path.join(os.path.dirname(generation.pidFile), "access.log")
        accessLog = generation.logs.useAccessLog(path)
        self.addCleanup(accessLog.close)
        web = site(generation.reactor)
        port = generation.registry.standIn.listenTCP(0, web, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        get(web, 3)
        accessLog.flush()
        self.assertEqual([COMBINED.match(line).group(1) for line in read(path)], ["3"])
        self.assertEqual(generation.logs.files.reopen(), [f"the access log {path}"])
