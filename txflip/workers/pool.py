"""
The workers of one generation, as its leader keeps them.

A L{WorkerPool} starts one worker per slot and fires L{WorkerPool.allReady}
once every slot's worker is ready; a worker that fails, exits or is not ready
in time before then fails the whole start (L{WorkerPool.onStartFailed}). Once
the generation serves, a worker that ends is replaced in its slot, with the
same command line and sockets, after its slot's L{Backoff} delay. The leader
tells the pool when its generation accepts, pauses, drains or stops, and the
pool passes it on to every worker.

The pool never spawns a process itself: C{launch(index)} does, and returns an
object with C{pid}, C{go()}, C{send(command)}, C{abort()} and C{kill()}, which
then reports back through the C{worker*} methods. So the logic here runs
under a C{Clock} in the tests, and L{txflip.workers.process} spawns for real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall

from txflip.core.log import log
from txflip.workers.backoff import Backoff
from txflip.workers.balance import aheadOfTheOthers

STOP_GRACE_SECONDS = 5.0
"""How long after its drain timeout a stopping worker is killed."""
FRESH_SECONDS = 0.5
"""A worker heard from this recently counts in the balance of long-lived connections."""
HUNG_SECONDS = 30.0
"""A serving worker silent this long (its reactor blocked, or stopped) is killed and replaced."""


class Phase:
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(eq=False)
class WorkerState:
    """What the pool knows of one worker process."""

    process: object
    index: int
    startedAt: float
    state: str = "starting"
    """starting, ready, serving, draining, stopping."""
    toldGo: bool = False
    servingSince: float | None = None
    lastHeard: float = 0.0
    waitingFor: str | None = None
    failure: str | None = None
    """Why the pool gave up on it, as a phrase ("was not ready within ...")."""
    planned: bool = False
    """The pool asked it to stop: its end is no crash."""
    drained: bool = False
    held: bool = False
    """The pool told it to hold (L{txflip.workers.balance}) and has not released it."""
    moveReport: dict | None = None
    """Its last report of moving connections to the next generation, while draining."""
    stats: dict = field(default_factory=dict)
    timers: list = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return getattr(self.process, "pid", None)


@dataclass(eq=False)
class Slot:
    """One place for a worker; its process changes when one is replaced."""

    index: int
    backoff: Backoff
    worker: WorkerState | None = None
    restarts: int = 0
    lastExit: str | None = None
    replacement: object = None
    """The delayed call that starts the next worker, while backing off."""


class WorkerPool:
    """
    @param launch: C{launch(index)} starts worker C{index}; raises if it cannot.
    @param generation: the number of the generation, for the logs.
    """

    def __init__(
        self,
        reactor,
        count: int,
        launch: Callable[[int], object],
        *,
        readyTimeout: float,
        drainTimeout: float,
        generation: int,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._reactor = reactor
        self.count = count
        self._launchProcess = launch
        self.readyTimeout = readyTimeout
        self.drainTimeout = drainTimeout
        self.generation = generation
        self.slots = [Slot(i, backoff()) for i in range(count)]
        self.phase = Phase.STARTING
        self.accepting = False
        self.allReady: Deferred = Deferred()
        """Fires (with None) once every slot's first worker is ready; never fails."""
        self.onStartFailed: Callable[[str], None] = lambda reason: None
        self.onMoved: Callable[[WorkerState], None] = lambda worker: None
        """Called when a draining worker reports how its moves go (L{workerMoved})."""
        self._drain: Deferred | None = None
        self._aborted = 0
        self._exitWaiters: list[Deferred] = []
        self._hangCheck = LoopingCall(self._checkHung)
        self._hangCheck.clock = reactor

    # Starting.

    def start(self) -> None:
        """Start every slot's worker."""
        for slot in self.slots:
            self._launch(slot)
        self._hangCheck.start(1.0, now=False)

    def _launch(self, slot: Slot) -> None:
        slot.replacement = None
        if self.phase not in (Phase.STARTING, Phase.SERVING):
            return
        try:
            process = self._launchProcess(slot.index)
        except Exception as e:
            self._cannotLaunch(slot, f"could not be started: {type(e).__name__}: {e}")
            return
        worker = WorkerState(process, slot.index, self._reactor.seconds())
        worker.lastHeard = worker.startedAt
        process.state = worker
        slot.worker = worker
        worker.timers.append(
            self._reactor.callLater(self.readyTimeout, self._notReadyInTime, worker)
        )
        log.info(
            "started worker {index} of generation {gen} as PID {pid}",
            index=slot.index,
            gen=self.generation,
            pid=worker.pid,
        )

    def _cannotLaunch(self, slot: Slot, phrase: str) -> None:
        reason = f"worker {slot.index} {phrase}"
        if self.phase is Phase.STARTING:
            self._startFailed(reason)
            return
        self._replaceLater(slot, reason, None)

    def _notReadyInTime(self, worker: WorkerState) -> None:
        if worker.state != "starting":
            return
        phrase = f"was not ready within the ready timeout of {self.readyTimeout:g}s"
        if worker.waitingFor:
            phrase += f"; it was still waiting for {worker.waitingFor}"
        self._giveUp(worker, phrase)

    def _giveUp(self, worker: WorkerState, phrase: str) -> None:
        """This worker will not serve: kill it; if the generation is starting, it fails."""
        if worker.failure is None:
            worker.failure = phrase
        worker.process.kill()
        if self.phase is Phase.STARTING:
            self._startFailed(f"worker {worker.index} (PID {worker.pid}) {worker.failure}")

    def _startFailed(self, reason: str) -> None:
        if self.phase is not Phase.STARTING:
            return
        self.phase = Phase.FAILED
        for worker in self.live():
            worker.planned = True
            worker.process.kill()
        self.onStartFailed(reason)

    def _checkAllReady(self) -> None:
        if self.allReady.called or self.phase is not Phase.STARTING:
            return
        if all(s.worker is not None and s.worker.state == "ready" for s in self.slots):
            log.info(
                "all {count} workers of generation {gen} are ready",
                count=self.count,
                gen=self.generation,
            )
            self.allReady.callback(None)

    def readyCount(self) -> int:
        return sum(1 for s in self.slots if s.worker is not None and s.worker.state != "starting")

    # What the workers say.

    def _current(self, worker: WorkerState) -> bool:
        return self.slots[worker.index].worker is worker

    def workerHeard(self, worker: WorkerState) -> None:
        """The worker said something (it says alive ten times a second once it serves)."""
        worker.lastHeard = self._reactor.seconds()

    def _checkHung(self) -> None:
        now = self._reactor.seconds()
        for worker in self.live():
            silent = now - worker.lastHeard
            if worker.state == "serving" and worker.failure is None and silent >= HUNG_SECONDS:
                log.error(
                    "worker {index} (PID {pid}) of generation {gen} has said nothing for "
                    "{silent:.0f}s; killing it",
                    index=worker.index,
                    pid=worker.pid,
                    gen=self.generation,
                    silent=silent,
                )
                worker.failure = f"stopped answering for {HUNG_SECONDS:g}s and was killed"
                worker.process.kill()

    def workerWaiting(self, worker: WorkerState, what: str) -> None:
        worker.waitingFor = what

    def workerReady(self, worker: WorkerState) -> None:
        if not self._current(worker) or worker.state != "starting" or worker.failure:
            return
        worker.state = "ready"
        if self.phase is Phase.STARTING:
            self._checkAllReady()
        elif self.phase is Phase.SERVING and self.accepting:
            self._go(worker)

    def _go(self, worker: WorkerState) -> None:
        worker.toldGo = True
        worker.process.go()

    def workerServing(self, worker: WorkerState) -> None:
        if not self._current(worker) or not worker.toldGo:
            return
        _cancel(worker.timers)
        worker.state = "serving"
        worker.servingSince = self._reactor.seconds()
        if not self.accepting:
            # The leader paused while this worker took its go.
            worker.process.send("pause")
        log.info(
            "worker {index} (PID {pid}) of generation {gen} serves",
            index=worker.index,
            pid=worker.pid,
            gen=self.generation,
        )

    def workerFailed(self, worker: WorkerState, reason: str) -> None:
        """The worker said why it cannot start."""
        if worker.state == "starting":
            self._giveUp(worker, f"cannot start: {reason}")

    def workerStats(self, worker: WorkerState, stats: dict) -> None:
        worker.stats = stats
        self._balance(worker)

    def _balance(self, worker: WorkerState) -> None:
        """Hold C{worker} while it is ahead of the others (L{aheadOfTheOthers}), else release it."""
        if not self._current(worker) or worker.state != "serving":
            return
        now = self._reactor.seconds()
        counts = {
            w: (w.stats["settled"], w.stats["connections"])
            for w in self.live()
            if w.state == "serving"
            and w.stats.get("accepting") is True
            and isinstance(w.stats.get("settled"), int)
            and isinstance(w.stats.get("connections"), int)
            and now - w.lastHeard <= FRESH_SECONDS
        }
        balancing = self.accepting and self.phase is Phase.SERVING
        if balancing and worker in aheadOfTheOthers(counts):
            # Said again with every report: a hold the worker is not told again lapses.
            worker.held = True
            worker.process.send("hold")
        elif worker.held:
            worker.held = False
            worker.process.send("unhold")

    def workerMoved(self, worker: WorkerState, report: dict) -> None:
        """How moving the worker's idle connections to the next generation goes."""
        worker.moveReport = report
        self.onMoved(worker)

    def workerDrained(self, worker: WorkerState, aborted: int) -> None:
        if worker.drained:
            return
        worker.drained = True
        self._aborted += aborted
        self._checkDrained()

    def workerEnded(self, worker: WorkerState, why: str) -> None:
        """The worker's process ended; C{why} says how ("exited with code 1")."""
        _cancel(worker.timers)
        slot = self.slots[worker.index]
        if slot.worker is worker:
            slot.worker = None
        what = f"worker {worker.index} (PID {worker.pid}) of generation {self.generation}"
        if worker.planned or self.phase in (Phase.STOPPING, Phase.FAILED):
            log.info("{what} {why}", what=what, why=why)
        elif self.phase is Phase.STARTING:
            self._startFailed(
                f"worker {worker.index} (PID {worker.pid}) "
                + (worker.failure or f"{why} before it was ready")
            )
        elif self.phase is Phase.DRAINING:
            log.warn("{what} {why} while draining; not replaced", what=what, why=why)
        else:
            servedFor = (
                self._reactor.seconds() - worker.servingSince
                if worker.servingSince is not None
                else None
            )
            reason = f"{what} {worker.failure or why}"
            self._replaceLater(slot, reason, servedFor)
        self._checkDrained()
        self._checkExited()

    def _replaceLater(self, slot: Slot, reason: str, servedFor: float | None) -> None:
        delay = slot.backoff.failed(servedFor)
        slot.restarts += 1
        slot.lastExit = reason
        log.error(
            "{reason}; starting a replacement in {delay:g}s (failure {n} in a row)",
            reason=reason,
            delay=delay,
            n=slot.backoff.failures,
        )
        slot.replacement = self._reactor.callLater(delay, self._launch, slot)

    # What the leader says.

    def resume(self) -> None:
        """The generation accepts (it serves, or takes the traffic back): so do the workers."""
        if self.phase is Phase.STARTING:
            self.phase = Phase.SERVING
        self.accepting = True
        for worker in self.live():
            worker.held = False
            if worker.state == "ready" and not worker.toldGo:
                self._go(worker)
            elif worker.toldGo:
                worker.process.send("resume")

    def pause(self) -> None:
        """The generation stops accepting; the sockets stay open."""
        self.accepting = False
        for worker in self.live():
            worker.held = False
            if worker.toldGo:
                worker.process.send("pause")

    def drain(self) -> Deferred:
        """
        The generation handed over: every worker drains, and none is replaced.

        @return: fires with the number of connections aborted, once every
            worker has drained or ended.
        """
        self.phase = Phase.DRAINING
        self._cancelReplacements()
        self._aborted = 0
        self._drain = Deferred()
        for worker in self.live():
            worker.drained = False
            worker.moveReport = None
            worker.held = False
            if worker.toldGo:
                worker.state = "draining"
                worker.process.send("drain")
            else:
                # A replacement still starting: it will not be needed.
                worker.planned = True
                worker.process.abort()
        drain = self._drain
        self._checkDrained()
        return drain

    def _checkDrained(self) -> None:
        if self._drain is None or self._drain.called:
            return
        if all(w.drained or not w.toldGo for w in self.live()):
            drain, self._drain = self._drain, None
            drain.callback(self._aborted)

    def undrain(self) -> None:
        """The successor died: the generation serves again; empty slots get workers."""
        self._drain = None
        self.phase = Phase.SERVING
        for worker in self.live():
            if worker.toldGo:
                worker.state = "serving"
                worker.process.send("undrain")
        for slot in self.slots:
            if slot.worker is None and slot.replacement is None:
                self._launch(slot)

    def stopAll(self) -> None:
        """The generation stops for good (or hands over, drained): every worker drains and exits."""
        if self.phase is Phase.STOPPING:
            return
        self.phase = Phase.STOPPING
        self._cancelReplacements()
        for worker in self.live():
            worker.planned = True
            worker.held = False
            if worker.toldGo:
                worker.state = "stopping"
                worker.process.send("stop")
            else:
                worker.process.abort()
            worker.timers.append(
                self._reactor.callLater(self.drainTimeout + STOP_GRACE_SECONDS, worker.process.kill)
            )

    def killAll(self) -> None:
        """Kill every worker now (the leader is about to exit without a drain)."""
        for worker in self.live():
            worker.planned = True
            worker.process.kill()

    def _cancelReplacements(self) -> None:
        for slot in self.slots:
            if slot.replacement is not None:
                if slot.replacement.active():
                    slot.replacement.cancel()
                slot.replacement = None

    def exited(self) -> Deferred:
        """Fires once no worker process is left."""
        if not self.live():
            return succeed(None)
        waiter = Deferred()
        self._exitWaiters.append(waiter)
        return waiter

    def _checkExited(self) -> None:
        if self.live():
            return
        if self._hangCheck.running and self.phase in (Phase.STOPPING, Phase.FAILED):
            self._hangCheck.stop()
        waiters, self._exitWaiters = self._exitWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # Status.

    def live(self) -> list[WorkerState]:
        return [s.worker for s in self.slots if s.worker is not None]

    def connections(self) -> int:
        return sum(int(w.stats.get("connections", 0)) for w in self.live())

    def idleConnections(self) -> int:
        """The workers' HTTP/1.x connections kept alive between two requests."""
        return sum(int(w.stats.get("idle", 0)) for w in self.live())

    def status(self) -> list[dict]:
        """One entry per slot, for C{txflip status}."""
        now = self._reactor.seconds()
        entries = []
        for slot in self.slots:
            worker = slot.worker
            entry = {
                "index": slot.index,
                "pid": worker.pid if worker else None,
                "state": worker.state if worker else "backing off",
                "uptimeSeconds": round(now - worker.startedAt, 1) if worker else None,
                "connections": worker.stats.get("connections") if worker else None,
                "idle": worker.stats.get("idle") if worker else None,
                "requests": worker.stats.get("requests") if worker else None,
                "held": bool(worker.stats.get("held")) if worker else False,
                "restarts": slot.restarts,
                "failuresInARow": slot.backoff.failures,
                "lastExit": slot.lastExit,
            }
            if worker is None and slot.replacement is not None and slot.replacement.active():
                entry["nextStartInSeconds"] = round(slot.replacement.getTime() - now, 1)
            elif worker is None:
                entry["state"] = "stopped"
            entries.append(entry)
        return entries


def _cancel(timers: list) -> None:
    for timer in timers:
        if timer.active():
            timer.cancel()
    timers.clear()
