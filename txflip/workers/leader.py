"""
The leader of a generation of workers: a L{Generation} in the L{Leader} role, which never accepts.

The leader opens (or adopts) every listening socket, as a one-process
generation does, and keeps them open but paused; its control socket alone
accepts. It starts its workers once the reactor runs and is ready only once
all of them are. When its generation moves, its workers follow:

    generation                     workers
    serving (first, or after go)   accept
    pauses (its successor serves)  stop accepting
    drains (handed over)           get channels to the next generation's
                                   workers (txflip.workers.moving), then
                                   drain, moving their idle connections
                                   there; they are no longer replaced
    takes the traffic back         stop draining, accept; empty slots refilled
    exits, or stops for good       drain if need be, and exit

Its drain is its workers' drain (and its own control connections'); its
reactor stops only once every worker has exited.
"""

from __future__ import annotations

import os
import socket

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, DeferredList
from zope.interface import implementer

from txflip.core.drain import Drain
from txflip.core.generation import Generation
from txflip.core.listeners import ListenerRegistry
from txflip.core.roles import IGenerationRole
from txflip.workers.commands import REOPEN_LOGS
from txflip.workers.moving import ChannelHandout, IncomingChannels, reportMoves
from txflip.workers.pool import Phase, WorkerPool
from txflip.workers.process import WorkerProcess


class LeaderRegistry(ListenerRegistry):
    """
    The leader's listeners: the app's are muted (never accept here), the
    control socket behaves as in any generation; pausing and resuming reach
    the workers.
    """

    pool: WorkerPool | None = None

    def mute(self) -> None:
        """From now on the app's listeners never accept in this process."""
        for listener in self.serving():
            listener.mute()

    def pauseAll(self) -> None:
        super().pauseAll()
        if self.pool is not None:
            self.pool.pause()

    def resumeAll(self) -> None:
        super().resumeAll()
        if self.pool is not None:
            self.pool.resume()

    def releaseAll(self) -> None:
        super().releaseAll()
        if self.pool is not None:
            self.pool.stopAll()

    def stopAll(self):
        if self.pool is not None:
            self.pool.stopAll()
        return super().stopAll()


class ListeningOnly(Service):
    """
    An app that is a service, as its leader holds it: privileged-started, which
    is when Twisted's listening services (C{strports}, endpoint services,
    C{internet.TCPServer} and C{UDPServer}) open their ports, and never started,
    so none of the app's own work runs here. Its workers run it whole.
    """

    def __init__(self, app: IService) -> None:
        self._app = app

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._app.privilegedStartService()


class LeaderDrain:
    """
    The leader's drain: its workers' drain (or exit, when stopping) and its own
    connections'. After a handover, the workers first get their channels to
    the next generation's workers (L{txflip.workers.moving}), and move their
    idle connections there as they drain.
    """

    def __init__(
        self, reactor, generation: Generation, pool: WorkerPool, transfer: socket.socket | None
    ) -> None:
        self._own = Drain(reactor, generation.tracker, generation.drainTimeout)
        self._events = generation.events
        self._pool = pool
        self._handout = ChannelHandout(reactor, pool, transfer) if transfer is not None else None
        self._cancelled = False
        self._reported = False
        self.moving = self._handout is not None
        """Whether a C{connections-moved} event follows (the workers' moves, as one)."""

    def start(self):
        if self._pool.phase is Phase.STOPPING:
            workers = self._pool.exited()
        elif self._handout is None:
            workers = self._pool.drain()
        else:
            workers = self._handout.start().addCallback(self._drainWorkers)
        done = DeferredList([self._own.start(), workers], consumeErrors=True)
        return done.addCallback(lambda results: results[1][1] if results[1][0] else 0)

    def _drainWorkers(self, _) -> Deferred:
        if self._cancelled:
            return Deferred()  # the generation serves again: this drain never ends
        self._pool.onMoved = lambda worker: self._workerMoved()
        drained = self._pool.drain()
        self._workerMoved()  # nothing to wait for if no worker got channels
        return drained.addCallback(self._workersDrained)

    def _workerMoved(self, over: bool = False) -> None:
        """
        Once every worker that got channels has reported (or is gone), or the
        workers' drain is C{over}, report their moves as one.
        """
        if self._reported or self._cancelled:
            return
        live = self._pool.live()
        handedTo = self._handout.handedTo
        if not over and any(w.moveReport is None and w in live and not w.drained for w in handedTo):
            return
        self._reported = True
        reportMoves(self._events, [w.moveReport for w in handedTo if w.moveReport is not None])

    def _workersDrained(self, aborted: int) -> int:
        self._workerMoved(over=True)
        return aborted

    def cancel(self) -> None:
        self._cancelled = True
        if self._handout is not None:
            self._handout.cancel()
        self._own.cancel()
        self._pool.undrain()


