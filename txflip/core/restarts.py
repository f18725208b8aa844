"""
The restarts of one generation: at most one attempt at a time, the restarts
asked for while it still starts, and the handover once a successor serves.

L{Restarts} decides; L{txflip.core.generation.Generation} alone changes the
state, through the moves it offers (C{upgrading}, C{servingAgain},
C{handedOver}, C{handedOverForGood}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed

from txflip.core.handover import Handover
from txflip.core.log import log
from txflip.core.parent import Outcome, UpgradeAttempt
from txflip.core.pause import Pause
from txflip.core.state import REFUSALS, State

OVERLAP = "overlap"
"""The new generation starts its app while the old one serves (the default)."""
SEQUENTIAL = "sequential"
"""The old generation stops its app before the new one starts its own (L{txflip.core.pause})."""
HANDOVERS = (OVERLAP, SEQUENTIAL)


class Restarts:
    """
    Starting successors for C{generation}.

    @ivar attempt: the attempt in progress, if any.
    @ivar handover: the handover in progress (a successor serves), if any.
    @ivar lastOutcome: how the last restart ended, if there was one.
    """

    def __init__(self, generation, attemptFactory: Callable[..., UpgradeAttempt], cwd: str) -> None:
        self._generation = generation
        self._attemptFactory = attemptFactory
        self._cwd = cwd
        self._queued: list[tuple[str, Deferred]] = []
        self.attempt: UpgradeAttempt | None = None
        self.pause: Pause | None = None
        self.programStopping = False
        """Whether a program that runs its own reactor stops it for a sequential handover
        (txflip.ownprogram): the stop that follows leaves the attempt alone."""
        self.handover: Handover | None = None
        self.lastOutcome: Outcome | None = None

    def refusal(self) -> str | None:
        """Why a restart cannot start now, or L{None} if it can (or will, once serving)."""
        generation = self._generation
        if generation.simpleModeReason is not None:
            return f"restarts are unavailable in simple mode ({generation.simpleModeReason})"
        refused = generation.role.upgradeRefusal()
        if refused is not None:
            return refused
        if generation.state is State.STARTING:
            return None  # queued until the generation serves
        return REFUSALS.get(generation.state)

    def upgrade(self, source: str) -> Deferred:
        """Start the next generation, or queue the request while starting."""
        generation = self._generation
        refused = self.refusal()
        if refused is None and generation.state is State.STARTING:
            self._queue(source)
            return self._queued[-1][1]
        if refused is not None:
            log.warn("{source} refused: {why}", source=source, why=refused)
            generation.events.emit("upgrade-refused", source=source, reason=refused)
            return succeed(Outcome(False, None, f"refused: {refused}", 0.0))
        log.info("{source}: starting generation {next}", source=source, next=generation.number + 1)
        generation._moveTo(State.UPGRADING)
        self.pause = None
        sequential = {}
        if generation.handover == SEQUENTIAL:
            sequential["pause"] = self._startPause
        self.attempt = self._attemptFactory(
            generation.reactor,
            generation.registry,
            generation.argv,
            self._cwd,
            generation.readyTimeout,
            generation.pidFile,
            generation.events,
            generation.childEnvironment,
            onReopenLogs=generation.logs.fromSuccessor,
            carry=generation.carried.snapshot,
            **sequential,
        )
        return self.attempt.start(source).addCallback(self._attemptEnded)

    def _startPause(self) -> Deferred:
        """Sequential handover: the successor's app is built; stop this generation's."""
        generation = self._generation
        self.pause = Pause(generation, generation.pauseTimeout)
        return self.pause.start()

    # Restarts asked for while starting.

    def _queue(self, source: str) -> None:
        generation = self._generation
        if self._queued:
            log.info("{source}: a restart is already queued", source=source)
        else:
            log.info(
                "{source}: generation {gen} is not serving yet; "
                "starting generation {next} once it serves",
                source=source,
                gen=generation.number,
                next=generation.number + 1,
            )
        self._queued.append((source, Deferred()))

    def serving(self) -> None:
        """The generation serves: run what was queued, once this turn is over."""
        if self._queued:
            self._generation.reactor.callLater(0, self._runQueued)

    def _runQueued(self) -> None:
        """The restarts asked for while starting: one attempt answers them all."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        sources = " and ".join(sorted({source for source, _ in queued}))
        outcome = self.upgrade(f"{sources} (queued while starting)")
        for _, waiting in queued:
            outcome.addCallback(lambda result, waiting=waiting: waiting.callback(result) or result)

    def dropQueued(self, why: str) -> None:
        """The generation stops: what was queued is refused, with C{why}."""
        queued, self._queued = self._queued, []
        for source, waiting in queued:
            log.warn("{source} refused: {why}", source=source, why=why)
            waiting.callback(Outcome(False, None, f"refused: {why}", 0.0))

    # How an attempt ends.

    def _attemptEnded(self, outcome: Outcome) -> Outcome:
        generation = self._generation
        attempt, self.attempt = self.attempt, None
        self.lastOutcome = outcome
        if generation.state is not State.UPGRADING:
            return outcome
        if not outcome.succeeded:
            pause, self.pause = self.pause, None
            if pause is None:
                generation._moveTo(State.SERVING)
                return outcome
            # Sequential: the app starts again and the sockets accept again
            # before this generation says it serves.
            resumed = pause.resume(f"generation {generation.number + 1} failed")
            return resumed.addCallback(lambda _: generation._moveTo(State.SERVING) or outcome)
        generation._moveTo(State.HANDED_OVER)
        if generation.startup.link is not None:
            generation.startup.link.retired("handed over")
        log.info(
            "generation {next} (PID {child}) serves; draining",
            next=generation.number + 1,
            child=outcome.childPid,
        )
        self.handover = Handover(
            generation,
            attempt,
            outcome,
            watchSeconds=generation.successorWatch,
            arriving=self._connectionsArriving,
            onTakenBack=self._tookBack,
            onDone=generation._handedOverForGood,
            rollbackWindow=generation.rollbackWindow,
        )
        self.handover.start()
        return outcome

    def _connectionsArriving(self) -> bool:
        """Whether the generation's predecessor may still move connections to it."""
        receiver = self._generation.receiver
        return receiver is not None and receiver.receiving

    def _tookBack(self, outcome: Outcome) -> None:
        """The successor died, or handed back, after taking over: the generation serves again."""
        self.handover = None
        self.lastOutcome = outcome
        self._generation._moveTo(State.SERVING)

    def tellSuccessorToReopenLogs(self) -> None:
        """Pass SIGUSR1's word on to the successor, starting or taking over (txflip.core.reopen)."""
        attempt = self.attempt or (self.handover.attempt if self.handover else None)
        if attempt is not None:
            attempt.tell.reopenLogs()

    def abandonAttempt(self) -> Deferred:
        """Give up on the attempt in progress, if any; fires once it has ended."""
        attempt = self.attempt
        if attempt is None:
            return succeed(None)
        waiting = Deferred()
        attempt.result.addBoth(lambda result: waiting.callback(None) or result)
        attempt.abort("this generation is shutting down")
        return waiting

    def status(self, status: dict) -> None:
        """Add a sequential handover's pause, while it lasts, to C{status}."""
        pause = self.pause
        if pause is not None and not pause.resumed and self._generation.state is State.UPGRADING:
            status["pause"] = pause.status()
