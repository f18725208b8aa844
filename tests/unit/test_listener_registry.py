"""
The listener registry in this process, with real sockets in the reactor:
the keys listeners are handed down by, pausing and resuming, releasing a
socket that lives on in the next generation, and what happens to inherited
sockets nobody asks for.

A handoff is done here as the next generation sees it: a second registry
built with duplicates of the first one's descriptors.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.listening import tcpKey, unixKey


class Connected(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected(self)


class Accepted(Factory):
    """A factory that fires C{next} with each connection it accepts."""

    protocol = Connected

    def __init__(self) -> None:
        self.next: Deferred = Deferred()

    def connected(self, protocol: Protocol) -> None:
        waiting, self.next = self.next, Deferred()
        waiting.callback(protocol)


class RegistryTestCase(TestCase):
    def setUp(self) -> None:
        self.logs: list[str] = []
        observer = lambda event: self.logs.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def registry(self, inherited=(), paused: bool = False) -> ListenerRegistry:
        registry = ListenerRegistry(reactor, inherited, paused=paused)
        self.addCleanup(registry.stopAll)
        return registry

    def handDown(self, registry: ListenerRegistry) -> list[InheritedListener]:
        """What the next generation inherits: a duplicate of each active listener's socket."""
        _, described = registry.handoffDescriptors()
        return [
            InheritedListener(os.dup(listener.port.fileno()), item.key, item.family)
            for listener, item in zip(registry.active(), described, strict=True)
        ]

    def connect(self, port: int) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(client.close)
        return client

    def accepted(self, factory: Accepted) -> Deferred:
        """Fires once C{factory} builds a protocol, which is disconnected at cleanup."""
        d = factory.next

        def built(protocol):
            self.addCleanup(protocol.transport.loseConnection)
            return protocol

        return d.addCallback(built)


class KeyTests(TestCase):
    def test_tcpKeyIsWhatWasAskedFor(self) -> None:
        self.assertEqual(tcpKey(8080, ""), "tcp:0.0.0.0:8080")
        self.assertEqual(tcpKey(8080, "127.0.0.1"), "tcp:127.0.0.1:8080")
        self.assertEqual(tcpKey(443, "::1"), "tcp:[::1]:443")
        self.assertEqual(tcpKey(0, "127.0.0.1"), "tcp:127.0.0.1:0")

    def test_unixKeyIsAbsolute(self) -> None:
        self.assertEqual(unixKey("/run/a.sock"), "unix:/run/a.sock")
        self.assertEqual(unixKey(b"/run/a.sock"), "unix:/run/a.sock")
        self.assertEqual(unixKey("a.sock"), "unix:" + os.path.join(os.getcwd(), "a.sock"))


