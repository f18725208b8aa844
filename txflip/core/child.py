"""
The child side of a handoff: a new generation's link to the one that started it.

The link is the inherited end of a socketpair (L{txflip.core.channel}). The
child says C{ready} once its app is ready, waits for C{go}, starts accepting,
and says C{serving}; a reason for failing is written before the child exits,
so that it reaches the parent word for word.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet.task import LoopingCall

from txflip.core.channel import (
    HEARTBEAT_SECONDS,
    PredecessorChannel,
    adoptChannel,
    reportFailureSynchronously,
    writeLine,
)
from txflip.core.handoff import HandoffState
from txflip.core.twistedprivate import hasQueuedOutput


class PredecessorLink:
    """
    What this generation says to its predecessor, and hears back.

    @param onGo: called with a reason once the predecessor says go (or died).
    @param onAbandoned: called with a reason if the predecessor gave up on us.
    @param onStart: called when the predecessor says its app has stopped
        (a sequential handover).
    @param onReopenLogs: called when the predecessor says to reopen the log files.
    @param onCarry: called with the JSON of each C{carry} line (L{txflip.core.carry}).
    """

    def __init__(
        self,
        reactor,
        inherited: HandoffState,
        onGo: Callable[[str], None],
        onAbandoned: Callable[[str], None],
        onStart: Callable[[], None] = lambda: None,
        onReopenLogs: Callable[[], None] = lambda: None,
        onCarry: Callable[[str], None] = lambda text: None,
        onRollbackAnswer: Callable[[str | None], None] = lambda refusal: None,
    ) -> None:
        self._onReopenLogs = onReopenLogs
        self._onCarry = onCarry
        self._onRollbackAnswer = onRollbackAnswer
        self._reactor = reactor
        self._inherited = inherited
        self._onGo = onGo
        self._onAbandoned = onAbandoned
        self._onStart = onStart
        self._channel: PredecessorChannel | None = None
        self._heartbeat: LoopingCall | None = None

    @property
    def parentPid(self) -> int:
        return self._inherited.parentPid

    def open(self) -> None:
        """Start talking to the predecessor (once the reactor runs)."""
        if self._channel is None:
            channelSocket = socket.socket(fileno=self._inherited.controlFd)
            self._channel = adoptChannel(
                self._reactor,
                channelSocket,
                PredecessorChannel(
                    self._onGo,
                    self._onAbandoned,
                    self._inherited.parentPid,
                    self._onStart,
                    onReopenLogs=self._onReopenLogs,
                    onCarry=self._onCarry,
                    onRollbackAnswer=self._onRollbackAnswer,
                ),
            )

    def waiting(self, what: list[str]) -> None:
        """Tell the predecessor what this generation still waits for."""
        if self._say() and what:
            self._channel.waiting(", ".join(what))

    def prepared(self) -> None:
        """Sequential handover: the app is built; start comes once the predecessor's stopped."""
        self.open()
        self._channel.prepared()

    def ready(self) -> None:
        """Tell the predecessor this generation is ready; it will answer go."""
        self.open()
        self._channel.ready()

    def serving(self) -> None:
        """
        This generation accepts now: the predecessor may stop accepting. From
        now on it hears that this generation is alive, while it listens.
        """
        if self._say():
            self._channel.serving()
            self._heartbeat = LoopingCall(self._alive)
            self._heartbeat.clock = self._reactor
            self._heartbeat.start(HEARTBEAT_SECONDS, now=False)

    def _alive(self) -> None:
        if self._say() and not self._channel.closed:
            self._channel.alive()
        elif self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()

    def retired(self, why: str) -> None:
        """
        This generation handed over in turn, or is stopping: its exit is
        planned. Written at once, since the exit may follow in this turn.
        """
        if self._say():
            self._sayNow(f"retired {why}", lambda: self._channel.retired(why))

    @property
    def listening(self) -> bool:
        """Whether the predecessor is still there to hear this generation."""
        return self._say() and not self._channel.closed

    def askRollback(self, why: str) -> None:
        """Ask the predecessor to take the traffic back; it answers through C{onRollbackAnswer}."""
        self._channel.rollback(why)

    def returnChannel(self, descriptor: int) -> None:
        """Hand the predecessor the channel this generation's connections move back over."""
        self._channel.returnChannel(descriptor)

    def reopenLogs(self) -> None:
        """Tell the predecessor, if it still listens, to reopen its log files."""
        if self._say() and not self._channel.closed:
            self._channel.reopenLogs()

    def failed(self, reason: str) -> None:
        """
        Tell the predecessor why this generation cannot go on, before anything
        else happens: the caller may exit right after.
        """
        if self._channel is None:
            # Not adopted yet: the inherited descriptor is still ours to write to.
            reportFailureSynchronously(self._inherited.controlFd, reason)
        elif self._say():
            self._sayNow(f"failed {reason}", lambda: self._channel.failed(reason))

    def _sayNow(self, line: str, queue) -> None:
        """Write C{line} now if nothing is queued before it; else C{queue} it."""
        transport = self._channel.transport
        # Twisted writes from the reactor loop; with nothing queued before it,
        # the line can go out now, ahead of an exit.
        if transport.fileno() >= 0 and not hasQueuedOutput(transport):
            writeLine(transport.fileno(), line)
        else:
            queue()

    def _say(self) -> bool:
        return self._channel is not None and self._channel.transport is not None
