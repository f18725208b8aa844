"""
Listening to a successor that serves: is it still heard, and how did it end?

The old generation keeps its sockets while it drains; a successor that dies
(without having said C{retired}) is taken back from, one silent for
L{SILENCE_SECONDS} gets the old generation accepting beside it
(L{txflip.core.handover}). L{SuccessorWatch} is told what the child says and
when it ends by its L{txflip.core.parent.UpgradeAttempt}, from the spawn on.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from txflip.core.channel import HEARTBEAT_SECONDS

SILENCE_SECONDS = 0.5
"""A successor that serves and says nothing for this long is taken for hung."""


class SuccessorWatch:
    """
    What is heard of one child, and, once it serves, whether it goes silent.

    @param kill: kills the child for good.
    @ivar silent: whether the successor has not been heard for a while.
    @ivar ended: fires with how the child ended, if it dies after it took over
        (not after it said it handed over in turn or is stopping).
    """

    def __init__(self, reactor, kill: Callable[[], None]) -> None:
        self._reactor = reactor
        self._kill = kill
        self._lastHeard = reactor.seconds()
        self._check: LoopingCall | None = None
        self._onSilence: Callable[[bool], None] = lambda silent: None
        self._gone = False
        self.retired: str | None = None
        self.silent = False
        self.ended: Deferred = Deferred()

    # Told by the attempt.

    def heard(self) -> None:
        self._lastHeard = self._reactor.seconds()
        if self.silent:
            self.silent = False
            self._onSilence(False)

    def retiredBecause(self, why: str) -> None:
        """The child handed over in turn, or stops: its end is no reason to take back."""
        self.retired = why

    def childEnded(self, why: str, tookOver: bool) -> None:
        self._gone = True
        self._stop()
        if tookOver and self.retired is None:
            self.ended.callback(why)

    # Asked by the handover.

    def start(self, onSilence: Callable[[bool], None]) -> None:
        """
        Call C{onSilence(True)} once the successor has not been heard for
        L{SILENCE_SECONDS} (hung, or stopped), C{onSilence(False)} when it is
        heard again.
        """
        self._onSilence = onSilence
        self._lastHeard = self._reactor.seconds()
        self._check = LoopingCall(self._look)
        self._check.clock = self._reactor
        self._check.start(HEARTBEAT_SECONDS, now=False)

    def kill(self) -> None:
        """Kill the successor for good (hung past every deadline)."""
        self._kill()

    def _look(self) -> None:
        if self._gone or self.retired is not None:
            self._stop()
            return
        silent = self._reactor.seconds() - self._lastHeard >= SILENCE_SECONDS
        if silent and not self.silent:
            self.silent = True
            self._onSilence(True)

    def _stop(self) -> None:
        if self._check is not None and self._check.running:
            self._check.stop()