@implementer(IGenerationRole)
class Leader:
    """
    The role of a generation served by C{workers} processes: this one is their leader.

    @param workerArgv: the workers' command line (the generation's, by default).
    @ivar pool: the workers, once attached to a generation.
    """

    registryFactory = LeaderRegistry
    acceptsReadyCalls = False
    """Readiness is the workers': the app's own signals count in each worker."""
    workerIndex = None

    def __init__(self, workers: int, workerArgv: list[str] | None = None) -> None:
        self.workerCount = workers
        self._workerArgv = workerArgv
        self._workersStarted = False
        self.pool: WorkerPool | None = None
        self.generation: Generation | None = None

    def attach(self, generation: Generation) -> None:
        self.generation = generation
        reactor = generation.reactor
        self._workerArgv = self._workerArgv or generation.argv
        # Resolved: a replaced worker runs the code its generation started with.
        self._workerCwd = os.getcwd()
        self.pool = WorkerPool(
            reactor,
            self.workerCount,
            self._launchWorker,
            readyTimeout=generation.readyTimeout,
            drainTimeout=generation.drainTimeout,
            generation=generation.number,
        )
        self.pool.onStartFailed = generation.failStart
        generation.registry.pool = self.pool
        generation.events.subscribe(self._followed)
        reactor.addSystemEventTrigger("before", "shutdown", self._workersGone)

    def _launchWorker(self, index: int) -> WorkerProcess:
        generation = self.generation
        process = WorkerProcess(
            generation.reactor, self.pool, index, self.workerCount, generation.number
        )
        process.spawn(self._workerArgv, self._workerCwd, generation.registry)
        return process

    def _followed(self, name: str, fields: dict) -> None:
        if name == "serving":
            self.pool.resume()

    def _workersGone(self):
        """The reactor stops only once every worker has exited (they were told to)."""
        if self.pool.phase not in (Phase.STOPPING, Phase.FAILED):
            self.pool.stopAll()
        return self.pool.exited()

    def starting(self) -> bool:
        if self._workersStarted:
            return False
        self._workersStarted = True
        generation = self.generation
        if not generation.registry.serving():
            generation.failStart(
                "--workers: the app opened no listener: with workers, the app's listeners must "
                "be opened by --listen, or by its services as they are privileged-started "
                "(strports, endpoint services and internet.TCPServer/UDPServer do)"
            )
            return False
        generation.registry.mute()
        generation.waitFor(self.pool.allReady, f"all {self.workerCount} workers to be ready")
        self.pool.start()
        return True

    def takeOverRefusal(self) -> str | None:
        return None

    def upgradeRefusal(self) -> str | None:
        return None

    def newDrain(self, handedOver: bool, transfer: socket.socket | None) -> LeaderDrain:
        return LeaderDrain(self.generation.reactor, self.generation, self.pool, transfer)

    def takeMoved(self, generation: Generation) -> IncomingChannels | None:
        """The workers of the previous generation get channels to this one's (workers.moving)."""
        inherited = generation.inherited
        if inherited is None or inherited.transferFd is None:
            return None
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=inherited.transferFd)
        return IncomingChannels(generation.reactor, self.pool, skt, generation.number - 1)

    def failingStart(self) -> None:
        self.pool.killAll()

    def stopping(self) -> None:
        pass

    def status(self, status: dict) -> None:
        status["workers"] = self.pool.status()

    def reopenLogs(self) -> None:
        for worker in self.pool.live():
            worker.process.send(REOPEN_LOGS)