class HandoffTests(RegistryTestCase):
    def test_repeatedAddressesGetTheirOwnKeys(self) -> None:
        """Two listeners on port 0: each is handed down under its own key, in order."""
        first = self.registry()
        ports = [
            first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1").getHost().port
            for _ in range(2)
        ]
        self.assertEqual(
            [listener.key for listener in first.listeners],
            ["tcp:127.0.0.1:0", "tcp:127.0.0.1:0#1"],
        )
        second = self.registry(self.handDown(first), paused=True)
        adopted = [
            second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1").getHost().port
            for _ in range(2)
        ]
        self.assertEqual(adopted, ports)
        self.assertEqual(len([line for line in self.logs if "adopted inherited" in line]), 2)

    def test_claimedInheritedSocketsAreReported(self) -> None:
        """The next generation hears each inherited key it listens on again; the rest wait."""
        first = self.registry()
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        claimed: list[str] = []
        second = ListenerRegistry(reactor, self.handDown(first), onClaimed=claimed.append)
        self.addCleanup(second.stopAll)
        self.addCleanup(second.closeUnclaimed)
        self.assertEqual(second.unclaimed(), ["tcp:127.0.0.1:0", "tcp:127.0.0.1:0#1"])
        second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        self.assertEqual(claimed, ["tcp:127.0.0.1:0"])
        self.assertEqual(second.unclaimed(), ["tcp:127.0.0.1:0#1"])
        second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        self.assertEqual(claimed, ["tcp:127.0.0.1:0", "tcp:127.0.0.1:0#1"])
        self.assertEqual(second.unclaimed(), [])

    def test_handoffDescriptors(self) -> None:
        registry = self.registry()
        port = registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        childFDs, described = registry.handoffDescriptors(firstFd=5)
        self.assertEqual(childFDs, {5: port.fileno()})
        self.assertEqual(described, [InheritedListener(5, "tcp:127.0.0.1:0", "AF_INET")])

    def test_inheritedDescriptorsAreCloseOnExec(self) -> None:
        first = self.registry()
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        inherited = self.handDown(first)
        os.set_inheritable(inherited[0].fd, True)
        second = self.registry(inherited)
        self.addCleanup(second.closeUnclaimed)
        self.assertFalse(os.get_inheritable(inherited[0].fd))

    def test_internalListenersDoNotServe(self) -> None:
        registry = self.registry()
        registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        registry.markInternal("tcp:127.0.0.1:0#1")
        self.assertEqual([listener.key for listener in registry.serving()], ["tcp:127.0.0.1:0"])
        self.assertEqual(len(registry.active()), 2)

    def test_closeUnclaimedClosesAndSaysSo(self) -> None:
        """An inherited socket this generation does not listen on is closed, with a warning."""
        first = self.registry()
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        inherited = self.handDown(first)
        second = self.registry(inherited)
        second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        second.closeUnclaimed()
        [warning] = [line for line in self.logs if "closing inherited listener" in line]
        self.assertIn("tcp:127.0.0.1:0#1: nothing listens there any more", warning)
        self.assertRaises(OSError, os.fstat, inherited[1].fd)
        second.closeUnclaimed()
        self.assertEqual(len([line for line in self.logs if "closing inherited" in line]), 1)


class PauseTests(RegistryTestCase):
    def test_pausedRegistryDoesNotAcceptUntilResumed(self) -> None:
        """A child's ports wait in the kernel's queue until it resumes them."""
        factory = Accepted()
        registry = self.registry(paused=True)
        port = registry.standIn.listenTCP(0, factory, interface="127.0.0.1")
        self.assertNotIn(port, reactor.getReaders())
        self.connect(port.getHost().port)
        registry.resumeAll()
        self.assertIn(port, reactor.getReaders())
        return self.accepted(factory)

    def test_pauseAllStopsAcceptingAndNewPortsStartPaused(self) -> None:
        registry = self.registry()
        first = registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        self.assertIn(first, reactor.getReaders())
        registry.pauseAll()
        later = registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        self.assertEqual([p in reactor.getReaders() for p in (first, later)], [False, False])
        registry.resumeAll()
        self.assertEqual([p in reactor.getReaders() for p in (first, later)], [True, True])


