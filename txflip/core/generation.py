"""
L{Generation}: this process's generation of a server, and the one owner of its
restart state.

A generation listens (adopting the sockets its predecessor handed down), says
when it is ready, starts its successor on request, and, once the successor
serves, drains and tells its host to exit. Each part of that life is an object
of its own, made when that part begins: L{Startup} (until serving),
L{UpgradeAttempt} (one try at a successor), L{Handover} (after a successor
serves: drain, watch, exit or take the traffic back). What differs between a
single process, a leader of workers and a worker is its role
(L{txflip.core.roles.IGenerationRole}).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

from twisted.internet.defer import Deferred

from txflip.core.carry import Carried
from txflip.core.drain import ConnectionTracker
from txflip.core.draining import stopForGood
from txflip.core.events import Events
from txflip.core.handoff import HandoffState, InheritedListener, takeInheritedState
from txflip.core.log import log, setGeneration
from txflip.core.parent import Outcome, UpgradeAttempt, defaultSuccessorArgv, workingDirectory
from txflip.core.pause import AppLifecycle
from txflip.core.reopen import GenerationLogs
from txflip.core.restarts import HANDOVERS, OVERLAP, Restarts
from txflip.core.roles import IGenerationRole, SingleProcess
from txflip.core.rollback import Rollbacks
from txflip.core.simplemode import simpleModeReason as detectSimpleMode
from txflip.core.startup import Startup
from txflip.core.state import State, checkMove

_FROM_ENVIRONMENT = object()
ENV_AGAIN = "TXFLIP_GENERATION_AGAIN"
"""Set by a generation that runs its program again (txflip.ownprogram): its number."""
_current: Generation | None = None


def _generationAgain() -> int:
    """A first generation's number: 1, or its own when it runs its program again."""
    text = os.environ.pop(ENV_AGAIN, None)
    try:
        return int(json.loads(text)["generation"]) if text else 1
    except (ValueError, KeyError, TypeError):
        return 1


def current() -> Generation:
    """
    This process's generation: the one C{twistd flip} or C{python -m txflip run}
    made, or the first one made through the API.

    @raise RuntimeError: there is none (the app does not run under txflip).
    """
    if _current is None:
        raise RuntimeError(
            "no txflip generation in this process: run it under `twistd flip` or "
            "`python -m txflip run`, or make a txflip.Generation first"
        )
    return _current


