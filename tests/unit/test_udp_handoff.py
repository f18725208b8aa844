"""
UDP ports handed from one generation's registry to the next, in one process
over real sockets: datagrams that arrive while both are paused wait in the
shared socket's buffer and are read by the new generation; the old one can
still answer from the same address after it let go.
"""

from __future__ import annotations

import fcntl
import os
import socket

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from tests.support.procs import waitUntil
from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.listening import MulticastNotHandedOver, bindUDP, udpKey


class Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data, addr) -> None:
        self.received.append(data)


class UDPHandoffTests(TestCase):
    def _client(self) -> socket.socket:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.settimeout(10)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_queuedDatagramsGoToTheNewGeneration(self):
        old, oldProtocol = ListenerRegistry(reactor), Recorder()
        oldPort = old.standIn.listenUDP(0, oldProtocol, interface="127.0.0.1")
        self.addCleanup(oldPort.stopListening)
        address = ("127.0.0.1", oldPort.getHost().port)
        childFDs, described = old.handoffDescriptors(firstFd=3)
        self.assertEqual([d.key for d in described], ["udp:127.0.0.1:0"])
        handed = InheritedListener(os.dup(childFDs[3]), described[0].key, described[0].family)

        new, newProtocol = ListenerRegistry(reactor, [handed], paused=True), Recorder()
        newPort = new.standIn.listenUDP(0, newProtocol, interface="127.0.0.1")
        self.addCleanup(newPort.stopListening)
        self.assertEqual(newPort.getHost().port, address[1])

        client = self._client()
        client.sendto(b"before", address)
        yield waitUntil(lambda: oldProtocol.received, "the old generation to read a datagram")
        old.pauseAll()
        probe = Recorder()
        probePort = reactor.listenUDP(0, probe, interface="127.0.0.1")
        self.addCleanup(probePort.stopListening)
        client.sendto(b"during", address)
        client.sendto(b"probe", ("127.0.0.1", probePort.getHost().port))
        # A reactor that has read a datagram sent after this one would have read it too.
        yield waitUntil(lambda: probe.received, "the reactor to read a later datagram")
        self.assertEqual((oldProtocol.received, newProtocol.received), ([b"before"], []))

        new.resumeAll()
        old.releaseAll()
        yield waitUntil(lambda: newProtocol.received, "the new generation to read a datagram")
        self.assertEqual(newProtocol.received, [b"during"])
        self.assertEqual(old.active(), [])
        oldPort.write(b"late answer", client.getsockname())
        self.assertEqual(client.recvfrom(100), (b"late answer", address))
        client.sendto(b"after", address)
        yield waitUntil(lambda: len(newProtocol.received) == 2, "a second datagram")
        self.assertEqual(oldProtocol.received, [b"before"])

    def test_socketOptions(self):
        """Close-on-exec, non-blocking, and no SO_REUSEADDR (which would let two binds share)."""
        skt = bindUDP(0, "127.0.0.1")
        self.addCleanup(skt.close)
        self.assertTrue(fcntl.fcntl(skt.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        self.assertFalse(skt.getblocking())
        self.assertEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 0)
        with self.assertRaises(CannotListenError):
            bindUDP(skt.getsockname()[1], "127.0.0.1").close()

    def test_keys(self):
        self.assertEqual(udpKey(53, ""), "udp:0.0.0.0:53")
        self.assertEqual(udpKey(53, "::1"), "udp:[::1]:53")

    def test_multicastRefused(self):
        registry = ListenerRegistry(reactor)
        with self.assertRaises(MulticastNotHandedOver) as caught:
            registry.standIn.listenMulticast(5353, DatagramProtocol())
        self.assertIn("listenMulticast(5353) is not supported under txflip", str(caught.exception))
