"""
A worker: one process of a generation, serving the sockets its leader handed it.

A worker is a L{Generation} in the L{Worker} role, started by its leader as a generation is started
by its predecessor: it adopts the listeners, becomes ready by the usual rules
(the app's C{startService} Deferred, C{txflip.current().ready()}, or
listening again on every socket), says so, and accepts once the leader says
go. From then on the leader steers it over the command channel
(L{txflip.workers.commands}), and hands it, over its links, the channels
that move idle connections between the workers of two generations
(L{txflip.workers.moving}). It writes no PID file, opens no control socket,
tells systemd nothing and refuses SIGHUP: all of that is the leader's.

A worker never closes a shared socket's path: its listeners are let go of,
not shut down, so a worker that stops leaves the others serving.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet.defer import DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.web.http import HTTPFactory
from zope.interface import implementer

from txflip.core.channel import adoptChannel
from txflip.core.drain import Drain, isIdleKeepAlive, lowestTransport
from txflip.core.generation import Generation
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import log
from txflip.core.roles import IGenerationRole
from txflip.core.state import State
from txflip.workers.balance import AcceptHold, SettledCounter
from txflip.workers.commands import REOPEN_LOGS, STATS_SECONDS, WorkerEnd
from txflip.workers.moving import OutgoingMoves, WorkerLinks
from txflip.workers.role import WorkerRole

_COUNTED_MARK = "_txflipCountsRequests"


def leaveIssuanceToTheLeader() -> None:
    """
    If this worker serves ACME certificates (C{--acme-*} or C{le:} endpoints,
    all parsed by now), it never talks to the CA: its leader does, and the
    worker serves what the leader stores, within C{lockRetry} seconds.
    """
    service = sys.modules.get("txflip.acme.service")
    if service is not None:
        service.settings.issues = False


ACCEPTS_PER_WAKEUP = 1
"""
How many connections a worker accepts each time its listening socket is
readable. Measured with benchmarks/workers.py (wrk -c16, 2 workers, idle
machine): 1 gave 1.60x of one worker's keep-alive rate and 1.17x of its new
connections; 4 gave 1.59x and 1.33x, but on a loaded machine one worker took
all 8 keep-alive connections of a wrk burst; 16 let one worker take them all
even when idle. Fairness comes first: 1.
"""


def acceptOneAtATime(port) -> None:
    """
    Make C{port} accept at most L{ACCEPTS_PER_WAKEUP} connections each time it
    is readable.

    Every worker waits on the same listening socket, and each wakes up for a
    new connection; a Twisted port accepts up to a hundred at once, so the
    first worker to run would take a whole burst of keep-alive connections
    (and keep them). Taking a few at a time leaves the rest of the burst to
    the other workers, and to whichever is least busy.
    """
    if not hasattr(port, "numberAccepts") or getattr(port, "_txflipOneAtATime", False):
        return
    doRead = port.doRead

    def oneAtATime():
        port.numberAccepts = ACCEPTS_PER_WAKEUP
        return doRead()

    port.doRead = oneAtATime
    port._txflipOneAtATime = True


class NotOpenedByTheLeader(CannotListenError):
    """The app listens, in a worker, on an address its leader did not open."""

    def __init__(self, key: str) -> None:
        super().__init__(None, key, None)
        self.key = key

    def __str__(self) -> str:
        return (
            f"{self.key} was not opened by the leader: with --workers, every listener must be "
            "opened by --listen or by the app's services as they are privileged-started "
            "(strports, endpoint services and internet.TCPServer/UDPServer do); one opened "
            "later would be one worker's alone"
        )


class WorkerRegistry(ListenerRegistry):
    """
    A worker's listeners: only the sockets its leader handed down (never one of
    its own), and stopping for good lets go of them.
    """

    def _uniqueKey(self, key: str) -> str:
        unique = super()._uniqueKey(key)
        if unique not in self.unclaimed():
            raise NotOpenedByTheLeader(unique)
        return unique

    def stopAll(self):
        self.releaseAll()
        return succeed(None)


@implementer(IGenerationRole)
class Worker:
    """
    The role of worker C{role.index} of a generation led by this process's parent.

    @ivar requests: HTTP requests served by this worker.
    """

    registryFactory = WorkerRegistry
    acceptsReadyCalls = True

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self.workerIndex = role.index
        self.requests = 0
        self.generation: Generation | None = None
        self._commands: WorkerEnd | None = None
        self._stats: LoopingCall | None = None
        self._handoverDrain: Drain | None = None
        self._moves: OutgoingMoves | None = None
        self.links: WorkerLinks | None = None
        self._settled = SettledCounter()
        self._hold: AcceptHold | None = None

    def attach(self, generation: Generation) -> None:
        if generation.inherited is None:
            raise ValueError("a worker needs the listeners its leader hands down")
        if generation.pidFile is not None:
            raise ValueError("a worker writes no PID file: its leader does")
        os.set_inheritable(self.role.commandFd, False)
        if self.role.linksFd is not None:
            os.set_inheritable(self.role.linksFd, False)
        self.generation = generation
        self._reactor = generation.reactor
        self.leaderPid = generation.inherited.parentPid
        self._hold = AcceptHold(
            self._reactor, self._streamListeners, lambda: generation.registry.paused
        )
        generation.events.subscribe(self._event)

    def _streamListeners(self) -> list:
        return [
            listener
            for listener in self.generation.registry.active()
            if hasattr(listener.port, "numberAccepts")
        ]

    def upgradeRefusal(self) -> str | None:
        return (
            f"this process is worker {self.workerIndex} of generation {self.generation.number}: "
            f"send SIGHUP to its leader, PID {self.leaderPid}"
        )

    def starting(self) -> bool:
        if self._commands is None:
            self._commands = adoptChannel(
                self._reactor,
                socket.socket(fileno=self.role.commandFd),
                WorkerEnd(self._command, self._leaderLost),
            )
            self._stats = LoopingCall(self._sendStats)
            self._stats.clock = self._reactor
            self._stats.start(STATS_SECONDS, now=False)
        if self.links is None and self.role.linksFd is not None:
            skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=self.role.linksFd)
            self.links = WorkerLinks(self._reactor, self.generation, skt)
        self._countRequests()
        for listener in self.generation.registry.listeners:
            acceptOneAtATime(listener.port)
        return True

    def takeOverRefusal(self) -> str | None:
        # A worker whose leader died before saying go must not serve on its own.
        if os.getppid() != self.leaderPid:
            return "the leader went away before saying go"
        return None

    def newDrain(self, handedOver: bool, transfer):
        return None

    def takeMoved(self, generation: Generation):
        return None  # connections arrive over the links (L{txflip.workers.moving})

    def failingStart(self) -> None:
        pass

    def stopping(self) -> None:
        # However this worker comes to stop (SIGTERM, its leader, its app),
        # a lapsing hold must not resume what the stop lets go of.
        self._hold.forget()

    def status(self, status: dict) -> None:
        pass

    def reopenLogs(self) -> None:
        pass  # a worker has no processes of its own

    # What the leader says.

    def _command(self, word: str) -> None:
        generation = self.generation
        if word == REOPEN_LOGS:
            generation.logs.reopen("its leader", tell=())
            return
        if generation.state is not State.SERVING:
            if word == "stop":
                self._stopReactor()
            return
        if word == "hold":
            if not generation.registry.paused and self._handoverDrain is None:
                self._hold.hold()
            return
        if word == "unhold":
            self._hold.release()
            return
        # Every other word is the leader's to say about accepting: a hold ends.
        self._hold.forget()
        if word == "pause":
            generation.registry.pauseAll()
        elif word == "resume":
            generation.registry.resumeAll()
        elif word == "drain":
            generation.registry.pauseAll()
            # Idle connections move to the next generation's workers over the
            # channels the leader handed just before (L{txflip.workers.moving}).
            moves = self._moves = self.links.moves() if self.links is not None else None
            self._handoverDrain = Drain(
                self._reactor,
                generation.tracker,
                generation.drainTimeout,
                claims=moves,
                closeSpread=generation.closeSpread,
                handedOver=True,
            )
            # The movers first: the drain's first look must find them claiming.
            moved = moves.start() if moves is not None else None
            drained = self._handoverDrain.start()
            if moved is not None:
                drained = DeferredList([drained, moved], consumeErrors=True)
                drained.addCallback(lambda results: results[0][1] if results[0][0] else 0)
            drained.addCallback(self._drained)
        elif word == "undrain":
            self._stopDraining("the old generation serves again")
        elif word == "stop":
            self._stopReactor()

    def _stopDraining(self, why: str) -> None:
        if self._moves is not None:
            self._moves.abandon(why)
            self._moves = None
        if self._handoverDrain is not None:
            self._handoverDrain.cancel()
            self._handoverDrain = None
        if self.links is not None:
            self.links.dropOutgoing()

    def _event(self, name: str, fields: dict) -> None:
        if name == "connections-moved" and self._commands is not None:
            self._commands.moved(fields)  # the leader reports its workers' moves as one

    def _drained(self, aborted: int) -> None:
        if self._handoverDrain is None:
            return  # called off meanwhile
        self._handoverDrain = None
        self._moves = None
        if self._commands is not None:
            self._commands.drained(aborted)

    def _leaderLost(self) -> None:
        if self.generation.state is State.STARTING:
            self.generation.startup.abandoned("the leader closed the command channel")
        elif self.generation.state is State.SERVING:
            log.error(
                "the leader (PID {leader}) went away; draining and exiting", leader=self.leaderPid
            )
            self._stopReactor()

    def _stopReactor(self) -> None:
        self._hold.forget()
        self._stopDraining("this worker stops")
        if self._reactor.running:
            self._reactor.stop()

    # What the leader hears.

    def _countRequests(self) -> None:
        """Count every HTTP request answered through this worker's listeners."""
        for listener in self.generation.registry.listeners:
            factory = getattr(listener.port, "factory", None)
            while factory is not None and not isinstance(factory, HTTPFactory):
                factory = getattr(factory, "wrappedFactory", None)
            if factory is None or getattr(factory, _COUNTED_MARK, False):
                continue
            original = factory.log

            def counted(request, original=original) -> None:
                self.requests += 1
                original(request)

            factory.log = counted
            setattr(factory, _COUNTED_MARK, True)

    def _sendStats(self) -> None:
        if self._commands is None:
            return
        try:
            connections = self.generation.tracker.open()
            sockets = [lowestTransport(c) or c for c in connections]
            stats = {
                "connections": len(connections),
                "idle": sum(1 for c in connections if isIdleKeepAlive(c)),
                "settled": self._settled.count(sockets, self._reactor.seconds()),
                "requests": self.requests,
                "accepting": self._accepting(),
                "held": self._hold.held,
            }
        except Exception:
            # One bad report must not end them all: the leader would see this
            # worker's counts freeze, and leave it out of the balance.
            log.failure("worker {index}: could not count its connections", index=self.workerIndex)
            return
        self._commands.stats(stats)

    def _accepting(self) -> bool:
        """Serving and told to accept: a hold aside, new connections may come here."""
        return (
            self.generation.state is State.SERVING
            and not self.generation.registry.paused
            and self._handoverDrain is None
            and any(listener.listening for listener in self._streamListeners())
        )
