"""
A final shutdown closes every listener even when one of them fails to close.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txflip.core.listeners import ListenerRegistry


class StopAllTests(TestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []
        observer = lambda event: self.logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    async def test_oneFailureDoesNotStopTheOthers(self) -> None:
        registry = ListenerRegistry(reactor)
        factory = Factory.forProtocol(Protocol)
        broken = registry.standIn.listenTCP(0, factory, interface="127.0.0.1")
        healthy = registry.standIn.listenTCP(0, factory, interface="127.0.0.1")
        healthyPort = healthy.getHost().port
        self.addCleanup(broken.stopListening)

        def cannotClose():
            raise OSError(5, "Input/output error")

        broken.stopListening = cannotClose
        await registry.stopAll()

        self.assertFalse(healthy.connected)
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", healthyPort)), 0)
        failures = [line for line in self.logged if "failed: [Errno 5] Input/output error" in line]
        self.assertEqual(len(failures), 1, self.logged)
        self.assertIn("closing listener tcp:127.0.0.1:0", failures[0])
