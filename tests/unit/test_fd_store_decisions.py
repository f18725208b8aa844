"""
When txflip uses systemd's fd store, what it stores and removes, and what the
next generation learns: in process, with real listening sockets and a real
datagram socket standing in for systemd's (L{FakeFdStore}).
"""

from __future__ import annotations

import json
import os
import socket

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.support.fakesystemd import FakeFdStore
from tests.support.procs import shortTempDir
from txflip.core.generation import Generation
from txflip.core.handoff import InheritedListener
from txflip.core.state import State
from txflip.systemd import fdstore
from txflip.systemd import notify as sdnotify
from txflip.systemd.activation import Activation
from txflip.systemd.fdnames import nameForKey


class SettingsTests(TestCase):
    def test_fdStoreVariable(self) -> None:
        """$FDSTORE (systemd 254+) is read, removed, and carried to the next generation."""
        env = {"NOTIFY_SOCKET": "/run/n", "FDSTORE": "16"}
        settings = sdnotify.takeFromEnvironment(env, pid=1)
        self.assertEqual((settings.fdStoreMax, env), (16, {}))
        carried = settings.withStored(["txflip.a", "txflip.b"]).childEnvironment()
        again = sdnotify.takeFromEnvironment(dict(carried), pid=2)
        self.assertEqual(
            again, sdnotify.NotifySettings("/run/n", None, 16, ("txflip.a", "txflip.b"))
        )


class StoreTests(TestCase):
    def setUp(self) -> None:
        self.systemd = FakeFdStore(self, os.path.join(shortTempDir(self), "notify"))
        self.generation = Generation(
            reactor, inherited=None, simpleModeReason=None, argv=["python"], cwd="/"
        )
        self.registry = self.generation.registry
        factory = Factory.forProtocol(Protocol)
        self.ports = [
            self.registry.standIn.listenTCP(0, factory, interface="127.0.0.1") for _ in range(3)
        ]
        for port in self.ports:
            self.addCleanup(port.stopListening)

    def install(self, optIn=True, fdStoreMax=None, stored=(), activated=None):
        settings = sdnotify.NotifySettings(self.systemd.address, None, fdStoreMax, tuple(stored))
        return fdstore.install(self.generation, settings, activated or Activation(), optIn=optIn)

    def serve(self) -> None:
        self.generation.events.emit("serving", first=True, listeners=[])
        self.systemd.receive(1.0)

    def test_storesEveryListenerOnceServing(self) -> None:
        self.install()
        self.systemd.receive(0.05)
        self.assertEqual(self.systemd.store, [])
        self.serve()
        keys = [listener.key for listener in self.registry.active()]
        self.assertEqual(self.systemd.names(), [nameForKey(key) for key in keys])
        for (_, fd), port in zip(self.systemd.store, self.ports, strict=True):
            self.assertEqual(os.fstat(fd).st_ino, os.fstat(port.fileno()).st_ino)
        self.assertEqual(
            [listener.key for listener in self.registry.active() if listener.heldElsewhere], keys
        )
        carried = json.loads(self.generation.childEnvironment[sdnotify.ENV_CARRIED])
        self.assertEqual(sorted(carried["stored"]), sorted(self.systemd.names()))

    def test_removesWhatNoListenerHasNow(self) -> None:
        gone = nameForKey("tcp:127.0.0.1:1")
        self.install(stored=[gone])
        self.serve()
        self.assertIn(
            (os.getpid(), {"FDSTOREREMOVE": "1", "FDNAME": gone}, 0), self.systemd.messages
        )

    def test_socketUnitSocketsAreNotStoredAgain(self) -> None:
        held = self.registry.active()[0].key
        self.install(activated=Activation(keys=[held], names=["web"]))
        self.serve()
        self.assertNotIn(nameForKey(held), self.systemd.names())
        self.assertEqual(len(self.systemd.store), 2)

    def test_fdStoreVariableAloneTurnsItOn(self) -> None:
        self.assertIsNone(self.install(optIn=False))
        self.assertIsNotNone(self.install(optIn=False, fdStoreMax=8))

    def test_tooSmallAStoreIsSaid(self) -> None:
        logged: list[str] = []
        from twisted.logger import formatEvent, globalLogPublisher

        observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.install(fdStoreMax=2)
        self.serve()
        self.assertTrue(
            any(
                "fewer than the 3 listeners: raise FileDescriptorStoreMax=" in line
                for line in logged
            ),
            logged,
        )

    def test_withoutNotifySocket(self) -> None:
        settings = sdnotify.NotifySettings(None)
        self.assertIsNone(fdstore.install(self.generation, settings, Activation(), optIn=True))


class OfferedSocketTests(TestCase):
    def test_storedSocketNobodyListensOnHoldsNoOneUp(self) -> None:
        """
        A socket the fd store hands back that this configuration dropped: the
        generation serves without it and closes it, instead of waiting for it
        until the ready timeout (and, under Restart=, for ever).
        """
        skt = socket.socket()
        skt.bind(("127.0.0.1", 0))
        fd = os.dup(skt.fileno())
        skt.close()
        key = "tcp:127.0.0.1:1"
        generation = Generation(
            reactor,
            inherited=None,
            simpleModeReason=None,
            argv=["python"],
            cwd="/",
            listeners=[InheritedListener(fd, key, "AF_INET")],
        )
        generation.registry.offer([key])
        # What this configuration does listen on.
        generation.registry.standIn.listenTCP(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.addCleanup(
            lambda: [each.port.stopListening() for each in generation.registry.active()]
        )
        generation.start()
        self.assertIs(generation.state, State.SERVING)
        self.assertRaises(OSError, os.fstat, fd)
