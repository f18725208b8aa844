"""
Two generations in one process, for moving connections between them: two
listener registries share a real listening socket (as two generations do),
the old one accepts, and a mover and a receiver talk over a real transfer
socketpair.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from txflip.core.connadopt import ConnectionReceiver
from txflip.core.connmove import ConnectionMover
from txflip.core.drain import ConnectionTracker
from txflip.core.events import Events
from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.transfer import transferPair


class TwoGenerations(TestCase):
    """
    A test case whose old generation serves L{oldFactory} on C{address};
    L{receive} starts the new one (serving L{newFactory}, or another), and
    L{mover} the move.
    """

    def makeFactory(self, name: str):
        raise NotImplementedError

    def setUp(self) -> None:
        self.tracker = ConnectionTracker()
        self.old = ListenerRegistry(reactor, factoryHook=self.tracker.track)
        self.oldFactory = self.makeFactory("old")
        port = self.old.standIn.listenTCP(0, self.oldFactory, interface="127.0.0.1")
        self.address = port.getHost()
        self.addCleanup(self.old.stopAll)
        self.key = self.old.listeners[0].key
        self.newTracker = ConnectionTracker()
        self.newFactory = self.makeFactory("new")
        self.ours, self.theirs = transferPair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)

    def nextGeneration(self, factory) -> ListenerRegistry:
        """A second registry on the same socket, not accepting (the old one accepts)."""
        inherited = InheritedListener(
            os.dup(self.old.listeners[0].port.fileno()), self.key, "AF_INET"
        )
        registry = ListenerRegistry(
            reactor, [inherited], factoryHook=self.newTracker.track, paused=True
        )
        registry.standIn.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(registry.releaseAll)
        return registry

    def mover(self, drainTimeout: float = 10.0) -> ConnectionMover:
        mover = ConnectionMover(reactor, self.tracker, self.old, self.ours, Events(), drainTimeout)
        self.addCleanup(mover.abandon, "the test is over")
        return mover

    def receive(self, factory=None) -> ConnectionReceiver:
        registry = self.nextGeneration(factory or self.newFactory)
        receiver = ConnectionReceiver(reactor, registry, self.theirs, 1)
        self.addCleanup(receiver.close)
        return receiver
