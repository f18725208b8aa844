"""
In-process stand-ins for the one thing a unit test cannot do cheaply: start a
child process. The timers and state moves under test are the real ones; the
child's side of the control channel is played by the test over a
StringTransport. Real children are started by the tests in tests/integration.
"""

from __future__ import annotations

import signal

from twisted.internet.testing import MemoryReactorClock, StringTransport

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
        self._channel = self._newChannel()
        self._channel.makeConnection(self.channelTransport)

    # The child's moves.

    def childSays(self, line: str) -> None:
        self._channel.dataReceived(line.encode() + b"\n")

    def childCloses(self) -> None:
        self._channel.connectionLost(None)

    def childExits(self, why: str = "exited with code 1") -> None:
        self._ended(why)

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
