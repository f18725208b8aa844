"""
A generation's start: from being made to serving, or to failing to start.

L{Startup} owns what a starting generation waits for (L{Readiness}), the ready
timer of a first generation, and the link to the predecessor (ready, go,
serving). It tells its generation two things only: that it serves now, or
that it stops before serving. A start failure is reported in one place,
L{Startup.failStart} (L{txflip.core.startfailure}).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from txflip.core import pidfile
from txflip.core.child import PredecessorLink
from txflip.core.log import log
from txflip.core.readiness import (
    APP_LISTENING,
    APP_READY_CALL,
    PREDECESSOR_APP_STOPPED,
    REACTOR_RUNNING,
    Readiness,
)
from txflip.core.startfailure import reportStartFailure
from txflip.core.state import State


def listeningAgain(key: str) -> str:
    """The readiness condition of an inherited socket the app has not listened on again."""
    return f"listening again on {key}"


class Startup:
    """
    The start of C{generation}: readiness, the ready timeout, and the predecessor link.

    @ivar link: the link to the predecessor, once the start has begun (or L{None}).
    """

    def __init__(self, generation) -> None:
        self._generation = generation
        self._reactor = generation.reactor
        self._readiness = Readiness(self._becomeReady)
        self._readiness.hold(REACTOR_RUNNING)
        self._readyTimer = None
        self._started = False
        self.link: PredecessorLink | None = None
        inherited = generation.inherited
        self.sequential = inherited is not None and inherited.sequential
        """Whether this generation starts its app only once its predecessor's has stopped."""
        self._turnTaken = not self.sequential
        self._turnWaiters: list[Deferred] = []
        if self.sequential:
            self._readiness.hold(PREDECESSOR_APP_STOPPED)

    # A sequential handover: the app starts when its turn comes.

    def whenItsTurn(self) -> Deferred:
        """Fires once this generation may start its app (at once, but in a sequential handover)."""
        d: Deferred = Deferred()
        if self._turnTaken:
            d.callback(None)
        else:
            self._turnWaiters.append(d)
        return d

    def takeTurnNow(self) -> None:
        """The turn came before the link was opened (a program waiting before its reactor)."""
        self._takeTurn()

    def _takeTurn(self) -> None:
        if self._turnTaken:
            return
        self._turnTaken = True
        log.info("the previous generation's app has stopped; starting the app")
        waiters, self._turnWaiters = self._turnWaiters, []
        for d in waiters:
            d.callback(None)
        self._readiness.release(PREDECESSOR_APP_STOPPED)

    # The app's signals.

    def expectReady(self) -> None:
        self._readiness.explicit = True
        self._readiness.hold(APP_READY_CALL)

    def ready(self) -> None:
        self._readiness.explicit = True
        self._readiness.release(APP_READY_CALL)
        if not self._started:
            if self._reactor.running:
                self._generation.start()
            else:
                self._reactor.callWhenRunning(self._generation.start)

    def waitFor(self, d: Deferred, what: str) -> Deferred:
        self._readiness.explicit = True
        self._readiness.hold(what)

        def fired(result):
            if isinstance(result, Failure):
                self.failStart(f"{what} failed: {result.type.__name__}: {result.value}")
                return None
            self._readiness.release(what)
            return result

        return d.addBoth(fired)

    def waitingFor(self) -> list[str]:
        return self._readiness.pending()

    def claimed(self, key: str) -> None:
        """The app listens again on the inherited socket C{key}."""
        self._readiness.release(listeningAgain(key))

    def listening(self, key: str, internal: bool) -> None:
        """Something listens on C{key}; the app's first listener makes a late app ready."""
        if not internal:
            self._readiness.release(APP_LISTENING)

    # The start itself.

    def start(self) -> None:
        """The reactor runs and the app is built: readiness is now the last condition clearing."""
        if self._started:
            return
        self._started = True
        generation = self._generation
        registry = generation.registry
        if generation.inherited is None:
            self._readyTimer = self._reactor.callLater(
                generation.readyTimeout, self._notReadyInTime
            )
        if not self._readiness.explicit:
            unclaimed = registry.unclaimed()
            for key in unclaimed:
                self._readiness.hold(listeningAgain(key))
            if generation.inherited is None and not unclaimed and not registry.serving():
                # An app that listens after some asynchronous set-up of its own.
                self._readiness.hold(APP_LISTENING)
        if generation.inherited is not None:
            self.link = PredecessorLink(
                self._reactor,
                generation.inherited,
                self._go,
                self.abandoned,
                self._takeTurn,
                onReopenLogs=generation.logs.fromPredecessor,
                onCarry=generation.carried.receive,
                onRollbackAnswer=generation.rollbacks.answered,
            )
            self.link.open()
            self._readiness.onChange = self.link.waiting
            if not self._turnTaken:
                self.link.prepared()
        self._readiness.release(REACTOR_RUNNING)

    def _notReadyInTime(self) -> None:
        if self.waitingFor() == [APP_LISTENING]:
            log.warn(
                "the app listens on nothing after the ready timeout of {timeout:g}s; "
                "taking it as ready",
                timeout=self._generation.readyTimeout,
            )
            self._readiness.release(APP_LISTENING)
            return
        if self._generation.state is State.STARTING and not self._readiness.done:
            self.failStart(
                f"not ready within the ready timeout of {self._generation.readyTimeout:g}s; "
                f"still waiting for {', '.join(self.waitingFor())}"
            )

    def _becomeReady(self) -> None:
        generation = self._generation
        generation.registry.closeUnclaimed()
        if generation.inherited is None:
            if self._readyTimer is not None and self._readyTimer.active():
                self._readyTimer.cancel()
            if self._writePIDFile():
                generation._serving("first generation")
            return
        self.link.ready()

    def _go(self, why: str) -> None:
        """The predecessor said go (or is gone): take over, unless this process may not."""
        generation = self._generation
        refusal = generation.role.takeOverRefusal()
        if refusal is not None:
            self.abandoned(refusal)
            return
        # A predecessor that died before saying start has stopped its app for good.
        self._takeTurn()
        if generation.state is not State.STARTING or not generation.registry.serving():
            reason = (
                "it is shutting down"
                if generation.state is not State.STARTING
                else "it listens on nothing"
            )
            log.error("cannot take over: {reason}", reason=reason)
            self.link.failed(f"cannot take over: {reason}")
            return
        if not self._writePIDFile():
            return
        generation._serving(why)
        self.link.serving()

    def abandoned(self, why: str) -> None:
        """The predecessor gave up on this generation: its sockets are its own again; exit."""
        generation = self._generation
        if generation.state is not State.STARTING:
            return  # a second channel closing, or an abort that crossed a stop
        log.error("the previous generation abandoned this one ({why}); exiting", why=why)
        generation.registry.pauseAll()
        generation._stopBeforeServing(f"abandoned by the previous generation ({why})")

    def _writePIDFile(self) -> bool:
        path = self._generation.pidFile
        if not path:
            return True
        try:
            pidfile.writePID(path)
        except OSError as e:
            self.failStart(f"cannot write PID file {path}: {e.strerror}")
            return False
        return True

    # Failing.

    def tellPredecessorFailed(self, reason: str) -> None:
        """Tell the generation that started this one why it cannot start, at once."""
        if self.link is not None:
            self.link.failed(reason)
        elif self._generation.inherited is not None:
            PredecessorLink(self._reactor, self._generation.inherited, None, None).failed(reason)

    def failStart(self, reason: str) -> None:
        """
        This generation cannot become ready: say why (to the predecessor too, word
        for word) and exit with status 1. A serving generation only logs.
        """
        generation = self._generation
        if generation.state is not State.STARTING:
            log.error("{reason}", reason=reason)
            return
        generation.role.failingStart()
        reportStartFailure(reason, generation)
        generation.exitProcess(1)
