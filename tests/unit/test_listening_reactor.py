"""
The stand-in for the reactor's listen methods: it declares (and provides) the
reactor interfaces it stands in for, takes their place in the reactor, leaves
connecting to the reactor, and puts what it listens on in the registry.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorSSL, IReactorTCP, IReactorUDP, IReactorUNIX
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from txflip.core.listeners import ListenerRegistry
from txflip.core.listening import ListeningReactor, MulticastNotHandedOver


class ListeningReactorTests(TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.registry = ListenerRegistry(self.reactor)
        self.standIn = self.registry.standIn

    def test_providesTheInterfacesItStandsInFor(self) -> None:
        self.assertIsInstance(self.standIn, ListeningReactor)
        for interface in (IReactorTCP, IReactorUNIX, IReactorSSL, IReactorUDP):
            self.assertTrue(verifyObject(interface, self.standIn), interface)

    def test_installTakesTheListenMethodsOnly(self) -> None:
        connectTCP = self.reactor.connectTCP
        self.registry.install()
        self.assertEqual(self.reactor.listenTCP, self.standIn.listenTCP)
        self.assertEqual(self.reactor.listenUNIX, self.standIn.listenUNIX)
        self.assertEqual(self.reactor.listenSSL, self.standIn.listenSSL)
        self.assertEqual(self.reactor.listenUDP, self.standIn.listenUDP)
        self.assertRaises(MulticastNotHandedOver, self.reactor.listenMulticast, 5353, None)
        self.assertEqual(self.reactor.connectTCP, connectTCP)

    def test_connectingIsTheReactors(self) -> None:
        factory = ClientFactory.forProtocol(Protocol)
        self.standIn.connectTCP("127.0.0.1", 80, factory, timeout=7)
        self.standIn.connectUNIX("/run/app.sock", factory)
        self.assertEqual(self.reactor.tcpClients[0][:4], ("127.0.0.1", 80, factory, 7))
        self.assertEqual(self.reactor.unixClients[0][:2], ("/run/app.sock", factory))
        self.assertEqual(self.registry.listeners, [])

    def test_whatItListensOnIsInTheRegistry(self) -> None:
        """Through the real reactor's adoption: the registry holds the listener and its port."""
        from twisted.internet import reactor

        registry = ListenerRegistry(reactor)
        self.addCleanup(registry.stopAll)
        port = registry.standIn.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        [listener] = registry.listeners
        self.assertIs(listener.port, port)
        self.assertEqual(registry.find("tcp:127.0.0.1:0"), listener)
        self.assertEqual(registry.keyOf(port), "tcp:127.0.0.1:0")
