"""
Hosting a generation in a process: what the twistd plugin and C{python -m
txflip run} both set up around the restart core.

In order: the restart signal (SIGHUP unless C{--restart-signal}) is caught
before any app code is imported (a stray SIGHUP would kill the process); the
handoff state and systemd's variables are taken from the environment; the
L{Generation} is made and stands in for the reactor's listen methods; then the
control socket and sd_notify are attached to its events, and a watch warns if
the app takes the restart signal over.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from txflip.core import pidfile
from txflip.core.generation import Generation
from txflip.core.handoff import HandoffState, takeInheritedState
from txflip.core.log import log
from txflip.core.reopen import REOPEN_SIGNAL, ReopenSignal
from txflip.core.signals import RestartSignalDispatch, TakeoverWatch
from txflip.core.startfailure import StartFailureReporter
from txflip.systemd import activation, fdstore
from txflip.systemd import notify as sdnotify
from txflip.workers.role import takeWorkerRole


class ConfigError(Exception):
    """Bad input; the message is one line that says what is wrong and how to fix it."""


@dataclass
class HostSettings:
    """What the operator asked of the generation, whichever launcher read it."""

    pidFile: str | None = None
    readyTimeout: float = 60.0
    drainTimeout: float = 30.0
    closeSpread: float = 3.0
    control: str | None = None
    noControl: bool = False
    argv: list[str] | None = None
    fdStore: bool = False
    appNotify: bool = False
    """The app speaks sd_notify: its own C{READY=1} is its readiness."""
    workers: int = 1
    """Processes per generation; above 1, this process leads them (txflip.workers)."""
    handover: str = "overlap"
    """C{overlap}, or C{sequential}: the old generation stops its app first (txflip.core.pause)."""
    pauseTimeout: float = 30.0
    """Seconds a sequential handover may take to finish in-flight work and stop the app."""
    accessLog: str | None = None
    """Where to log the app's HTTP requests (Combined Log Format), if anywhere."""
    rollbackWindow: float = 0.0
    """Seconds a generation that handed over stays ready to take the traffic back."""
    rollbackOn5xx: float = 0.0
    """Roll a new generation back once this fraction of its first 20+ responses are 5xx."""
    metrics: str | None = None
    """The endpoint that serves /metrics (txflip.metrics), if any."""

    def check(self) -> None:
        """Raise L{ConfigError} with one line if the settings cannot work together."""
        from txflip.core.restarts import HANDOVERS, SEQUENTIAL

        if self.handover not in HANDOVERS:
            raise ConfigError(f"--handover {self.handover!r}: give one of {', '.join(HANDOVERS)}")
        if not 0 <= self.rollbackOn5xx <= 1:
            raise ConfigError(
                f"--rollback-on-5xx {self.rollbackOn5xx:g}: give a fraction of the "
                "responses above 0 and at most 1, e.g. 0.5"
            )
        if self.rollbackOn5xx and not self.rollbackWindow:
            raise ConfigError(
                "--rollback-on-5xx needs --rollback-window SECONDS: the time during which "
                "the previous generation can take the traffic back"
            )
        if self.rollbackOn5xx and self.workers > 1:
            raise ConfigError(
                "--rollback-on-5xx works with one process per generation: drop --workers, "
                "or roll back by hand with txflip rollback"
            )
        if self.handover == SEQUENTIAL and self.workers > 1:
            raise ConfigError(
                "--handover sequential works with one process per generation: "
                "drop --workers, or use --handover overlap"
            )


