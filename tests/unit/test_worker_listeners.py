"""
A worker listens only on what its leader handed it: an address the leader did
not open is refused with a message saying why, before any socket is made; and
it takes one connection each time its shared listening socket wakes it.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from txflip.core.handoff import InheritedListener
from txflip.workers.leader import LeaderRegistry
from txflip.workers.worker import NotOpenedByTheLeader, WorkerRegistry, acceptOneAtATime


class WorkerListenerTests(TestCase):
    def test_anAddressTheLeaderDidNotOpenIsRefused(self) -> None:
        leaderSocket = socket.socket()
        leaderSocket.bind(("127.0.0.1", 0))
        leaderSocket.listen(5)
        self.addCleanup(leaderSocket.close)
        port = leaderSocket.getsockname()[1]
        fd = os.dup(leaderSocket.fileno())
        registry = WorkerRegistry(
            reactor, [InheritedListener(fd, f"tcp:127.0.0.1:{port}", "AF_INET")], paused=True
        )
        adopted = registry.standIn.listenTCP(port, Factory(), interface="127.0.0.1")
        self.addCleanup(adopted.stopListening)
        with self.assertRaises(NotOpenedByTheLeader) as caught:
            registry.standIn.listenTCP(port + 1, Factory(), interface="127.0.0.1")
        self.assertIn(
            f"tcp:127.0.0.1:{port + 1} was not opened by the leader", str(caught.exception)
        )
        self.assertEqual(
            [listener.key for listener in registry.listeners], [f"tcp:127.0.0.1:{port}"]
        )


class LeaderListenerTests(TestCase):
    def test_mutedListenersNeverAcceptButTheControlSocketDoes(self) -> None:
        """A leader's app listeners stay paused through every resume; its own resume."""
        registry = LeaderRegistry(reactor)
        self.addCleanup(registry.stopAll)
        app = registry.standIn.listenTCP(0, Factory(), interface="127.0.0.1")
        control = registry.standIn.listenTCP(0, Factory(), interface="127.0.0.1")
        registry.markInternal("tcp:127.0.0.1:0#1")
        registry.mute()
        self.assertNotIn(app, reactor.getReaders())
        registry.pauseAll()
        registry.resumeAll()
        self.assertNotIn(app, reactor.getReaders())
        self.assertIn(control, reactor.getReaders())
        self.assertEqual([each.muted for each in registry.listeners], [True, False])


class Counted(Factory):
    """Builds plain protocols and keeps them, to count and close."""

    protocol = Protocol

    def __init__(self) -> None:
        self.built: list[Protocol] = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.built.append(protocol)
        return protocol


class OneAcceptPerWakeupTests(TestCase):
    def burst(self, count: int) -> tuple[object, Counted]:
        """A listening port, not read by the reactor, with C{count} connections queued."""
        factory = Counted()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        port.stopReading()  # the test calls doRead, as the reactor would when readable
        self.addCleanup(port.stopListening)
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
            self.addCleanup(client.close)
        self.addCleanup(lambda: [p.transport.abortConnection() for p in factory.built])
        return port, factory

    def test_aWorkerTakesOneConnectionEachTimeItWakes(self) -> None:
        """The rest of a burst stays queued for the other workers, whatever the scheduler does."""
        port, factory = self.burst(3)
        acceptOneAtATime(port)
        port.doRead()
        self.assertEqual(len(factory.built), 1)
        port.doRead()
        self.assertEqual(len(factory.built), 2)

    def test_aPlainPortTakesTheWholeBurst(self) -> None:
        """What a worker must not do: Twisted's port accepts all that is queued at once."""
        port, factory = self.burst(3)
        port.doRead()
        self.assertEqual(len(factory.built), 3)
