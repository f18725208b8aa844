"""
The parent side of a handoff: starting the next generation and handing it the listeners.

An L{UpgradeAttempt} is one try: spawn the child with the listeners at known
descriptors, wait for it to report ready, say go, and wait for it to say it
serves. This generation keeps accepting until then, so a successor that hangs
or dies at any step before serving costs no connection: it is killed and this
generation goes on as if nothing had happened. Once the successor serves,
this generation stops accepting but keeps its sockets, and goes on watching
the successor (L{UpgradeAttempt.watch}) while it drains.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from twisted.internet.defer import Deferred

from txflip.core import pidfile
from txflip.core.channel import SuccessorChannel, carryLine
from txflip.core.events import Events
from txflip.core.handoff import spawnWithListeners
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import generation, log
from txflip.core.transfer import transferPair
from txflip.core.twistedprivate import hasQueuedOutput
from txflip.core.watch import SuccessorWatch

KILL_GRACE_SECONDS = 5.0
CHANNEL_LOST_GRACE_SECONDS = 2.0


class AttemptPhase(StrEnum):
    """Where one upgrade attempt is."""

    BUILDING = "building"
    """Sequential handover: the child builds its app; it has not said it is prepared."""
    PAUSING = "pausing"
    """Sequential handover: the child is prepared; this generation pauses and stops its app."""
    STARTING = "starting"
    """The child runs; it has not said it is ready."""
    GOING = "going"
    """The child said ready and was told go; it has not said it serves."""
    SUCCEEDED = "succeeded"
    """The child serves; it is watched while this generation drains."""
    FAILED = "failed"
    """Given up on; the child is being killed (the result fires once it exited)."""


_PHASE_MOVES = {
    AttemptPhase.BUILDING: {AttemptPhase.PAUSING, AttemptPhase.FAILED},
    AttemptPhase.PAUSING: {AttemptPhase.STARTING, AttemptPhase.FAILED},
    AttemptPhase.STARTING: {AttemptPhase.GOING, AttemptPhase.FAILED},
    AttemptPhase.GOING: {AttemptPhase.SUCCEEDED, AttemptPhase.FAILED},
    AttemptPhase.SUCCEEDED: set(),
    AttemptPhase.FAILED: set(),
}


@dataclass(frozen=True)
class Outcome:
    """How one upgrade ended."""

    succeeded: bool
    childPid: int | None
    reason: str
    seconds: float
    transfer: socket.socket | None = None
    """After a handoff: this end of the channel connections move over (txflip.core.connmove)."""


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
        pause: Callable[[], Deferred] | None = None,
        onReopenLogs: Callable[[], None] = lambda: None,
        carry: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.onRollback: Callable[[str], None] = lambda why: None
        """Called when the child, which took over, asks for the traffic back (set by
        the L{txflip.core.handover.Handover})."""
        self.onReturnChannel: Callable[[int], None] = os.close
        """Called with the channel over which a child that handed the traffic back
        moves its connections back (it owns the descriptor)."""
        self.tell = ToTheChild(self, carry)
        self._reactor = reactor
        self._onReopenLogs = onReopenLogs
        self._pause = pause
        self._registry = registry
        self._events = events or Events()
        self._argv, self._cwd, self._pidFile = argv, cwd, pidFile
        self._extraEnv = extraEnv or {}
        self._readyTimeout = readyTimeout
        self._started = reactor.seconds()
        self.phase = AttemptPhase.BUILDING if pause is not None else AttemptPhase.STARTING
        self._pausedAt: float | None = None
        # What has happened to the child so far, whatever the phase.
        self._childEnded = self._channelGone = self._parentStopping = False
        self._outcome: Outcome | None = None
        self._failureReason: str | None = None
        self._exitedHow: str | None = None
        self._toChild: SuccessorChannel | None = None
        self._transfer: socket.socket | None = None  # connection transfer (txflip.core.connmove)
        self._process = self._killTimer = self._timer = None
        self.childPid: int | None = None
        self.result: Deferred = Deferred()
        self.childWaitingFor: str | None = None
        """What the child last said it waits for before it is ready."""
        self.watch = SuccessorWatch(reactor, lambda: self._signal(signal.SIGKILL))
        """What is heard of the child, and how it ends once it took over."""

    def start(self, source: str = "SIGHUP") -> Deferred:
        """Spawn the child; the L{Deferred} fires with the L{Outcome}."""
        try:
            self._spawn()
            failure = None
        except Exception as e:
            failure = f"could not be started: {type(e).__name__}: {e}"
        self._events.emit(
            "upgrade-started",
            source=source,
            childPid=self.childPid,
            nextGeneration=generation() + 1,
        )
        if failure is not None:
            self._childEnded = True  # there is none: the outcome is at once
            self._fail(failure)
        else:
            self._timer = self._reactor.callLater(self._readyTimeout, self._timedOut)
        return self.result

    def _spawn(self) -> None:
        # txflip.core.connmove: a second socketpair, over which idle connections move.
        self._transfer, transferTheirs = transferPair()
        try:
            spawned = spawnWithListeners(
                self._reactor,
                self._argv,
                self._cwd,
                self._registry.active(),
                channel=self._newChannel(),
                side=transferTheirs,
                sideIsTransfer=True,
                onEnded=self._ended,
                generation=generation() + 1,
                pidFile=self._pidFile,
                sequential=self._pause is not None,
                environment=lambda sideFd: self._extraEnv,
            )
        except BaseException:
            self._closeTransfer()
            raise
        self._process, self._toChild = spawned.process, spawned.channel
        self.childPid = spawned.pid
        log.info(
            "started generation {next} as PID {child}, {count} listener(s) handed down",
            next=spawned.state.generation,
            child=self.childPid,
            count=len(spawned.state.listeners),
        )

    def _newChannel(self) -> SuccessorChannel:
        """The protocol for this end of the control channel."""
        return SuccessorChannel(
            self._ready,
            self._serving,
            self._failed,
            self._channelLost,
            onWaiting=lambda what: setattr(self, "childWaitingFor", what),
            onRetired=self.watch.retiredBecause,
            onHeard=self.watch.heard,
            onPrepared=self._prepared,
            onReopenLogs=self._onReopenLogs,
            onRollback=lambda why: self.onRollback(why),
            onReturnChannel=lambda fd: self.onReturnChannel(fd),
        )

    def _moveTo(self, phase: AttemptPhase) -> None:
        if phase not in _PHASE_MOVES[self.phase]:
            raise RuntimeError(f"upgrade attempt: {self.phase} -> {phase}")
        self.phase = phase

    @property
    def _undecided(self) -> bool:
        """Neither succeeded nor given up on yet."""
        return self.phase not in (AttemptPhase.SUCCEEDED, AttemptPhase.FAILED)

    def _elapsed(self) -> float:
        return self._reactor.seconds() - self._started

    def _elapsedMs(self) -> int:
        return int(self._elapsed() * 1000)

    # What the child says.

    def _prepared(self) -> None:
        """Sequential handover: the child's app is built. Pause, then tell it to start."""
        if self.phase is not AttemptPhase.BUILDING:
            return
        self._moveTo(AttemptPhase.PAUSING)
        self._pausedAt = self._reactor.seconds()
        self._events.emit("child-prepared", childPid=self.childPid, ms=self._elapsedMs())
        self._pause().addCallbacks(self._paused, self._pauseFailed)

    def _paused(self, _) -> None:
        if self.phase is not AttemptPhase.PAUSING:
            return
        self._moveTo(AttemptPhase.STARTING)
        self._events.emit("app-stopped", childPid=self.childPid, ms=self._elapsedMs())
        self._toChild.start()

    def _pauseFailed(self, failure) -> None:
        if self.phase is AttemptPhase.PAUSING:
            self._fail(f"this generation could not pause for it: {failure.getErrorMessage()}")

    def _ready(self, pid: int) -> None:
        if self.phase is not AttemptPhase.STARTING:
            return
        log.info(
            "generation {next} (PID {child}) is ready after {ms} ms; saying go",
            next=generation() + 1,
            child=pid,
            ms=self._elapsedMs(),
        )
        self._events.emit("child-ready", childPid=pid, ms=self._elapsedMs())
        # This generation goes on accepting until the child says it serves:
        # two processes accepting on one socket is safe, nobody accepting is not.
        self._moveTo(AttemptPhase.GOING)
        self.tell.carried()
        self._toChild.go()

    def _serving(self) -> None:
        if self.phase is not AttemptPhase.GOING:
            return
        self._registry.pauseAll()
        self._succeed()
        # The restart is counted now: the child serves with it.
        self.tell.carried()

    def _failed(self, reason: str) -> None:
        self._failureReason = reason
        if self._undecided:
            self._fail("it reported that it cannot start")

    def _channelLost(self) -> None:
        self._channelGone = True
        if self._undecided and self._exitedHow is not None:
            # Everything the dead child wrote has been read now.
            self._fail(self._exitedHow + " before serving")
        elif self._undecided:
            # The channel usually closes because the child exited: give its exit
            # status a moment to arrive, since it is the better reason to log.
            self._reactor.callLater(
                CHANNEL_LOST_GRACE_SECONDS,
                self._failIfUndecided,
                "closed its control channel before serving",
            )

    def _failIfUndecided(self, why: str) -> None:
        if self._undecided:
            self._fail(why)

    def _ended(self, why: str) -> None:
        self._childEnded = True
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        if self._undecided and self._toChild is not None and not self._channelGone:
            # A child that cannot start says why, then exits at once: the line
            # may still be unread although the exit status is here. What it
            # said beats how it exited, so read on until the channel ends.
            # Something the child started may hold the channel open: not for ever.
            self._exitedHow = why
            self._reactor.callLater(
                CHANNEL_LOST_GRACE_SECONDS, self._failIfUndecided, why + " before serving"
            )
        elif self._undecided:
            self._fail(why + " before serving")
        elif self.phase is AttemptPhase.FAILED and not self.result.called:
            self.result.callback(self._outcome)
        elif self.phase is AttemptPhase.SUCCEEDED:
            self.watch.childEnded(why, tookOver=True)

    def _timedOut(self) -> None:
        if self._undecided:
            saidGo = self.phase is AttemptPhase.GOING
            what = "serving" if saidGo else "ready"
            reason = f"was not {what} within the ready timeout of {self._readyTimeout:g}s"
            if self.childWaitingFor and not saidGo:
                reason += f"; it was still waiting for {self.childWaitingFor}"
            self._fail(reason)

    def abort(self, why: str) -> None:
        """Give up on this attempt (this generation is shutting down)."""
        if self._undecided:
            self._parentStopping = True
            self._fail(why)

    # Endings.

    def _closeTransfer(self) -> None:
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.close()

    def _fail(self, why: str) -> None:
        self._closeTransfer()
        reason = why
        if self._failureReason:
            reason = f"{self._failureReason} ({why})"
        self._moveTo(AttemptPhase.FAILED)
        self._outcome = Outcome(False, self.childPid, reason, self._elapsed())
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._toChild is not None and self._toChild.transport is not None:
            self._toChild.abort()
            self._toChild.transport.loseConnection()
        if not self._childEnded:
            self._signal(signal.SIGTERM)
            self._killTimer = self._reactor.callLater(
                KILL_GRACE_SECONDS, self._signal, signal.SIGKILL
            )
        log.error(
            "generation {next} (PID {child}) failed: {reason}; generation {gen} {then}",
            next=generation() + 1,
            child=self.childPid,
            reason=reason,
            gen=generation(),
            then="is shutting down" if self._parentStopping else "keeps serving",
        )
        self._events.emit(
            "upgrade-failed", childPid=self.childPid, reason=reason, ms=self._elapsedMs()
        )
        restorePIDFile(self._pidFile, self.childPid)
        if self._childEnded:
            self.result.callback(self._outcome)

    def _signal(self, signum: int) -> None:
        if not self._childEnded and self._process is not None:
            with contextlib.suppress(Exception):  # it may be gone by now
                self._process.signalProcess(signum)

    def _succeed(self) -> None:
        """The child serves: hand over (this end of the transfer channel goes with it)."""
        transfer, self._transfer = self._transfer, None
        self._moveTo(AttemptPhase.SUCCEEDED)
        self._outcome = Outcome(True, self.childPid, "serving", self._elapsed(), transfer)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        log.info(
            "handed over to generation {next} (PID {child}) in {ms} ms",
            next=generation() + 1,
            child=self.childPid,
            ms=self._elapsedMs(),
        )
        paused = self._pausedAt
        pauseMs = None if paused is None else int((self._reactor.seconds() - paused) * 1000)
        self._events.emit(
            "upgrade-succeeded", childPid=self.childPid, ms=self._elapsedMs(), pauseMs=pauseMs
        )
        self.result.callback(self._outcome)


