"""
L{Generation}: this process's generation of a server, and the one owner of its
restart state.

A generation listens (adopting the sockets its predecessor handed down), says
when it is ready, starts its successor on request, and, once the successor
serves, drains and tells its host to exit. A successor that dies while this
generation still drains is taken over from: this generation accepts again.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from txflip.core import pidfile
from txflip.core.child import PredecessorLink
from txflip.core.connadopt import receiveConnections
from txflip.core.connmove import ConnectionMover
from txflip.core.drain import ConnectionTracker, Drain
from txflip.core.events import Events
from txflip.core.handoff import HandoffState, InheritedListener, takeInheritedState
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import log, setGeneration
from txflip.core.parent import Outcome, UpgradeAttempt, defaultSuccessorArgv, workingDirectory
from txflip.core.readiness import APP_LISTENING, APP_READY_CALL, REACTOR_RUNNING, Readiness
from txflip.core.simplemode import simpleModeReason as detectSimpleMode
from txflip.core.startfailure import reportStartFailure
from txflip.core.state import REFUSALS, State, checkMove

_FROM_ENVIRONMENT = object()
_current: Generation | None = None


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

    @ivar events: lifecycle events, for whoever reports them (see
        L{txflip.core.events}).
    @ivar exiting: fires with a reason once this generation has handed over and
        drained, or given up before serving: its host should stop the reactor.
    """

    _attemptFactory = UpgradeAttempt
    # Hook for txflip.workers: a leader's listeners never accept, a worker's
    # never unlink a shared path (see txflip/workers/).
    _registryFactory = ListenerRegistry
    workerIndex: int | None = None
    """Which of its generation's workers this process is (0, 1, ...), or None if it is not one."""
    successorWatch = 1.0
    """Seconds a generation that handed over stays, at least, ready to take the traffic back."""
    _exitProcess = staticmethod(os._exit)
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
    ) -> None:
        self._reactor = reactor
        if inherited is _FROM_ENVIRONMENT:
            inherited = takeInheritedState()
        self.inherited: HandoffState | None = inherited
        if inherited is not None:
            os.set_inheritable(inherited.controlFd, False)
            if inherited.transferFd is not None:  # txflip.core.connadopt's channel
                os.set_inheritable(inherited.transferFd, False)
        self.number = inherited.generation if inherited is not None else 1
        setGeneration(self.number)
        if inherited is not None and inherited.pidFile:
            pidFile = inherited.pidFile
        self.pidFile = os.path.abspath(pidFile) if pidFile else None
        self.readyTimeout = readyTimeout
        self.drainTimeout = drainTimeout
        self.closeSpread = closeSpread
        self.simpleModeReason = (
            detectSimpleMode() if simpleModeReason is _FROM_ENVIRONMENT else simpleModeReason
        )
        self._argv = argv or defaultSuccessorArgv()
        self._cwd = cwd or workingDirectory()
        self.events = Events()
        self.tracker = ConnectionTracker()
        self.registry = self._registryFactory(
            reactor,
            inherited.listeners if inherited is not None else list(listeners),
            factoryHook=self.tracker.track,
            paused=inherited is not None,
            onClaimed=self._claimed,
            onListening=self._listening,
        )
        self.childEnvironment: dict[str, str] = {}
        """Variables the next generation gets on top of this one's environment."""
        self.lastOutcome: Outcome | None = None
        self.exiting: Deferred = Deferred()
        self._state = State.STARTING
        self._readiness = Readiness(self._becomeReady)
        self._readiness.hold(REACTOR_RUNNING)
        self._readyTimer = None
        self._link: PredecessorLink | None = None
        self._attempt: UpgradeAttempt | None = None
        self._drain: Drain | None = None
        self._transfer = None  # txflip.core.connmove: set once a successor serves
        self._mover: ConnectionMover | None = None
        self._receiver = None  # txflip.core.connadopt: set once this generation takes over
        self._stopped: Deferred | None = None
        self._started = False
        global _current
        if _current is None:
            _current = self

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

            endpoint = serverFromString(self._reactor, endpoint)
        return endpoint.listen(factory)

    # Readiness.

    def expectReady(self) -> None:
        """Promise to call L{ready}: until then this generation is not ready."""
        self._readiness.explicit = True
        self._readiness.hold(APP_READY_CALL)

    def ready(self) -> None:
        """
        The app is ready: after L{expectReady}, or as its only readiness signal
        (then it also means the app has finished setting up: see L{start}).
        """
        self._readiness.explicit = True
        self._readiness.release(APP_READY_CALL)
        if not self._started:
            if self._reactor.running:
                self.start()
            else:
                self._reactor.callWhenRunning(self.start)

    def waitFor(self, d: Deferred, what: str) -> Deferred:
        """
        Be ready only once C{d} fires; if it fails, this generation fails to start.

        @return: C{d}, with its result passed on.
        """
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
        """What this generation still waits for before it is ready (empty once ready)."""
        return self._readiness.pending()

    def start(self) -> None:
        """
        The reactor runs and the app has started: from now on, readiness is
        the last pending condition clearing (the host calls this once).
        """
        if self._started:
            return
        self._started = True
        if self.inherited is None:
            self._readyTimer = self._reactor.callLater(self.readyTimeout, self._notReadyInTime)
        if not self._readiness.explicit:
            unclaimed = self.registry.unclaimed()
            for key in unclaimed:
                self._readiness.hold(_listeningAgain(key))
            if self.inherited is None and not unclaimed and not self.registry.serving():
                # An app that listens after some asynchronous set-up of its own.
                self._readiness.hold(APP_LISTENING)
        if self.inherited is not None:
            self._link = PredecessorLink(self._reactor, self.inherited, self._go, self._abandoned)
            self._link.open()
            self._readiness.onChange = self._link.waiting
        self._readiness.release(REACTOR_RUNNING)

    def _claimed(self, key: str) -> None:
        self._readiness.release(_listeningAgain(key))

    def _listening(self, key: str) -> None:
        if key not in self.registry.internal:
            self._readiness.release(APP_LISTENING)

    def _notReadyInTime(self) -> None:
        if self.waitingFor() == [APP_LISTENING]:
            log.warn(
                "the app listens on nothing after the ready timeout of {timeout:g}s; "
                "taking it as ready",
                timeout=self.readyTimeout,
            )
            self._readiness.release(APP_LISTENING)
            return
        if self._state is State.STARTING and not self._readiness.done:
            self.failStart(
                f"not ready within the ready timeout of {self.readyTimeout:g}s; "
                f"still waiting for {', '.join(self.waitingFor())}"
            )

    def _becomeReady(self) -> None:
        self.registry.closeUnclaimed()
        if self.inherited is None:
            if self._readyTimer is not None and self._readyTimer.active():
                self._readyTimer.cancel()
            if not self._writePIDFile():
                return
            self._serving("first generation")
            return
        self._link.ready()

    def _go(self, why: str) -> None:
        """The predecessor said go (or is gone): take over, unless stopping."""
        if self._state is not State.STARTING or not self.registry.serving():
            reason = (
                "it is shutting down"
                if self._state is not State.STARTING
                else "it listens on nothing"
            )
            log.error("cannot take over: {reason}", reason=reason)
            if self._link is not None:
                self._link.failed(f"cannot take over: {reason}")
            return
        if not self._writePIDFile():
            return
        self.registry.resumeAll()
        # txflip.core.connadopt: take the keep-alive connections the predecessor moves here.
        self._receiver = receiveConnections(self._reactor, self.registry, self.inherited)
        self._link.serving()
        self._serving(why)

    def _abandoned(self, why: str) -> None:
        """The predecessor gave up on this generation: its sockets are its own again; exit."""
        log.error("the previous generation abandoned this one ({why}); exiting", why=why)
        self.registry.pauseAll()
        self._stopBeforeServing(f"abandoned by the previous generation ({why})")

    def _writePIDFile(self) -> bool:
        if not self.pidFile:
            return True
        try:
            pidfile.writePID(self.pidFile)
        except OSError as e:
            self.failStart(f"cannot write PID file {self.pidFile}: {e.strerror}")
            return False
        return True

    def _serving(self, why: str) -> None:
        self._moveTo(State.SERVING)
        keys = [listener.key for listener in self.registry.active()]
        self.events.emit("serving", first=self.inherited is None, listeners=keys)
        log.info("serving ({why}); listeners: {keys}", why=why, keys=", ".join(keys) or "none")

    def tellPredecessorFailed(self, reason: str) -> None:
        """Tell the generation that started this one why it cannot start, at once."""
        if self._link is not None:
            self._link.failed(reason)
        elif self.inherited is not None:
            PredecessorLink(self._reactor, self.inherited, None, None).failed(reason)

    def failStart(self, reason: str) -> None:
        """
        This generation cannot become ready: say why (to the predecessor too,
        word for word) and exit with status 1. A serving generation is never
        taken down by this: it only logs.
        """
        if self._state is not State.STARTING:
            log.error("{reason}", reason=reason)
            return
        reportStartFailure(reason, self)
        self._exitProcess(1)

    # Restarts.

    def refusal(self) -> str | None:
        """Why an upgrade cannot start now, or L{None} if it can."""
        if self.simpleModeReason is not None:
            return f"restarts are unavailable in simple mode ({self.simpleModeReason})"
        return REFUSALS.get(self._state)

    def upgrade(self, source: str = "API") -> Deferred:
        """
        Start the next generation, if this one may.

        @return: a L{Deferred} firing with an L{Outcome}; it never fails.
        """
        refused = self.refusal()
        if refused is not None:
            log.warn("{source} refused: {why}", source=source, why=refused)
            self.events.emit("upgrade-refused", source=source, reason=refused)
            return succeed(Outcome(False, None, f"refused: {refused}", 0.0))
        log.info("{source}: starting generation {next}", source=source, next=self.number + 1)
        self._moveTo(State.UPGRADING)
        self._attempt = self._attemptFactory(
            self._reactor,
            self.registry,
            self._argv,
            self._cwd,
            self.readyTimeout,
            self.pidFile,
            self.events,
            self.childEnvironment,
        )
        return self._attempt.start(source).addCallback(self._attemptEnded)

    def _attemptEnded(self, outcome: Outcome) -> Outcome:
        attempt, self._attempt = self._attempt, None
        self.lastOutcome = outcome
        if self._state is not State.UPGRADING:
            return outcome
        if not outcome.succeeded:
            self._moveTo(State.SERVING)
            return outcome
        self._moveTo(State.HANDED_OVER)
        if self._link is not None:
            self._link.retired("handed over")
        log.info(
            "generation {next} (PID {child}) serves; draining",
            next=self.number + 1,
            child=outcome.childPid,
        )
        self._successor = attempt
        self._silenceTimer = None
        self._drained = False
        self._watchOver = False
        self._transfer = outcome.transfer  # txflip.core.connmove, used by _startDrain
        attempt.successorEnded.addCallback(self._successorEnded, outcome.childPid)
        attempt.watchSuccessor(self._successorSilence)
        self._watchTimer = self._reactor.callLater(self.successorWatch, self._endOfWatch)
        self._startDrain(handedOver=True).addCallback(self._drainedAfterHandover)
        return outcome

    def _successorSilence(self, silent: bool) -> None:
        """The successor stopped answering (or answers again) while this one holds the sockets."""
        if self._state is not State.HANDED_OVER:
            return
        child = self._successor.childPid
        if silent:
            self.registry.resumeAll()
            log.error(
                "generation {next} (PID {child}) stopped answering; accepting again beside it, "
                "and killing it if it is still silent in {timeout:g}s",
                next=self.number + 1,
                child=child,
                timeout=self.readyTimeout,
            )
            self.events.emit("successor-silent", childPid=child)
            self._silenceTimer = self._reactor.callLater(self.readyTimeout, self._successor.kill)
        else:
            if self._silenceTimer is not None and self._silenceTimer.active():
                self._silenceTimer.cancel()
            self.registry.pauseAll()
            log.info(
                "generation {next} (PID {child}) answers again; stopping accepting",
                next=self.number + 1,
                child=child,
            )
            self._exitIfDone()

    def _endOfWatch(self) -> None:
        self._watchOver = True
        self._exitIfDone()

    def _successorEnded(self, why: str, childPid: int) -> None:
        """The successor died while this generation still holds the sockets: take them back."""
        if self._state is not State.HANDED_OVER:
            return
        if self._watchTimer.active():
            self._watchTimer.cancel()
        self._moveTo(State.SERVING)
        self.registry.resumeAll()
        if self._mover is not None:
            self._mover.abandon(f"generation {self.number + 1} died")
            self._mover = None
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        reason = f"generation {self.number + 1} (PID {childPid}) {why} after taking over"
        log.error("{reason}; generation {gen} serves again", reason=reason, gen=self.number)
        if self.pidFile:
            try:
                pidfile.writePID(self.pidFile)
            except OSError as e:
                log.error("cannot rewrite PID file {path}: {error}", path=self.pidFile, error=e)
        self.lastOutcome = Outcome(False, childPid, reason, 0.0)
        self.events.emit("successor-died", childPid=childPid, reason=reason)

    def _drainedAfterHandover(self, aborted: int) -> None:
        self._drained = True
        self._exitIfDone()

    def _exitIfDone(self) -> None:
        """Exit once drained, watched long enough, and the successor answers."""
        if self._state is not State.HANDED_OVER or not (self._drained and self._watchOver):
            return
        if self._successor.successorSilent:
            return
        self._moveTo(State.STOPPING)
        self.registry.releaseAll()
        self._exit("handed over")

    def handleSignals(self) -> None:
        """
        For a program that runs the reactor itself: SIGHUP starts an upgrade,
        the reactor's shutdown (SIGTERM, SIGINT, C{reactor.stop()}) drains
        first, and the reactor stops once this generation has handed over.
        """
        from txflip.core.signals import SighupDispatch

        dispatch = SighupDispatch(self._reactor)
        dispatch.generation = self
        dispatch.install()
        self._reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        self.exiting.addCallback(lambda _: self._reactor.running and self._reactor.stop())

    # Stopping.

    def _startDrain(self, handedOver: bool) -> Deferred:
        # txflip.core.connmove: after a handover, idle HTTP/1.x connections move to the
        # successor; the drain leaves them to the mover.
        transfer, self._transfer = self._transfer, None
        self._mover = None
        if handedOver and transfer is not None:
            self._mover = ConnectionMover(
                self._reactor,
                self.tracker,
                self.registry,
                transfer,
                self.events,
                self.drainTimeout,
            )
        self.events.emit(
            "draining",
            handedOver=handedOver,
            connections=len(self.tracker.open()),
            moving=self._mover is not None,
        )
        self._drain = self._newDrain(handedOver)
        if self._mover is not None:
            self._mover.start()
        return self._drain.start()

    def _newDrain(self, handedOver: bool):
        """
        The drain of this generation's connections. A hook for txflip.workers:
        a leader's connections are its workers', so it drains them instead.
        """
        return Drain(
            self._reactor,
            self.tracker,
            self.drainTimeout,
            claims=self._mover,
            closeSpread=self.closeSpread,
            handedOver=handedOver,
        )

    def _stopBeforeServing(self, why: str) -> None:
        if self._state is State.STOPPING:
            return  # already on its way out (an abort that crossed a SIGTERM)
        self._moveTo(State.STOPPING)
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
        if self._stopped is not None:
            return self._stopped
        if self._state is State.HANDED_OVER:
            # Already draining; its end fires exiting.
            self._stopped = Deferred()
            self.exiting.addBoth(lambda _: self._stopped.callback(None))
            return self._stopped
        neverServed = self._state is State.STARTING
        if self._link is not None and not neverServed:
            self._link.retired("stopping")
        if self._state is not State.STOPPING:
            self._moveTo(State.STOPPING)
        stopped = self._abandonAttempt()
        if neverServed and self.inherited is not None:
            # The sockets still belong to the generation that started this one.
            log.info("stopping before serving: letting go of inherited listeners")
            stopped.addCallback(lambda _: self.registry.releaseAll())
        elif not self.exiting.called:
            log.info("shutting down: closing listeners and draining")
            stopped.addCallback(lambda _: self.registry.stopAll())
            stopped.addCallback(lambda _: self._startDrain(handedOver=False))

            def finished(_):
                if self.pidFile:
                    pidfile.removePIDIfOurs(self.pidFile)
                self._exit("shut down")

            stopped.addCallback(finished)
        self._stopped = stopped
        return stopped

    def _abandonAttempt(self) -> Deferred:
        attempt = self._attempt
        if attempt is None:
            return succeed(None)
        waiting = Deferred()
        attempt.result.addBoth(lambda result: waiting.callback(None) or result)
        attempt.abort("this generation is shutting down")
        return waiting

    # Status.

    def status(self) -> dict:
        """What this generation is doing, for C{txflip status}."""
        return {
            "generation": self.number,
            "pid": os.getpid(),
            "state": str(self._state),
            "waitingFor": self.waitingFor(),
            "successorWaitingFor": self._attempt.childWaitingFor if self._attempt else None,
            "listeners": [listener.key for listener in self.registry.serving()],
            "simpleMode": self.simpleModeReason,
        }


def _listeningAgain(key: str) -> str:
    return f"listening again on {key}"
