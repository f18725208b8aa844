"""
What kind of process a generation is: its I{role}.

A L{txflip.core.generation.Generation} is the same restart logic whatever it
runs in: one process that serves (L{SingleProcess}, the default), the leader
of a generation of workers, or one of those workers (both in
L{txflip.workers}). What differs is declared here, in L{IGenerationRole}, and
nothing else of a generation is overridden: a role is passed in, it never
subclasses.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface, implementer

from txflip.core.connadopt import receiveConnections
from txflip.core.listeners import ListenerRegistry


class IGenerationRole(Interface):
    """How one kind of process takes part in a generation's life."""

    registryFactory = Attribute(
        "The listener store's class: called as ListenerRegistry is, with the reactor, "
        "the inherited listeners and its keyword arguments."
    )
    acceptsReadyCalls = Attribute(
        "Whether the app's own readiness calls (expectReady, ready) count in this process."
    )
    workerIndex = Attribute("Which worker of its generation this process is, or None.")

    def attach(generation):
        """The generation is built (its registry too): set up what the role needs."""

    def starting():
        """
        The generation starts (the reactor runs, the app is built).

        @return: C{False} if the start must not go on (the role failed it).
        """

    def takeOverRefusal():
        """
        The predecessor said go (or died): why this process must not take over,
        or C{None} if it may.
        """

    def upgradeRefusal():
        """Why this process never starts a successor, or C{None} if it may."""

    def newDrain(handedOver, transfer):
        """
        The drain of this process's connections, or C{None} for the usual one
        (which moves idle connections over C{transfer}, the successor's
        transfer channel, when there is one). A role that returns its own
        drain is given C{transfer} to use as it sees fit.
        """

    def takeMoved(generation):
        """
        The generation serves: start taking the connections its predecessor
        moves here. Return what takes them (with a C{receiving} attribute,
        true while more may arrive), or C{None}.
        """

    def failingStart():
        """The generation is about to exit because it cannot start."""

    def stopping():
        """The generation starts to stop for good."""

    def status(status):
        """Add what this role knows to C{status}, the generation's status C{dict}."""

    def reopenLogs():
        """The generation reopened its log files: have this role's other processes do so."""


@implementer(IGenerationRole)
class SingleProcess:
    """The default role: this process serves its listeners itself."""

    registryFactory = ListenerRegistry
    acceptsReadyCalls = True
    workerIndex = None

    def attach(self, generation) -> None:
        pass

    def starting(self) -> bool:
        return True

    def takeOverRefusal(self) -> str | None:
        return None

    def upgradeRefusal(self) -> str | None:
        return None

    def newDrain(self, handedOver: bool, transfer):
        return None

    def takeMoved(self, generation):
        return receiveConnections(generation.reactor, generation.registry, generation.inherited)

    def failingStart(self) -> None:
        pass

    def stopping(self) -> None:
        pass

    def status(self, status: dict) -> None:
        pass

    def reopenLogs(self) -> None:
        pass
