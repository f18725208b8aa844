"""
After a handoff: the old generation drains, watches its successor, and exits.

A L{Handover} is made at the moment a successor says it serves, and owns
everything of that moment on: the drain (and the move of idle connections),
the watch over the successor (taking the traffic back if it dies, accepting
beside it while it is silent), and the decision to exit. It exits only once

  - the drain is over, and every connection that could move has moved;
  - no connection is still arriving from this generation's own predecessor
    (a restart that follows closely on the last one hands those on too);
  - it has watched the successor for at least C{watchSeconds} (and for the
    rollback window, C{--rollback-window}); and
  - the successor answers.

Within the rollback window the successor may hand the traffic back
(C{txflip rollback}): this generation accepts again, rewrites the PID file and
serves; the successor drains and exits.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from txflip.core import pidfile
from txflip.core.connadopt import ConnectionReceiver
from txflip.core.draining import startDraining
from txflip.core.log import log
from txflip.core.parent import Outcome, UpgradeAttempt


class Handover:
    """
    The handover to the successor C{attempt} started, which serves now.

    @param generation: the generation that handed over.
    @param attempt: the attempt whose child serves.
    @param outcome: how the attempt ended (its transfer channel included).
    @param arriving: whether connections may still arrive from this
        generation's own predecessor.
    @param onTakenBack: called with an L{Outcome} if the successor died and
        this generation serves again.
    @param onDone: called once this generation may exit.
    @param rollbackWindow: seconds from now during which the successor may
        hand the traffic back (0: never).
    """

    def __init__(
        self,
        generation,
        attempt: UpgradeAttempt,
        outcome: Outcome,
        *,
        watchSeconds: float,
        arriving: Callable[[], bool],
        onTakenBack: Callable[[Outcome], None],
        onDone: Callable[[], None],
        rollbackWindow: float = 0.0,
    ) -> None:
        self._rollbackWindow = rollbackWindow
        self._generation = generation
        self._reactor = generation.reactor
        self._attempt = attempt
        self._outcome = outcome
        self._arriving = arriving
        self._onTakenBack = onTakenBack
        self._onDone = onDone
        self._drain = None
        self._mover = None
        self._drained = False
        self._watched = False
        self._over = False
        self._waitingForMover = False
        self._silenceTimer = None
        self._watchTimer = self._reactor.callLater(
            max(watchSeconds, rollbackWindow), self._endOfWatch
        )
        self._arrivalCheck = None
        self._started = self._reactor.seconds()
        self.returning: ConnectionReceiver | None = None
        """After a rollback: takes the connections the successor moves back."""

    @property
    def attempt(self) -> UpgradeAttempt:
        """The attempt whose child took over."""
        return self._attempt

    @property
    def successorPid(self) -> int | None:
        return self._outcome.childPid

    def start(self) -> None:
        """Drain (moving what can move), and watch the successor."""
        self._attempt.watch.ended.addCallback(self._successorEnded)
        self._attempt.onRollback = self._rollbackAsked
        self._attempt.watch.start(self._successorSilence)
        drain, self._mover, done = startDraining(
            self._generation,
            handedOver=True,
            transfer=self._outcome.transfer,
            arriving=self._arriving,
        )
        self._drain = drain
        done.addCallback(self._drainedNow)

    def _drainedNow(self, aborted: int) -> None:
        if self._over:
            return  # taken back: the drain was cancelled
        self._generation.events.emit(
            "drained",
            aborted=aborted,
            ms=int((self._reactor.seconds() - self._started) * 1000),
        )
        self._drained = True
        self._exitIfDone()

    def _endOfWatch(self) -> None:
        self._watched = True
        self._exitIfDone()

    def _exitIfDone(self) -> None:
        if self._over or not (self._drained and self._watched):
            return
        if self._attempt.watch.silent:
            return
        if self._mover is not None and not self._mover.done.called:
            if not self._waitingForMover:
                self._waitingForMover = True
                self._mover.done.addCallback(lambda _: self._exitIfDone())
            return
        if self._arriving():
            # This generation's predecessor still moves connections here: they
            # are handed on as they come; look again shortly.
            if self._arrivalCheck is None or not self._arrivalCheck.active():
                self._arrivalCheck = self._reactor.callLater(0.05, self._exitIfDone)
            return
        self._over = True
        # What this generation counted while it drained goes to the successor
        # before the exit (txflip.core.carry).
        self._attempt.tell.carried(now=True)
        self._onDone()

    # The successor.

    def _successorSilence(self, silent: bool) -> None:
        """The successor stopped answering (or answers again) while this one holds the sockets."""
        if self._over:
            return
        generation = self._generation
        child = self._attempt.childPid
        if silent:
            generation.registry.resumeAll()
            log.error(
                "generation {next} (PID {child}) stopped answering; accepting again beside it, "
                "and killing it if it is still silent in {timeout:g}s",
                next=generation.number + 1,
                child=child,
                timeout=generation.readyTimeout,
            )
            generation.events.emit("successor-silent", childPid=child)
            self._silenceTimer = self._reactor.callLater(
                generation.readyTimeout, self._attempt.watch.kill
            )
        else:
            if self._silenceTimer is not None and self._silenceTimer.active():
                self._silenceTimer.cancel()
            generation.registry.pauseAll()
            log.info(
                "generation {next} (PID {child}) answers again; stopping accepting",
                next=generation.number + 1,
                child=child,
            )
            self._exitIfDone()

    def _rollbackAsked(self, why: str = "by hand") -> None:
        """The successor asks this generation to take the traffic back (C{txflip rollback})."""
        generation = self._generation
        child = self._attempt.childPid
        refusal = self._rollbackRefusal()
        if refusal is not None:
            log.warn(
                "generation {next} (PID {child}) asked to roll back: refused, {why}",
                next=generation.number + 1,
                child=child,
                why=refusal,
            )
            self._attempt.tell.rollbackAnswer(refusal)
            return
        reason = f"rolled back from generation {generation.number + 1} (PID {child}): {why}"
        self._takeBack(reason)
        self._attempt.onReturnChannel = self._connectionsComeBack
        self._attempt.tell.rollbackAnswer(None)
        generation.events.emit("rolled-back", childPid=child, reason=reason)

    def _connectionsComeBack(self, descriptor: int) -> None:
        """The successor that handed back moves its idle keep-alive connections here."""
        generation = self._generation
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=descriptor)
        self.returning = ConnectionReceiver(
            self._reactor, generation.registry, skt, generation.number + 1
        )

    def _rollbackRefusal(self) -> str | None:
        if self._rollbackWindow <= 0:
            return "there is no rollback window (start flip with --rollback-window SECONDS)"
        elapsed = self._reactor.seconds() - self._started
        if self._over or elapsed > self._rollbackWindow:
            return (
                f"the rollback window of {self._rollbackWindow:g}s (--rollback-window) "
                f"is over: it ended {max(elapsed - self._rollbackWindow, 0):.1f}s ago"
            )
        return None

    def _successorEnded(self, why: str) -> None:
        """The successor died while this generation still holds the sockets: take them back."""
        if self._over:
            return
        generation = self._generation
        childPid = self._attempt.childPid
        reason = f"generation {generation.number + 1} (PID {childPid}) {why} after taking over"
        self._takeBack(reason)
        generation.events.emit("successor-died", childPid=childPid, reason=reason)

    def _takeBack(self, reason: str) -> None:
        """Accept again, rewrite the PID file, and serve: the successor's turn is over."""
        self._over = True
        generation = self._generation
        for timer in (self._watchTimer, self._silenceTimer, self._arrivalCheck):
            if timer is not None and timer.active():
                timer.cancel()
        generation.registry.resumeAll()
        if self._mover is not None:
            self._mover.abandon(reason)
        if self._drain is not None:
            self._drain.cancel()
        childPid = self._attempt.childPid
        log.error("{reason}; generation {gen} serves again", reason=reason, gen=generation.number)
        if generation.pidFile:
            try:
                pidfile.writePID(generation.pidFile)
            except OSError as e:
                log.error(
                    "cannot rewrite PID file {path}: {error}", path=generation.pidFile, error=e
                )
        outcome = Outcome(False, childPid, reason, 0.0)
        self._onTakenBack(outcome)
