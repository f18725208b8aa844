"""
The parent side of a handoff: starting the next generation and handing it the listeners.

An L{UpgradeAttempt} is one try: spawn the child with the listeners at known
descriptors, wait for it to report ready, say go, and wait for it to say it
serves. This generation keeps accepting until then, so a successor that hangs
or dies at any step before serving costs no connection: it is killed and this
generation goes on as if nothing had happened. Once the successor serves,
this generation stops accepting but keeps its sockets, and goes on watching
the successor (L{UpgradeAttempt.successorEnded}) while it drains.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from txflip.core import pidfile
from txflip.core.channel import HEARTBEAT_SECONDS, SuccessorChannel, carryLine
from txflip.core.events import Events
from txflip.core.handoff import spawnWithListeners
from txflip.core.listeners import ListenerRegistry
from txflip.core.log import generation, log
from txflip.core.transfer import transferPair
from txflip.core.twistedprivate import hasQueuedOutput

KILL_GRACE_SECONDS = 5.0
CHANNEL_LOST_GRACE_SECONDS = 2.0
SILENCE_SECONDS = 0.5
"""A successor that serves and says nothing for this long is taken for hung."""


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
        self.onReturnChannel: Callable[[int], None] = os.close
        """Called with the descriptor of the channel over which a child that handed
        the traffic back moves its connections back (it owns the descriptor)."""
        """Called when the child, which took over, asks this generation to take the traffic
        back (set by the L{txflip.core.handover.Handover})."""
        self._reactor = reactor
        self._onReopenLogs = onReopenLogs
        self._carry = carry
        self._pause = pause
        self._registry = registry
        self._events = events or Events()
        self._extraEnv = extraEnv or {}
        self._argv = argv
        self._cwd = cwd
        self._readyTimeout = readyTimeout
        self._pidFile = pidFile
        self._started = reactor.seconds()
        self.phase = AttemptPhase.BUILDING if pause is not None else AttemptPhase.STARTING
        self._childEnded = False
        self._outcome: Outcome | None = None
        self._failureReason: str | None = None
        self._parentStopping = False
        self._exitedHow: str | None = None
        self._channelGone = False
        self._channel: SuccessorChannel | None = None
        self._transfer: socket.socket | None = None  # connection transfer (txflip.core.connmove)
        self._process = None
        self._killTimer = None
        self._timer = None
        self.childPid: int | None = None
        self.result: Deferred = Deferred()
        self.childWaitingFor: str | None = None
        """What the child last said it waits for before it is ready."""
        self._childRetired: str | None = None
        self._lastHeard = self._started
        self._silenceCheck: LoopingCall | None = None
        self._onSilence: Callable[[bool], None] = lambda silent: None
        self.successorSilent = False
        """Whether the successor, which took over, has not been heard for a while."""
        self.successorEnded: Deferred = Deferred()
        """Fires with how the child ended, if it dies after it took over
        (not after it said it handed over in turn or is stopping)."""

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
        self._process, self._channel = spawned.process, spawned.channel
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
            onWaiting=self._waiting,
            onRetired=self._retired,
            onHeard=self._heard,
            onPrepared=self._prepared,
            onReopenLogs=self._onReopenLogs,
            onRollback=lambda why: self.onRollback(why),
            onReturnChannel=lambda fd: self.onReturnChannel(fd),
        )

    def answerRollback(self, refusal: str | None) -> None:
        """Tell the child the traffic is back here (C{refusal} L{None}), or why not."""
        if self._channel is not None and not self._channelGone and self._channel.transport:
            self._channel.rollbackAnswer(refusal)

    def sendCarried(self, now: bool = False) -> None:
        """
        Hand the child what this generation carries (L{txflip.core.carry});
        C{now}: written at once if nothing is queued before it, for an exit
        that follows in this turn.
        """
        text = self._carry()
        if text is None or self._channel is None or self._channelGone:
            return
        transport = self._channel.transport
        if transport is None:
            return
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
            self._channel.sendLine(line)

    def reopenLogs(self) -> None:
        """Tell the child, while the channel is open, to reopen its log files."""
        if self._channel is not None and not self._channelGone and self._channel.transport:
            self._channel.reopenLogs()

    def _moveTo(self, phase: AttemptPhase) -> None:
        if phase not in _PHASE_MOVES[self.phase]:
            raise RuntimeError(f"upgrade attempt: {self.phase} -> {phase}")
        self.phase = phase

    @property
    def _undecided(self) -> bool:
        """Neither succeeded nor given up on yet."""
        return self.phase not in (AttemptPhase.SUCCEEDED, AttemptPhase.FAILED)

    def _heard(self) -> None:
        self._lastHeard = self._reactor.seconds()
        if self.successorSilent:
            self.successorSilent = False
            self._onSilence(False)

    def _waiting(self, what: str) -> None:
        self.childWaitingFor = what

    def _retired(self, why: str) -> None:
        self._childRetired = why

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
        log.info(
            "generation {next} (PID {child}) built its app after {ms} ms; pausing for it",
            next=generation() + 1,
            child=self.childPid,
            ms=self._elapsedMs(),
        )
        self._events.emit("child-prepared", childPid=self.childPid, ms=self._elapsedMs())
        self._pause().addCallbacks(self._paused, self._pauseFailed)

    def _paused(self, _) -> None:
        if self.phase is not AttemptPhase.PAUSING:
            return
        self._moveTo(AttemptPhase.STARTING)
        self._events.emit("app-stopped", childPid=self.childPid, ms=self._elapsedMs())
        self._channel.start()

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
        self.sendCarried()
        self._channel.go()

    def _serving(self) -> None:
        if self.phase is not AttemptPhase.GOING:
            return
        self._registry.pauseAll()
        self._finish(True, "serving")
        # The restart is counted now: the child serves with it.
        self.sendCarried()

    def channelTransport(self):
        """The transport of this end of the control channel (to finish without a reactor)."""
        return self._channel.transport

    def takeTransfer(self) -> socket.socket | None:
        """Take this end of the transfer channel (to finish without a reactor)."""
        transfer, self._transfer = self._transfer, None
        return transfer

    def watchSuccessor(self, onSilence: Callable[[bool], None]) -> None:
        """
        After a success: call C{onSilence(True)} once the successor has not been
        heard for L{SILENCE_SECONDS} (hung, or stopped), C{onSilence(False)} when
        it is heard again.
        """
        self._onSilence = onSilence
        self._lastHeard = self._reactor.seconds()
        self._silenceCheck = LoopingCall(self._checkSilence)
        self._silenceCheck.clock = self._reactor
        self._silenceCheck.start(HEARTBEAT_SECONDS, now=False)

    def kill(self) -> None:
        """Kill the child for good (a successor hung past every deadline)."""
        self._signal(signal.SIGKILL)

    def _checkSilence(self) -> None:
        if self._childEnded or self._childRetired is not None:
            self._silenceCheck.stop()
            return
        silent = self._reactor.seconds() - self._lastHeard >= SILENCE_SECONDS
        if silent and not self.successorSilent:
            self.successorSilent = True
            self._onSilence(True)

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
            self._reactor.callLater(CHANNEL_LOST_GRACE_SECONDS, self._channelLostForGood)

    def _channelLostForGood(self) -> None:
        if self._undecided:
            self._fail("closed its control channel before serving")

    def _ended(self, why: str) -> None:
        self._childEnded = True
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        if self._undecided and self._channel is not None and not self._channelGone:
            # A child that cannot start says why, then exits at once: the line
            # may still be unread although the exit status is here. What it
            # said beats how it exited, so read on until the channel ends.
            self._exitedHow = why
            self._reactor.callLater(CHANNEL_LOST_GRACE_SECONDS, self._exitedForGood)
        elif self._undecided:
            self._fail(why + " before serving")
        elif self.phase is AttemptPhase.FAILED and not self.result.called:
            self.result.callback(self._outcome)
        elif self.phase is AttemptPhase.SUCCEEDED and self._childRetired is None:
            if self._silenceCheck is not None and self._silenceCheck.running:
                self._silenceCheck.stop()
            self.successorEnded.callback(why)

    def _exitedForGood(self) -> None:
        # Something the child started may hold the channel open.
        if self._undecided:
            self._fail(self._exitedHow + " before serving")

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
        if self._transfer is not None:
            self._transfer.close()
            self._transfer = None

    def _fail(self, why: str) -> None:
        self._closeTransfer()
        reason = why
        if self._failureReason:
            reason = f"{self._failureReason} ({why})"
        self._moveTo(AttemptPhase.FAILED)
        self._outcome = Outcome(False, self.childPid, reason, self._elapsed())
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
        transfer, self._transfer = self._transfer, None
        if not succeeded and transfer is not None:
            transfer.close()
            transfer = None
        self._moveTo(AttemptPhase.SUCCEEDED if succeeded else AttemptPhase.FAILED)
        self._outcome = Outcome(succeeded, self.childPid, reason, self._elapsed(), transfer)
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


def defaultSuccessorArgv() -> list[str]:
    """This process's command line, run by this interpreter."""
    return [sys.executable, *sys.orig_argv[1:]]
