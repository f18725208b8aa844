"""
L{FlipService}: one generation's life, from adopting listeners to the drain.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from txflip.core import pidfile
from txflip.core.channel import PredecessorChannel, adoptChannel, reportFailureSynchronously
from txflip.core.drain import ConnectionTracker, Drain
from txflip.core.handoff import HandoffState
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import generation, log
from txflip.core.parent import Outcome, Upgrader


@dataclass
class FlipConfig:
    """What C{twistd flip} was asked to do."""

    listen: list[str] = field(default_factory=list)
    pidFile: str | None = None
    readyTimeout: float = 60.0
    drainTimeout: float = 30.0


def fatal(message: str, inherited: HandoffState | None = None) -> SystemExit:
    """
    The error for a generation that cannot start: one line on stderr, exit 1.

    A child also tells its parent why, so the parent's log names the reason.
    """
    if inherited is not None:
        reportFailureSynchronously(inherited.controlFd, message)
    line = "twistd flip: error: " + " ".join(message.split())
    if sys.stderr is not sys.__stderr__ and sys.__stderr__ is not None:
        # Once twistd's logging has begun, sys.stderr goes to the log: the
        # operator at the terminal gets the line too.
        sys.__stderr__.write(line + "\n")
        sys.__stderr__.flush()
    return SystemExit(line)


class FlipService(Service):
    """
    Runs the app in this generation and hands it over to the next.

    @param endpoints: C{(description, endpoint, factory)} for each C{--listen}.
    @param appService: the app, when it is an C{IService}.
    """

    def __init__(
        self,
        reactor,
        config: FlipConfig,
        registry: ListenerRegistry,
        tracker: ConnectionTracker,
        upgrader: Upgrader,
        endpoints: list[tuple[str, object, object]],
        appService: IService | None = None,
        inherited: HandoffState | None = None,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.registry = registry
        self.tracker = tracker
        self.upgrader = upgrader
        self._endpoints = endpoints
        self.appService = appService
        self._inherited = inherited
        self.events = upgrader.events
        self._channel: PredecessorChannel | None = None
        self._abandonedByParent = False

    # Starting.

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        for description, endpoint, factory in self._endpoints:
            failures: list[Failure] = []
            endpoint.listen(factory).addErrback(failures.append)
            if failures:
                raise fatal(f"cannot listen on {description}: {failures[0].value}", self._inherited)
        if self.appService is not None:
            self._guarded("starting the app (privileged)", self.appService.privilegedStartService)

    def startService(self) -> None:
        Service.startService(self)
        if self.appService is not None:
            self._guarded("starting the app", self.appService.startService)
        self._reactor.callWhenRunning(self._becomeReady)

    def _guarded(self, what: str, call) -> None:
        try:
            call()
        except SystemExit:
            raise
        except Exception as e:
            raise fatal(f"{what} failed: {type(e).__name__}: {e}", self._inherited) from None

    def _becomeReady(self) -> None:
        self.registry.closeUnclaimed()
        if self._inherited is None:
            self._writePIDFile()
            self._serving("first generation")
            return
        channelSocket = socket.socket(fileno=self._inherited.controlFd)
        self._channel = adoptChannel(
            self._reactor,
            channelSocket,
            PredecessorChannel(self._go, self._abandoned, self._inherited.parentPid),
        )
        self._channel.ready()

    def _writePIDFile(self) -> None:
        if not self.config.pidFile:
            return
        try:
            pidfile.writePID(self.config.pidFile)
        except OSError as e:
            message = f"cannot write PID file {self.config.pidFile}: {e.strerror}"
            if self._channel is not None:
                # os._exit discards whatever the transport has not written yet.
                self._channel.failedBeforeExit(message)
            sys.__stderr__.write(f"twistd flip: error: {message}\n")
            sys.__stderr__.flush()
            os._exit(1)

    def _go(self, why: str) -> None:
        """The parent paused accepting (or is gone): take over, unless stopping."""
        if not self.running or not self.registry.serving():
            reason = "it is shutting down" if not self.running else "it listens on nothing"
            log.error("cannot take over: {reason}", reason=reason)
            if self._channel is not None:
                self._channel.failed(f"cannot take over: {reason}")
            return
        self._writePIDFile()
        self.registry.resumeAll()
        if self._channel is not None and self._channel.transport is not None:
            self._channel.serving()
            self._channel.transport.loseConnection()
        self._serving(why)

    def _abandoned(self, why: str) -> None:
        """The parent gave up on this generation: its sockets are the parent's again; exit."""
        log.error("the previous generation abandoned this one ({why}); exiting", why=why)
        self._abandonedByParent = True
        self.registry.pauseAll()
        if self.running:
            self._reactor.stop()

    def _serving(self, why: str) -> None:
        if self.upgrader.state == "starting":
            self.upgrader.state = "ready"
        self.events.emit(
            "serving",
            first=self._inherited is None,
            listeners=[listener.key for listener in self.registry.active()],
        )
        log.info(
            "serving ({why}); listeners: {keys}",
            why=why,
            keys=", ".join(listener.key for listener in self.registry.active()) or "none",
        )

    # Handing over and stopping.

    def handedOver(self, outcome: Outcome) -> None:
        """The next generation serves: drain and exit."""
        log.info(
            "generation {next} (PID {child}) serves; draining and exiting",
            next=generation() + 1,
            child=outcome.childPid,
        )
        self._reactor.stop()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        handedOver = self.upgrader.state == "handedOver"
        neverServed = self._abandonedByParent or (
            self.upgrader.state == "starting" and self._inherited is not None
        )
        stopped = self.upgrader.stopping()
        if handedOver:
            pass
        elif neverServed:
            # The sockets still belong to the generation that started this one:
            # let go of them without removing UNIX paths or shutting them down.
            log.info("stopping before serving: letting go of inherited listeners")
            stopped.addCallback(lambda _: self.registry.releaseAll())
        else:
            log.info("shutting down: closing listeners and draining")
            stopped.addCallback(lambda _: self.registry.stopAll())
        # A step that fails is logged and the next one runs: a listener that
        # cannot close, or an app that fails to stop, never cuts the drain short
        # nor leaves the PID file behind.
        stopped.addErrback(self._stepFailed, "closing the listeners")
        stopped.addCallback(lambda _: self._drain(handedOver))
        if self.appService is not None:
            stopped.addCallback(lambda _: maybeDeferred(self.appService.stopService))
            stopped.addErrback(self._stepFailed, "stopping the app")
        stopped.addCallback(lambda _: self._exited(handedOver or neverServed))
        return stopped

    def _stepFailed(self, failure: Failure, what: str) -> None:
        log.error(
            "{what} failed: {error}; shutting down anyway",
            what=what,
            error=f"{failure.type.__name__}: {failure.getErrorMessage()}",
        )

    def _drain(self, handedOver: bool) -> Deferred:
        self.events.emit("draining", handedOver=handedOver, connections=len(self.tracker.open()))
        return Drain(self._reactor, self.tracker, self.config.drainTimeout).start()

    def _exited(self, handedOver: bool) -> None:
        """
        @param handedOver: whether the listeners (and the PID file) belong to
            another generation now, or still did when this one gave up.
        """
        self.events.emit("exiting", handedOver=handedOver)
        # twistd re-raises a SIGTERM/SIGINT that stopped the reactor, so the
        # process would die by that signal; a completed drain is a clean exit.
        if hasattr(self._reactor, "_exitSignal"):
            self._reactor._exitSignal = None
        if not handedOver and self.config.pidFile:
            pidfile.removePIDIfOurs(self.config.pidFile)
        log.info("generation exits ({how})", how="handed over" if handedOver else "shut down")