class ReleaseTests(RegistryTestCase):
    def test_releasedTCPSocketLivesOnInTheNextGeneration(self) -> None:
        first = self.registry()
        port = first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        number = port.getHost().port
        successor = Accepted()
        second = self.registry(self.handDown(first))
        second.standIn.listenTCP(0, successor, interface="127.0.0.1")
        first.releaseAll()

        def connect():
            self.assertEqual(first.active(), [])
            self.connect(number)
            return self.accepted(successor)

        return deferLater(reactor, 0, connect)

    def test_releasedIsReleasedAtOnce(self) -> None:
        """A listener let go of is no longer active, nor let go of twice, even in the same turn."""
        registry = self.registry()
        registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        registry.releaseAll()
        self.assertEqual(registry.active(), [])
        registry.releaseAll()
        self.assertEqual(len([line for line in self.logs if "handed over tcp:" in line]), 1)

    def test_releasedUNIXPathStays(self) -> None:
        """A released unix listener leaves its path and socket to the next generation."""
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        first = self.registry()
        first.standIn.listenUNIX(path, Accepted(), mode=0o660)
        inode = os.stat(path).st_ino
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        successor = Accepted()
        second = self.registry(self.handDown(first))
        second.standIn.listenUNIX(path, successor, mode=0o660)

        def connect():
            self.assertEqual(os.stat(path).st_ino, inode)
            client = socket.socket(socket.AF_UNIX)
            self.addCleanup(client.close)
            client.connect(path)
            return self.accepted(successor)

        first.releaseAll()
        return deferLater(reactor, 0, connect)

    def test_stopAllRemovesTheUNIXPath(self) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        registry = ListenerRegistry(reactor)
        registry.standIn.listenUNIX(path, Accepted())
        return registry.stopAll().addCallback(lambda _: self.assertFalse(os.path.exists(path)))


class BindUNIXTests(RegistryTestCase):
    def test_staleSocketFileReplaced(self) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        self.registry().standIn.listenUNIX(path, Accepted())
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))

    def test_somethingElseInTheWay(self) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        open(path, "w").close()
        error = self.assertRaises(
            CannotListenError, self.registry().standIn.listenUNIX, path, Accepted()
        )
        self.assertIn("exists and is not a socket", str(error))
        self.assertTrue(os.path.isfile(path))

    def test_anotherListenerThere(self) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        busy = socket.socket(socket.AF_UNIX)
        self.addCleanup(busy.close)
        busy.bind(path)
        busy.listen(1)
        error = self.assertRaises(
            CannotListenError, self.registry().standIn.listenUNIX, path, Accepted()
        )
        self.assertIn("another process listens there", str(error))


class ListenerFactsTests(RegistryTestCase):
    """What code outside the core tells a listener, through its methods."""

    def test_offeredSocketIsNotWaitedForButIsAdoptedIfAsked(self) -> None:
        first = self.registry()
        first.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        second = self.registry(self.handDown(first))
        second.offer(["tcp:127.0.0.1:0", "tcp:127.0.0.1:1"])
        self.assertEqual(second.unclaimed(), [])
        self.assertTrue(second.find("tcp:127.0.0.1:0").offered)
        self.assertIsNone(second.find("tcp:127.0.0.1:1"), "an offer of nothing makes nothing")
        second.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        self.assertTrue(any("adopted inherited listener tcp:127.0.0.1:0" in x for x in self.logs))

    def test_heldElsewhereOutlivesAFinalShutdown(self) -> None:
        """A listener another process keeps (systemd's fd store) is let go of, path and all."""
        path = os.path.join(tempfile.mkdtemp(prefix="txflip-reg-"), "app.sock")
        registry = ListenerRegistry(reactor)
        registry.standIn.listenUNIX(path, Accepted())
        [listener] = registry.active()
        listener.markHeldElsewhere()
        inode = os.stat(path).st_ino

        def stopped(_):
            self.assertEqual(os.stat(path).st_ino, inode)
            said = f"handed over unix:{path}: it stays open in the other generation"
            self.assertTrue(any(said in line for line in self.logs), self.logs)
            os.unlink(path)

        return registry.stopAll().addCallback(stopped)

    def test_internalIsTheListenersOwn(self) -> None:
        registry = self.registry()
        registry.standIn.listenTCP(0, Accepted(), interface="127.0.0.1")
        registry.markInternal("tcp:127.0.0.1:0")
        self.assertTrue(registry.isInternal("tcp:127.0.0.1:0"))
        self.assertFalse(registry.isInternal("tcp:127.0.0.1:1"))
        self.assertFalse(registry.isInternal(None))
        self.assertIsNone(registry.appFactory("tcp:127.0.0.1:0"), "no app traffic there")
