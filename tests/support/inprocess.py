"""
In-process stand-ins for the one thing a unit test cannot do cheaply: start a
child process. The timers and state moves under test are the real ones; the
child's side of the control channel is played by the test over a
StringTransport. Real children are started by the tests in tests/integration.
"""

from __future__ import annotations

import os
import signal

from twisted.internet.testing import MemoryReactorClock, StringTransport

from tests.support.procs import shortTempDir
from txflip.core.generation import Generation
from txflip.core.parent import UpgradeAttempt

CHILD_PID = 4242


class RecordedProcess:
    """Stands for the spawned child: records the signals sent to it."""

    pid = CHILD_PID

    def __init__(self) -> None:
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class ScriptedAttempt(UpgradeAttempt):
    """An L{UpgradeAttempt} whose child is played by the test."""

    def _spawn(self) -> None:
        self._process = RecordedProcess()
        self.childPid = self._process.pid
        self.channelTransport = StringTransport()
        self._toChild = self._newChannel()
        self._toChild.makeConnection(self.channelTransport)

    # The child's moves.

    def childSays(self, line: str) -> None:
        self._toChild.dataReceived(line.encode() + b"\n")

    def childCloses(self) -> None:
        self._toChild.connectionLost(None)

    def childExits(self, why: str = "exited with code 1", closesChannel: bool = True) -> None:
        """
        The child's exit status arrives; then, as when a real child exits, its
        end of the channel closes (unless C{closesChannel} is false: the end of
        file is yet to be read, or something the child started holds it).
        """
        self._ended(why)
        if closesChannel and not self._channelGone:
            self.childCloses()

    def parentSaid(self) -> list[str]:
        return self.channelTransport.value().decode().split()

    @property
    def signalsSent(self) -> list[signal.Signals]:
        return [signal.Signals(s) for s in self._process.signals]


def clockReactor() -> MemoryReactorClock:
    """A reactor with a controllable clock, that says it is running."""
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


class ExitCalled(Exception):
    """A L{ScriptedGeneration} ended its process; the argument is the exit status."""


class ScriptedGeneration(Generation):
    """
    A first generation (unless given C{inherited}) on C{reactor}, usually a
    L{clockReactor}, with its PID file in a directory C{testCase} removes:
    its successors are L{ScriptedAttempt}s, played by the test, and ending
    its process raises L{ExitCalled} instead.

    @ivar clock: the reactor it runs on, for the test to advance.
    @ivar attempts: every upgrade attempt it started, in order.
    @ivar seen: the name of every event it emitted, in order.
    """

    def __init__(self, testCase, reactor, **kw) -> None:
        kw.setdefault("pidFile", os.path.join(shortTempDir(testCase), "flip.pid"))
        kw.setdefault("inherited", None)
        kw.setdefault("simpleModeReason", None)
        kw.setdefault("argv", ["python"])
        kw.setdefault("cwd", "/")
        self.clock = reactor
        self.attempts: list[ScriptedAttempt] = []
        kw.setdefault("attemptFactory", self._scriptedAttempt)
        kw.setdefault("exitProcess", self._exitProcess)
        super().__init__(reactor, **kw)
        self.seen: list[str] = []
        self.events.subscribe(lambda name, fields: self.seen.append(name))

    def _scriptedAttempt(self, *args, **kw) -> ScriptedAttempt:
        attempt = ScriptedAttempt(*args, **kw)
        self.attempts.append(attempt)
        return attempt

    @staticmethod
    def _exitProcess(code: int) -> None:
        raise ExitCalled(code)