class Host:
    """
    The process around one generation. Make it first thing: its constructor
    catches the restart signal and reads what the previous generation handed down.

    @param restartSignal: the signal that starts the next generation
        (L{txflip.core.signals.restartSignal} reads C{--restart-signal}).
    @raise ValueError: the handoff state in the environment is malformed.
    """

    def __init__(self, reactor, restartSignal: int = signal.SIGHUP) -> None:
        self.reactor = reactor
        self.dispatch = RestartSignalDispatch(reactor, restartSignal)
        self.dispatch.install()
        self.inherited: HandoffState | None = takeInheritedState()
        # Whatever else ends this child before it serves reaches its parent too.
        self._startFailures = (
            StartFailureReporter(self.inherited.controlFd) if self.inherited is not None else None
        )
        # --workers: a worker is told so by its leader (txflip.workers.role).
        self.workerRole = takeWorkerRole()
        self.generation: Generation | None = None
        self._notifySettings = sdnotify.takeFromEnvironment()
        try:
            self.activated = activation.takeActivation()
        except activation.ActivationError as e:
            raise ConfigError(str(e)) from None

    @property
    def controlFd(self) -> int | None:
        """Where to report a failed start to the parent, if there is one."""
        return self.inherited.controlFd if self.inherited is not None else None

    def checkedPIDFile(self, path: str | None) -> str | None:
        """The PID file, checked: its directory writable, nobody else running from it."""
        if self.inherited is not None and self.inherited.pidFile:
            path = self.inherited.pidFile
        if not path:
            return None
        path = os.path.abspath(path)
        pidfile.checkWritableDirectory(path)
        if self.inherited is None:
            running = pidfile.readPID(path)
            if running and running != os.getpid() and pidfile.processIsAlive(running):
                raise ConfigError(
                    f"PID file {path} names PID {running}, which is running: "
                    f"send it SIGHUP to restart, or stop it first"
                )
        return path

    def startGeneration(self, settings: HostSettings) -> Generation:
        """Make this process's L{Generation}, listening through the handed-over sockets."""
        if self.workerRole is not None:
            return self._startWorker(settings)
        settings.check()
        extra = {}
        if settings.workers > 1:
            from txflip.workers.leader import Leader

            extra = {"role": Leader(settings.workers)}
        generation = Generation(
            self.reactor,
            pidFile=self.checkedPIDFile(settings.pidFile),
            readyTimeout=settings.readyTimeout,
            drainTimeout=settings.drainTimeout,
            closeSpread=settings.closeSpread,
            argv=settings.argv,
            handover=settings.handover,
            pauseTimeout=settings.pauseTimeout,
            rollbackWindow=settings.rollbackWindow,
            rollbackOn5xx=settings.rollbackOn5xx,
            inherited=self.inherited,
            listeners=self.activated.inheritedListeners() if self.inherited is None else (),
            **extra,
        )
        generation.install()
        self._setUpLogs(generation, settings)
        # What systemd's fd store hands back is what an earlier configuration
        # listened on: one this configuration drops must not hold readiness.
        generation.registry.offer(self.activated.storedKeys())
        self.generation = generation
        self.dispatch.generation = generation
        generation.childEnvironment.update(self.activated.childEnvironment())
        if self.activated.sockets:
            log.info(
                "socket activation: adopting {sockets}, read from {source}",
                sockets=", ".join(f"{s.name}={s.key}" for s in self.activated.sockets),
                source=self.activated.source,
            )
        if settings.appNotify and settings.workers == 1:
            # With workers, the app runs (and says READY=1) in each of them.
            self._hearAppNotify(generation)
        control = self._listenControl(settings, generation)
        if settings.metrics:
            self._serveMetrics(generation, settings.metrics)
        hidden = {control.key()} if control else ()
        sdnotify.install(self.reactor, generation, self._notifySettings, hidden=hidden)
        fdstore.install(generation, self._notifySettings, self.activated, optIn=settings.fdStore)
        if self._startFailures is not None:
            generation.events.subscribe(self._startFailures.observe)
        if generation.simpleModeReason is not None:
            log.warn(
                "simple mode: {why}; {signal} will not restart, SIGTERM drains",
                why=generation.simpleModeReason,
                signal=self.dispatch.name,
            )
        else:
            self._watchRestartSignal(generation, control)
        if self.inherited is not None:
            log.info(
                "generation {gen} starting, handed {count} listener(s) by PID {parent}",
                gen=self.inherited.generation,
                count=len(self.inherited.listeners),
                parent=self.inherited.parentPid,
            )
        return generation

    def _startWorker(self, settings: HostSettings) -> Generation:
        """A worker of a generation: no PID file, control socket or systemd of its own."""
        from txflip.workers.worker import Worker

        role = self.workerRole
        generation = Generation(
            self.reactor,
            role=Worker(role),
            readyTimeout=settings.readyTimeout,
            drainTimeout=settings.drainTimeout,
            closeSpread=settings.closeSpread,
            argv=settings.argv,
            inherited=self.inherited,
        )
        generation.install()
        self._setUpLogs(generation, settings)
        self.generation = generation
        self.dispatch.generation = generation
        if settings.appNotify:
            self._hearAppNotify(generation)
        if self._startFailures is not None:
            generation.events.subscribe(self._startFailures.observe)
        log.info(
            "worker {index} of {count} starting, handed {listeners} listener(s) "
            "by its leader, PID {leader}",
            index=role.index,
            count=role.count,
            listeners=len(self.inherited.listeners),
            leader=self.inherited.parentPid,
        )
        return generation

    def _serveMetrics(self, generation: Generation, description: str) -> None:
        from twisted.internet.endpoints import serverFromString

        try:
            from txflip.metrics import serveMetrics
        except ImportError as e:
            raise ConfigError(
                f"--metrics needs prometheus_client ({e}): pip install 'txflip[metrics]'"
            ) from None
        try:
            endpoint = serverFromString(self.reactor, description)
        except Exception as e:
            raise ConfigError(
                f"bad --metrics {description!r}: {' '.join(str(e).split())}; "
                "use Twisted's endpoint syntax, e.g. tcp:9100:interface=127.0.0.1"
            ) from None
        try:
            serveMetrics(generation, endpoint)
        except Exception as e:
            raise ConfigError(f"cannot serve --metrics on {description}: {e}") from None

    def _setUpLogs(self, generation: Generation, settings: HostSettings) -> None:
        """The access log, and SIGUSR1 to reopen the log files (txflip.core.reopen)."""
        if settings.accessLog:
            try:
                accessLog = generation.logs.useAccessLog(settings.accessLog)
            except OSError as e:
                raise ConfigError(
                    f"--access-log {settings.accessLog}: cannot open it for appending: "
                    f"{e.strerror or e}; give a file in a directory this user may write"
                ) from None
            self.reactor.addSystemEventTrigger("after", "shutdown", accessLog.close)
        if self.dispatch.signum == REOPEN_SIGNAL:
            if settings.accessLog:
                log.warn(
                    "SIGUSR1 restarts (--restart-signal USR1), so it cannot reopen the "
                    "access log: each generation opens it afresh when it starts"
                )
            return
        reopen = ReopenSignal(self.reactor, generation.logs.reopen)
        if not reopen.install() and settings.accessLog:
            log.warn("SIGUSR1 already has a handler: it does not reopen the access log")

    def _watchRestartSignal(self, generation: Generation, control) -> None:
        """Warn once if the app takes the restart signal over (see L{TakeoverWatch})."""
        from txflip.control.paths import defaultControlPath

        if self.dispatch.signum != signal.SIGHUP:
            log.info("restarts on {signal} (--restart-signal)", signal=self.dispatch.name)
        if control is None:
            reload = "give flip --pid-file or --control and restart with `txflip reload`"
        elif generation.pidFile and control.path == defaultControlPath(generation.pidFile):
            reload = f"restart with `txflip reload --pid-file {generation.pidFile}`"
        else:
            reload = f"restart with `txflip reload --control {control.path}`"
        watch = TakeoverWatch(self.reactor, self.dispatch.signum, reload)

        def observe(name: str, fields: dict) -> None:
            if name == "serving":
                watch.start()
            elif name == "exiting":
                watch.stop()

        generation.events.subscribe(observe)

    def _hearAppNotify(self, generation: Generation) -> None:
        from txflip.systemd.appnotify import AppNotifyListener

        AppNotifyListener(generation).listen(self.reactor)

    def _listenControl(self, settings: HostSettings, generation: Generation):
        """Open the control socket (through the registry, so it is handed over)."""
        from twisted.internet.error import CannotListenError

        from txflip.control.paths import defaultControlPath
        from txflip.control.server import ControlServer

        pidFile = generation.pidFile
        path = settings.control or (defaultControlPath(pidFile) if pidFile else None)
        if settings.noControl or not path:
            return None
        server = ControlServer(generation, path)
        try:
            server.listen(self.reactor)
        except CannotListenError as e:
            raise ConfigError(
                f"cannot open the control socket {server.path}: {e.socketError}; "
                "give another --control PATH, or --no-control"
            ) from None
        return server
