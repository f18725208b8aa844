"""
The parent prefers what a failed child said over how it exited, whichever of
the two the reactor hears first.

A child that cannot start writes C{failed <reason>} on the channel and exits
at once. The kernel has both the line and the exit status for the parent, and
the reactor may deliver the exit first: here the order is forced, with an
in-memory reactor (no real process can make this order happen on demand).
"""

from __future__ import annotations

from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from txflip.core.listeners import ListenerRegistry
from txflip.core.parent import UpgradeAttempt

REASON = "cannot write PID file /run/x.pid: No space left on device"


class _Process:
    pid = 4242

    def signalProcess(self, signum) -> None:
        pass


class SpawningReactor(MemoryReactorClock):
    """Records the spawned child's protocol and connects the channel to memory."""

    def spawnProcess(self, protocol, executable, args, env=None, path=None, childFDs=None):
        self.child = protocol
        return _Process()

    def adoptStreamConnection(self, fileDescriptor, addressFamily, factory):
        self.channel = factory.buildProtocol(None)
        self.channel.makeConnection(StringTransport())


class ReasonOrderTests(TestCase):
    def start(self) -> tuple[SpawningReactor, UpgradeAttempt, list]:
        reactor = SpawningReactor()
        attempt = UpgradeAttempt(reactor, ListenerRegistry(reactor), ["python"], "/", 60.0, None)
        outcomes: list = []
        attempt.start().addCallback(outcomes.append)
        return reactor, attempt, outcomes

    def exited(self, reactor: SpawningReactor, code: int = 1) -> None:
        reactor.child.processEnded(Failure(ProcessTerminated(exitCode=code)))

    def test_exitStatusFirst(self) -> None:
        """The exit status arrives, then the line still in the channel, then end of file."""
        reactor, _, outcomes = self.start()
        self.exited(reactor)
        reactor.channel.dataReceived(f"failed {REASON}\n".encode())
        reactor.channel.connectionLost(None)
        self.assertEqual(len(outcomes), 1)
        self.assertIn(REASON, outcomes[0].reason)

    def test_lineFirst(self) -> None:
        reactor, _, outcomes = self.start()
        reactor.channel.dataReceived(f"failed {REASON}\n".encode())
        self.exited(reactor)
        reactor.channel.connectionLost(None)
        self.assertEqual(len(outcomes), 1)
        self.assertIn(REASON, outcomes[0].reason)

    def test_exitWithoutAReason(self) -> None:
        """A child that says nothing is reported by its exit status, once the channel ends."""
        reactor, _, outcomes = self.start()
        self.exited(reactor, 3)
        reactor.channel.connectionLost(None)
        self.assertEqual([o.reason for o in outcomes], ["exited with code 3 before serving"])

    def test_channelNeverEnds(self) -> None:
        """
        Something the child started keeps the channel open: the exit status is
        reported after a short grace, not never.
        """
        reactor, _, outcomes = self.start()
        self.exited(reactor, 3)
        self.assertEqual(outcomes, [])
        reactor.advance(10)
        self.assertEqual([o.reason for o in outcomes], ["exited with code 3 before serving"])