class Generation:
    """
    This process's generation: its listeners, its readiness, its restarts and its drain.

    @param reactor: the reactor it serves on.
    @param pidFile: the PID file each generation rewrites once it serves.
    @param readyTimeout: seconds a new generation has to become ready and serve.
    @param drainTimeout: seconds to finish connections in flight before aborting.
    @param closeSpread: seconds over which long-lived connections are told to
        close when the drain starts (L{txflip.core.farewell}).
    @param argv: the successor's command line (default: this process's).
    @param inherited: what the predecessor handed down (default: read from
        this process's environment, or L{None} in a first generation).
    @param listeners: sockets to adopt in a first generation (socket activation).
    @param handover: C{overlap} (the successor starts its app while this one
        serves) or C{sequential} (this one stops its app first: L{txflip.core.pause}).
    @param pauseTimeout: seconds a sequential handover may take to finish
        in-flight work and stop the app before the restart is given up.
    @param rollbackWindow: seconds after a handover during which this
        generation keeps its app running, ready to take the traffic back from
        its successor (C{txflip rollback}); 0 for none.
    @param rollbackOn5xx: within the rollback window after taking over, give
        the traffic back once this fraction of at least 20 HTTP responses were
        5xx (L{txflip.core.errorwatch}); 0 for never.
    @param role: what kind of process this is (default L{SingleProcess}).
    @param attemptFactory: makes one try at a successor (L{UpgradeAttempt}).
    @param exitProcess: how a generation that cannot start exits (C{os._exit}).

    @ivar events: lifecycle events, for whoever reports them (see
        L{txflip.core.events}).
    @ivar exiting: fires with a reason once this generation has handed over and
        drained, or given up before serving: its host should stop the reactor.
    """

    successorWatch = 1.0
    """Seconds a generation that handed over stays, at least, ready to take the traffic back."""
    logShownOnStderr = False
    """Whether the log already goes where standard error does (one terminal): errors once."""

    def __init__(
        self,
        reactor,
        *,
        pidFile: str | None = None,
        readyTimeout: float = 60.0,
        drainTimeout: float = 30.0,
        closeSpread: float = 3.0,
        argv: list[str] | None = None,
        cwd: str | None = None,
        inherited: HandoffState | None | object = _FROM_ENVIRONMENT,
        listeners: list[InheritedListener] = (),
        simpleModeReason: str | None | object = _FROM_ENVIRONMENT,
        handover: str = OVERLAP,
        pauseTimeout: float = 30.0,
        rollbackWindow: float = 0.0,
        rollbackOn5xx: float = 0.0,
        role: IGenerationRole | None = None,
        attemptFactory: Callable[..., UpgradeAttempt] = UpgradeAttempt,
        exitProcess: Callable[[int], None] = os._exit,
    ) -> None:
        self.reactor = reactor
        """The reactor this generation serves on."""
        if inherited is _FROM_ENVIRONMENT:
            inherited = takeInheritedState()
        self.inherited: HandoffState | None = inherited
        if inherited is not None:
            inherited.keepDescriptorsToThisProcess()
        self.number = inherited.generation if inherited is not None else _generationAgain()
        setGeneration(self.number)
        if inherited is not None and inherited.pidFile:
            pidFile = inherited.pidFile
        self.pidFile = os.path.abspath(pidFile) if pidFile else None
        self.readyTimeout = readyTimeout
        self.drainTimeout = drainTimeout
        self.closeSpread = closeSpread
        if handover not in HANDOVERS:
            raise ValueError(f"handover {handover!r}: give one of {', '.join(HANDOVERS)}")
        self.handover = handover
        self.pauseTimeout = pauseTimeout
        self.rollbackWindow = rollbackWindow
        self.rollbackOn5xx = rollbackOn5xx
        self.rollbacks = Rollbacks(self)
        """Giving the traffic back to the previous generation (C{txflip rollback})."""
        self.app: AppLifecycle | None = None
        """How to stop and start the app again, for a sequential handover."""
        self.simpleModeReason = (
            detectSimpleMode() if simpleModeReason is _FROM_ENVIRONMENT else simpleModeReason
        )
        self.argv = argv or defaultSuccessorArgv()
        """The successor's command line."""
        self.exitProcess = exitProcess
        self.role: IGenerationRole = role if role is not None else SingleProcess()
        self.events = Events()
        self.tracker = ConnectionTracker()
        self.logs = GenerationLogs(self)
        """The access log, and every log file SIGUSR1 reopens (L{GenerationLogs})."""
        self.carried = Carried()
        """What this generation hands to its successor, and got from its predecessor."""
        self._state = State.STARTING
        self.startup = Startup(self)
        """The start: readiness, the link to the predecessor, the turn to start the app."""
        self.registry = self.role.registryFactory(
            reactor,
            inherited.listeners if inherited is not None else list(listeners),
            factoryHook=self._serveFactory,
            paused=inherited is not None,
            onClaimed=self.startup.claimed,
            onListening=lambda key: self.startup.listening(key, self.registry.isInternal(key)),
        )
        self.childEnvironment: dict[str, str] = {}
        """Variables the next generation gets on top of this one's environment."""
        self.exiting: Deferred = Deferred()
        self.restarts = Restarts(self, attemptFactory, cwd or workingDirectory())
        self.receiver = None
        """What receives the connections the predecessor moves here (txflip.core.connadopt)."""
        self._stopped: Deferred | None = None
        global _current
        if _current is None:
            _current = self
        self.role.attach(self)

    @property
    def workerIndex(self) -> int | None:
        """Which worker of its generation this process is (0, 1, ...), or None."""
        return self.role.workerIndex

    # The state, which only this class changes.

    @property
    def state(self) -> State:
        return self._state

    def _moveTo(self, new: State) -> None:
        checkMove(self._state, new)
        self._state = new

    # Listening.

    def install(self) -> None:
        """Stand in for the reactor's listen methods, so every app listener is handed over."""
        self.registry.install()

    def listen(self, endpoint, factory) -> Deferred:
        """
        Listen on C{endpoint} (an endpoint string, or an C{IStreamServerEndpoint}
        built on this reactor) through the handed-over sockets.

        @return: a L{Deferred} firing with the listening port.
        """
        self.install()
        if isinstance(endpoint, str):
            from twisted.internet.endpoints import serverFromString

            endpoint = serverFromString(self.reactor, endpoint)
        return endpoint.listen(factory)

    def _serveFactory(self, factory):
        """What every factory the app listens with goes through: tracked, and logged."""
        self.logs.watch(factory)
        self.rollbacks.watch(factory)
        return self.tracker.track(factory)

    # Readiness (L{Startup}).

    def expectReady(self) -> None:
        """Promise to call L{ready}: until then this generation is not ready."""
        if self.role.acceptsReadyCalls:
            self.startup.expectReady()

    def ready(self) -> None:
        """
        The app is ready: after L{expectReady}, or as its only readiness signal
        (then it also means the app has finished setting up: see L{start}).
        """
        if self.role.acceptsReadyCalls:
            self.startup.ready()

    def waitFor(self, d: Deferred, what: str) -> Deferred:
        """
        Be ready only once C{d} fires; if it fails, this generation fails to start.

        @return: C{d}, with its result passed on.
        """
        return self.startup.waitFor(d, what)

    def waitingFor(self) -> list[str]:
        """What this generation still waits for before it is ready (empty once ready)."""
        return self.startup.waitingFor()

    def start(self) -> None:
        """
        The reactor runs and the app has started: from now on, readiness is
        the last pending condition clearing (the host calls this once).
        """
        if self.role.starting():
            self.startup.start()

    def failStart(self, reason: str) -> None:
        """
        This generation cannot become ready: say why (to the predecessor too,
        word for word) and exit with status 1. A serving generation is never
        taken down by this: it only logs.
        """
        self.startup.failStart(reason)

    def _serving(self, why: str) -> None:
        """Serve: called by L{Startup} (first generation, or go) and never again."""
        self._moveTo(State.SERVING)
        if self.inherited is not None:
            self.registry.resumeAll()
            # Take the keep-alive connections the predecessor moves here
            # (txflip.core.connadopt, or the role's own way).
            self.receiver = self.role.takeMoved(self)
        keys = [listener.key for listener in self.registry.active()]
        self.events.emit("serving", first=self.inherited is None, listeners=keys)
        log.info("serving ({why}); listeners: {keys}", why=why, keys=", ".join(keys) or "none")
        self.rollbacks.serving()
        self.restarts.serving()

    # Restarts (L{Restarts}).

    @property
    def lastOutcome(self) -> Outcome | None:
        """How the last restart ended, if there was one."""
        return self.restarts.lastOutcome

    def refusal(self) -> str | None:
        """Why an upgrade cannot start now, or L{None} if it can (or will once serving)."""
        return self.restarts.refusal()

    def upgrade(self, source: str = "API") -> Deferred:
        """
        Start the next generation, if this one may. Asked while this generation
        is still starting, the upgrade starts as soon as it serves: a SIGHUP sent
        to the PID the PID file names the moment it names it is never lost.

        @return: a L{Deferred} firing with an L{Outcome}; it never fails.
        """
        return self.restarts.upgrade(source)

    def _handedOverForGood(self) -> None:
        self._moveTo(State.STOPPING)
        self.registry.releaseAll()
        self._exit("handed over")

    def handleSignals(self, restartSignal: int = signal.SIGHUP) -> None:
        """
        For a program that runs the reactor itself: C{restartSignal} starts an
        upgrade, the reactor's shutdown (SIGTERM, SIGINT, C{reactor.stop()})
        drains first, and the reactor stops once this generation has handed over.
        """
        from txflip.core.signals import handleSignals

        handleSignals(self, restartSignal)

    # Draining and stopping.

    def _stopBeforeServing(self, why: str) -> None:
        if self._state is State.STOPPING:
            return  # already on its way out (an abort that crossed a SIGTERM)
        self._moveTo(State.STOPPING)
        self.restarts.dropQueued("this generation stopped before serving")
        self._exit(why)

    def _exit(self, why: str) -> None:
        self.events.emit("exiting", handedOver=why == "handed over")
        log.info("generation exits ({how})", how=why)
        if not self.exiting.called:
            self.exiting.callback(why)

    def stop(self) -> Deferred:
        """
        Shut down for good (SIGTERM): stop accepting, drain, remove the PID file.
        After a handover, only the drain in progress is waited for.

        @return: fires once this generation has nothing left to do.
        """
        if self._stopped is None:
            self._stopped = stopForGood(self)
        return self._stopped

    # Status.

    def status(self) -> dict:
        """What this generation is doing, for C{txflip status}."""
        attempt = self.restarts.attempt
        status = {
            "generation": self.number,
            "pid": os.getpid(),
            "state": str(self._state),
            "waitingFor": self.waitingFor(),
            "successorWaitingFor": attempt.childWaitingFor if attempt else None,
            "listeners": [listener.key for listener in self.registry.serving()],
            "simpleMode": self.simpleModeReason,
        }
        self.restarts.status(status)
        self.role.status(status)
        return status
