"""
The parent prefers what a failed child said over how it exited, whichever of
the two the reactor hears first.

A child that cannot start writes C{failed <reason>} on the channel and exits
at once. The kernel holds both the line and the exit status for the parent,
and the reactor may deliver the exit first: the order is forced here, with
the child played over a StringTransport (no real child can be made to
produce this order on demand).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.support.inprocess import ScriptedAttempt, clockReactor
from txflip.core.listeners import ListenerRegistry
from txflip.core.parent import CHANNEL_LOST_GRACE_SECONDS

REASON = "cannot write PID file /run/x.pid: No space left on device"


class ReasonOrderTests(TestCase):
    def setUp(self) -> None:
        self.reactor = clockReactor()
        self.attempt = ScriptedAttempt(
            self.reactor, ListenerRegistry(self.reactor), ["python"], "/", 60.0, None
        )
        self.outcomes: list = []
        self.attempt.start().addCallback(self.outcomes.append)

    def test_exitStatusFirst(self) -> None:
        """The exit status arrives, then the line still in the channel, then end of file."""
        self.attempt.childExits("exited with code 1", closesChannel=False)
        self.attempt.childSays(f"failed {REASON}")
        self.attempt.childCloses()
        self.assertEqual(len(self.outcomes), 1)
        self.assertIn(REASON, self.outcomes[0].reason)

    def test_lineFirst(self) -> None:
        self.attempt.childSays(f"failed {REASON}")
        self.attempt.childExits("exited with code 1")
        self.assertEqual(len(self.outcomes), 1)
        self.assertIn(REASON, self.outcomes[0].reason)

    def test_exitWithoutAReason(self) -> None:
        """A child that says nothing is reported by its exit status, once the channel ends."""
        self.attempt.childExits("exited with code 3", closesChannel=False)
        self.assertEqual(self.outcomes, [])
        self.attempt.childCloses()
        self.assertEqual([o.reason for o in self.outcomes], ["exited with code 3 before serving"])

    def test_channelNeverEnds(self) -> None:
        """
        Something the child started keeps the channel open: the exit status is
        reported after a short grace, not never.
        """
        self.attempt.childExits("exited with code 3", closesChannel=False)
        self.reactor.advance(CHANNEL_LOST_GRACE_SECONDS - 0.1)
        self.assertEqual(self.outcomes, [])
        self.reactor.advance(0.1)
        self.assertEqual([o.reason for o in self.outcomes], ["exited with code 3 before serving"])
