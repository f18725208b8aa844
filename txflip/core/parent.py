"""
Starting the next generation and handing it the listeners (DESIGN.md section 2).

L{Upgrader} holds this generation's restart state: at most one upgrade runs at
a time, and only a generation that is itself serving may start one. An
L{UpgradeAttempt} is one try: spawn the child with the listeners at known
descriptors, wait for it to report ready, pause, say go, wait for it to serve,
then let go of the listeners. Any failure on the way kills the child, resumes
accepting, and leaves this generation serving as if nothing had happened.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

from txflip.core import pidfile
from txflip.core.channel import SuccessorChannel, adoptChannel
from txflip.core.events import Events
from txflip.core.handoff import ENV_STATE, HandoffState
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import generation, log
from txflip.twistd.compat import successorArgv

KILL_GRACE_SECONDS = 5.0
CHANNEL_LOST_GRACE_SECONDS = 2.0
SERVING_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    """How one upgrade ended."""

    succeeded: bool
    childPid: int | None
    reason: str
    seconds: float


class _ChildProcess(ProcessProtocol):
    def __init__(self, onEnded: Callable[[str], None]) -> None:
        self._onEnded = onEnded

    def processEnded(self, reason) -> None:
        value = reason.value
        if isinstance(value, ProcessDone):
            why = "exited with code 0"
        elif isinstance(value, ProcessTerminated) and value.signal is not None:
            why = f"was killed by signal {value.signal}"
        elif isinstance(value, ProcessTerminated):
            why = f"exited with code {value.exitCode}"
        else:
            why = str(value)
        self._onEnded(why)


class UpgradeAttempt:
    """One try at starting the next generation."""

    def __init__(
        self,
        reactor,
        registry: ListenerRegistry,
        argv: list[str],
        cwd: str,
        readyTimeout: float,
        pidFile: str | None,
        events: Events | None = None,
        extraEnv: dict[str, str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._registry = registry
        self._events = events or Events()
        self._extraEnv = extraEnv or {}
        self._argv = argv
        self._cwd = cwd
        self._readyTimeout = readyTimeout
        self._pidFile = pidFile
        self._started = time.monotonic()
        self._paused = False
        self._childEnded = False
        self._outcome: Outcome | None = None
        self._failureReason: str | None = None
        self._exitedHow: str | None = None
        self._channelOpen = False
        self._channel: SuccessorChannel | None = None
        self._process = None
        self._killTimer = None
        self._timer = None
        self.childPid: int | None = None
        self.result: Deferred = Deferred()

    def start(self, source: str = "SIGHUP") -> Deferred:
        """Spawn the child; the L{Deferred} fires with the L{Outcome}."""
        try:
            self._spawn()
        except Exception as e:
            self._events.emit(
                "upgrade-started", source=source, childPid=None, nextGeneration=generation() + 1
            )
            self._finish(False, f"could not be started: {type(e).__name__}: {e}")
            return self.result
        self._events.emit(
            "upgrade-started",
            source=source,
            childPid=self.childPid,
            nextGeneration=generation() + 1,
        )
        self._timer = self._reactor.callLater(self._readyTimeout, self._timedOut)
        return self.result

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            childFDs, described = self._registry.handoffDescriptors(firstFd=3)
            controlFd = 3 + len(described)
            childFDs.update({0: 0, 1: 1, 2: 2, controlFd: theirs.fileno()})
            state = HandoffState(
                generation=generation() + 1,
                parentPid=os.getpid(),
                controlFd=controlFd,
                listeners=described,
                pidFile=self._pidFile,
            )
            env = dict(os.environ)
            env.update(self._extraEnv)
            env[ENV_STATE] = state.encode()
            self._process = self._reactor.spawnProcess(
                _ChildProcess(self._ended),
                self._argv[0],
                self._argv,
                env=env,
                path=self._cwd,
                childFDs=childFDs,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.childPid = self._process.pid
        self._channel = adoptChannel(
            self._reactor,
            ours,
            SuccessorChannel(self._ready, self._serving, self._failed, self._channelLost),
        )
        self._channelOpen = True
        log.info(
            "started generation {next} as PID {child}, {count} listener(s) handed down",
            next=state.generation,
            child=self.childPid,
            count=len(described),
        )

    def _elapsedMs(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    # What the child says.

    def _ready(self, pid: int) -> None:
        if self._outcome is not None:
            return
        log.info(
            "generation {next} (PID {child}) is ready after {ms} ms; pausing accept and saying go",
            next=generation() + 1,
            child=pid,
            ms=self._elapsedMs(),
        )
        self._events.emit("child-ready", childPid=pid, ms=self._elapsedMs())
        # From "go" on, the child may be accepting: the ready timeout no longer
        # applies (a late timer must not kill a child that took over); only a
        # child that does not confirm within SERVING_TIMEOUT_SECONDS is given up.
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(SERVING_TIMEOUT_SECONDS, self._servingTimedOut)
        self._registry.pauseAll()
        self._paused = True
        self._channel.go()

    def _serving(self) -> None:
        if self._outcome is not None or not self._paused:
            return
        self._registry.releaseAll()
        self._paused = False
        self._finish(True, "serving")

    def _failed(self, reason: str) -> None:
        self._failureReason = reason
        if self._outcome is None:
            self._fail("it reported that it cannot start")

    def _channelLost(self) -> None:
        self._channelOpen = False
        if self._outcome is None and self._exitedHow is not None:
            # Everything the dead child wrote has been read now.
            self._fail(self._exitedHow + " before serving")
        elif self._outcome is None:
            # The channel usually closes because the child exited: give its exit
            # status a moment to arrive, since it is the better reason to log.
            self._reactor.callLater(CHANNEL_LOST_GRACE_SECONDS, self._channelLostForGood)

    def _channelLostForGood(self) -> None:
        if self._outcome is None:
            self._fail("closed its control channel before serving")

    def _ended(self, why: str) -> None:
        self._childEnded = True
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        if self._outcome is None and self._channelOpen:
            # A child that cannot start says why, then exits at once: the line
            # may still be unread although the exit status is here. What it
            # said beats how it exited, so read on until the channel ends.
            self._exitedHow = why
            self._reactor.callLater(CHANNEL_LOST_GRACE_SECONDS, self._exitedForGood)
        elif self._outcome is None:
            self._fail(why + " before serving")
        elif not self._outcome.succeeded and not self.result.called:
            self.result.callback(self._outcome)

    def _exitedForGood(self) -> None:
        # Something the child started may hold the channel open.
        if self._outcome is None:
            self._fail(self._exitedHow + " before serving")

    def _servingTimedOut(self) -> None:
        if self._outcome is None:
            self._fail(f"did not confirm serving within {SERVING_TIMEOUT_SECONDS:g}s of go")

    def _timedOut(self) -> None:
        if self._outcome is None:
            self._fail(f"was not ready within the ready timeout of {self._readyTimeout:g}s")

    def abort(self, why: str) -> None:
        """Give up on this attempt (this generation is shutting down)."""
        if self._outcome is None:
            self._fail(why)

    # Endings.

    def _fail(self, why: str) -> None:
        if self._paused:
            self._registry.resumeAll()
            self._paused = False
        reason = why
        if self._failureReason:
            reason = f"{self._failureReason} ({why})"
        self._outcome = Outcome(False, self.childPid, reason, time.monotonic() - self._started)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._channel is not None and self._channel.transport is not None:
            self._channel.abort()
            self._channel.transport.loseConnection()
        if not self._childEnded:
            self._signal(signal.SIGTERM)
            self._killTimer = self._reactor.callLater(
                KILL_GRACE_SECONDS, self._signal, signal.SIGKILL
            )
        log.error(
            "generation {next} (PID {child}) failed: {reason}; generation {gen} keeps serving",
            next=generation() + 1,
            child=self.childPid,
            reason=reason,
            gen=generation(),
        )
        self._events.emit(
            "upgrade-failed", childPid=self.childPid, reason=reason, ms=self._elapsedMs()
        )
        self._restorePIDFile()
        if self._childEnded:
            self.result.callback(self._outcome)

    def _restorePIDFile(self) -> None:
        """If the child wrote the PID file before failing, it names this process again."""
        if not self._pidFile or pidfile.readPID(self._pidFile) != self.childPid:
            return
        try:
            pidfile.writePID(self._pidFile)
        except OSError as e:
            log.error("cannot restore PID file {path}: {error}", path=self._pidFile, error=e)

    def _signal(self, signum: int) -> None:
        if self._childEnded or self._process is None:
            return
        try:
            self._process.signalProcess(signum)
        except Exception:
            pass

    def _finish(self, succeeded: bool, reason: str) -> None:
        self._outcome = Outcome(succeeded, self.childPid, reason, time.monotonic() - self._started)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if succeeded:
            log.info(
                "handed over to generation {next} (PID {child}) in {ms} ms",
                next=generation() + 1,
                child=self.childPid,
                ms=self._elapsedMs(),
            )
            self._events.emit("upgrade-succeeded", childPid=self.childPid, ms=self._elapsedMs())
        else:
            log.error(
                "generation {next} {reason}; generation {gen} keeps serving",
                next=generation() + 1,
                reason=reason,
                gen=generation(),
            )
            self._events.emit(
                "upgrade-failed", childPid=self.childPid, reason=reason, ms=self._elapsedMs()
            )
        self.result.callback(self._outcome)


def workingDirectory() -> str:
    """
    This process's working directory as the operator named it.

    C{os.getcwd()} resolves symlinks, so a deploy that switches a C{current}
    symlink would start the next generation in the old release; C{$PWD} keeps
    the link, when it names the same directory.
    """
    resolved = os.getcwd()
    named = os.environ.get("PWD")
    if named and os.path.isabs(named):
        try:
            if os.path.samefile(named, resolved):
                return named
        except OSError:
            pass
    return resolved


class Upgrader:
    """
    This generation's restart state; one upgrade at a time.

    States: C{starting} (not serving yet), C{ready}, C{upgrading},
    C{handedOver} and C{stopping}. Only C{ready} accepts an upgrade.
    """

    def __init__(
        self,
        reactor,
        registry: ListenerRegistry,
        readyTimeout: float,
        pidFile: str | None,
        onHandedOver: Callable[[Outcome], None],
        simpleModeReason: str | None = None,
        argv: list[str] | None = None,
        cwd: str | None = None,
        events: Events | None = None,
        successorOptions: list[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._registry = registry
        self.events = events or Events()
        self._readyTimeout = readyTimeout
        self._pidFile = pidFile
        self._onHandedOver = onHandedOver
        self.simpleModeReason = simpleModeReason
        self._argv = argv or successorArgv(
            list(sys.orig_argv), sys.executable, successorOptions or []
        )
        self._cwd = cwd or workingDirectory()
        self.state = "starting"
        self.attempt: UpgradeAttempt | None = None
        self.childEnvironment: dict[str, str] = {}
        """Variables the next generation gets on top of this one's environment."""

    def refusal(self) -> str | None:
        """Why an upgrade cannot start now, or L{None} if it can."""
        if self.simpleModeReason is not None:
            return f"restarts are unavailable in simple mode ({self.simpleModeReason})"
        return {
            "starting": "this generation is not serving yet",
            "upgrading": "an upgrade is already in progress",
            "handedOver": "this generation has handed over and is draining",
            "stopping": "this generation is shutting down",
        }.get(self.state)

    def upgrade(self, source: str = "SIGHUP") -> Deferred:
        """
        Start the next generation, if this one may.

        @return: a L{Deferred} firing with an L{Outcome}.
        """
        refused = self.refusal()
        if refused is not None:
            log.warn("{source} refused: {why}", source=source, why=refused)
            self.events.emit("upgrade-refused", source=source, reason=refused)
            d = Deferred()
            d.callback(Outcome(False, None, f"refused: {refused}", 0.0))
            return d
        log.info("{source}: starting generation {next}", source=source, next=generation() + 1)
        self.state = "upgrading"
        self.attempt = UpgradeAttempt(
            self._reactor,
            self._registry,
            self._argv,
            self._cwd,
            self._readyTimeout,
            self._pidFile,
            self.events,
            self.childEnvironment,
        )
        return self.attempt.start(source).addCallback(self._attemptEnded)

    def _attemptEnded(self, outcome: Outcome) -> Outcome:
        self.attempt = None
        if outcome.succeeded:
            self.state = "handedOver"
            self._onHandedOver(outcome)
        elif self.state == "upgrading":
            self.state = "ready"
        return outcome

    def stopping(self) -> Deferred:
        """
        This generation is shutting down: no more upgrades; abandon one in progress.

        @return: fires once an abandoned child has been reaped.
        """
        if self.state != "handedOver":
            self.state = "stopping"
        attempt = self.attempt
        if attempt is None:
            d = Deferred()
            d.callback(None)
            return d
        waiting = Deferred()
        attempt.result.addBoth(lambda result: waiting.callback(None) or result)
        attempt.abort("this generation is shutting down")
        return waiting