class ToTheChild:
    """What a generation says to its child besides the handshake: carried state, log
    reopening, the answer to a rollback (L{UpgradeAttempt.tell})."""

    def __init__(self, attempt: UpgradeAttempt, carry: Callable[[], str | None]) -> None:
        self._attempt = attempt
        self._carry = carry

    def takeChannels(self) -> tuple[object, socket.socket | None]:
        """This end's control channel transport and transfer socket (to go on without a reactor)."""
        attempt = self._attempt
        transfer, attempt._transfer = attempt._transfer, None
        return attempt._toChild.transport, transfer

    def _open(self):
        attempt = self._attempt
        channel = attempt._toChild
        if channel is None or attempt._channelGone or channel.transport is None:
            return None
        return channel

    def rollbackAnswer(self, refusal: str | None) -> None:
        """Tell the child the traffic is back here (C{refusal} L{None}), or why not."""
        channel = self._open()
        if channel is not None:
            channel.rollbackAnswer(refusal)

    def carried(self, now: bool = False) -> None:
        """
        Hand the child what this generation carries (L{txflip.core.carry});
        C{now}: written at once if nothing is queued before it, for an exit
        that follows in this turn.
        """
        text = self._carry()
        channel = self._open()
        if text is None or channel is None:
            return
        transport = channel.transport
        try:
            line = carryLine(text)
        except ValueError as e:
            log.error("cannot hand the state on: {error}", error=e)
            return
        fd = transport.fileno() if hasattr(transport, "fileno") else -1
        if now and fd >= 0 and not hasQueuedOutput(transport):
            try:
                os.write(fd, line + b"\n")
            except OSError:
                pass
        else:
            channel.sendLine(line)

    def reopenLogs(self) -> None:
        """Tell the child, while the channel is open, to reopen its log files."""
        channel = self._open()
        if channel is not None:
            channel.reopenLogs()


def restorePIDFile(path: str | None, childPid: int | None) -> None:
    """If a child that failed wrote the PID file, it names this process again."""
    if not path or childPid is None or pidfile.readPID(path) != childPid:
        return
    try:
        pidfile.writePID(path)
    except OSError as e:
        log.error("cannot restore PID file {path}: {error}", path=path, error=e)


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


def defaultSuccessorArgv() -> list[str]:
    """This process's command line, run by this interpreter."""
    return [sys.executable, *sys.orig_argv[1:]]
