"""
The parent side of one upgrade, in process: every timer and every ending of an
L{UpgradeAttempt}, against a Clock.
"""

from __future__ import annotations

import signal

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ScriptedAttempt, clockReactor
from txflip.core.events import Events
from txflip.core.listeners import ListenerRegistry
from txflip.core.parent import CHANNEL_LOST_GRACE_SECONDS, KILL_GRACE_SECONDS, AttemptPhase

READY_TIMEOUT = 10.0


class UpgradeAttemptTests(TestCase):
    def setUp(self) -> None:
        self.reactor = clockReactor()
        self.registry = ListenerRegistry(self.reactor)
        self.events: list[tuple[str, dict]] = []
        hub = Events()
        hub.subscribe(lambda name, fields: self.events.append((name, fields)))
        self.attempt = ScriptedAttempt(
            self.reactor, self.registry, ["python"], "/", READY_TIMEOUT, None, hub
        )
        self.outcomes = []
        self.attempt.start().addCallback(self.outcomes.append)

    def eventNames(self) -> list[str]:
        return [name for name, _ in self.events]

    def test_readyThenServingSucceeds(self) -> None:
        """ready, go, serving: the outcome is a success and this side stops accepting."""
        self.attempt.childSays(f"ready {CHILD_PID}")
        self.assertEqual(self.attempt.parentSaid(), ["go"])
        self.assertFalse(self.registry.paused, "must accept until the child serves")
        self.attempt.childSays("serving")
        self.assertEqual(len(self.outcomes), 1)
        self.assertTrue(self.outcomes[0].succeeded)
        self.assertTrue(self.registry.paused)
        self.assertEqual(self.attempt.signalsSent, [])
        self.assertEqual(self.eventNames(), ["upgrade-started", "child-ready", "upgrade-succeeded"])

    def test_phasesOfASuccess(self) -> None:
        """An attempt's phase says where it is: starting, going (told go), succeeded."""
        phases = [self.attempt.phase]
        self.attempt.childSays(f"ready {CHILD_PID}")
        phases.append(self.attempt.phase)
        self.attempt.childSays(f"ready {CHILD_PID}")  # said twice: go is said once
        self.assertEqual(self.attempt.parentSaid(), ["go"])
        self.attempt.childSays("serving")
        phases.append(self.attempt.phase)
        self.assertEqual(
            phases, [AttemptPhase.STARTING, AttemptPhase.GOING, AttemptPhase.SUCCEEDED]
        )

    def test_aFailedAttemptStaysFailed(self) -> None:
        """Once given up on, nothing the child says changes the phase or the outcome."""
        self.attempt.childSays(f"ready {CHILD_PID}")
        self.attempt.abort("shutting down")
        self.assertIs(self.attempt.phase, AttemptPhase.FAILED)
        self.attempt.childSays("serving")
        self.attempt.childExits("exited with code 0")
        self.assertIs(self.attempt.phase, AttemptPhase.FAILED)
        self.assertEqual([o.succeeded for o in self.outcomes], [False])

    def test_servingWithoutGoIsIgnored(self) -> None:
        """A child cannot skip the handshake: serving before go counts for nothing."""
        self.attempt.childSays("serving")
        self.assertEqual(self.outcomes, [])
        self.assertFalse(self.registry.paused)

    def test_readyTimeoutKillsTheChild(self) -> None:
        """Not ready in time: SIGTERM, SIGKILL after the grace; the outcome waits for the exit."""
        self.reactor.advance(READY_TIMEOUT - 0.1)
        self.assertEqual(self.attempt.signalsSent, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.attempt.signalsSent, [signal.SIGTERM])
        self.assertEqual(self.outcomes, [], "the outcome waits until the child has gone")
        self.reactor.advance(KILL_GRACE_SECONDS)
        self.assertEqual(self.attempt.signalsSent, [signal.SIGTERM, signal.SIGKILL])
        self.attempt.childExits("was killed by signal 9")
        self.assertFalse(self.outcomes[0].succeeded)
        self.assertIn("was not ready within the ready timeout of 10s", self.outcomes[0].reason)
        self.assertIn("abort", self.attempt.parentSaid())

    def test_readyTimeoutCoversServing(self) -> None:
        """A child that says ready but never serves is given up at the same deadline."""
        self.reactor.advance(3)
        self.attempt.childSays(f"ready {CHILD_PID}")
        self.reactor.advance(READY_TIMEOUT - 3)
        self.attempt.childExits("was killed by signal 15")
        self.assertIn("was not serving within the ready timeout", self.outcomes[0].reason)
        self.assertFalse(self.registry.paused, "this side never stopped accepting")

    def test_childsReasonIsKeptWordForWord(self) -> None:
        """A child that says why it failed: that reason is the outcome's."""
        self.attempt.childSays("failed cannot write PID file /x/flip.pid: No space left on device")
        self.attempt.childExits("exited with code 1")
        self.assertIn(
            "cannot write PID file /x/flip.pid: No space left on device", self.outcomes[0].reason
        )

    def test_exitBeforeServing(self) -> None:
        self.attempt.childExits("exited with code 3")
        self.assertEqual(self.outcomes[0].reason, "exited with code 3 before serving")
        self.assertEqual(self.attempt.signalsSent, [], "an exited child is not signalled")

    def test_channelLostWaitsForTheExitStatus(self) -> None:
        """The channel closing is reported only if no exit status comes within the grace."""
        self.attempt.childCloses()
        self.reactor.advance(CHANNEL_LOST_GRACE_SECONDS - 0.1)
        self.assertEqual(self.attempt.signalsSent, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.attempt.signalsSent, [signal.SIGTERM])
        self.attempt.childExits("was killed by signal 15")
        self.assertIn("closed its control channel before serving", self.outcomes[0].reason)

    def test_abortGivesUp(self) -> None:
        self.attempt.abort("this generation is shutting down")
        self.assertEqual(self.attempt.signalsSent, [signal.SIGTERM])
        self.attempt.childExits()
        self.assertEqual(self.outcomes[0].reason, "this generation is shutting down")

    def test_abortNeverSaysThisGenerationKeepsServing(self) -> None:
        """Aborted because this generation stops (SIGTERM): the log says so, not "keeps serving"."""
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.attempt.abort("this generation is shutting down")
        self.attempt.childExits()
        lines = [formatEvent(e) for e in logged if "failed: " in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("; generation 1 is shutting down"), lines[0])

    def test_failureSaysThisGenerationKeepsServing(self) -> None:
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.attempt.childExits("exited with code 1")
        self.reactor.advance(CHANNEL_LOST_GRACE_SECONDS)
        lines = [formatEvent(e) for e in logged if "failed: " in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("; generation 1 keeps serving"), lines[0])

    def test_successorEndedAfterTakingOver(self) -> None:
        """After success the child is still watched: its end is reported once."""
        ended = []
        self.attempt.watch.ended.addCallback(ended.append)
        self.attempt.childSays(f"ready {CHILD_PID}")
        self.attempt.childSays("serving")
        self.attempt.childExits("was killed by signal 9")
        self.assertEqual(ended, ["was killed by signal 9"])
        self.assertTrue(self.outcomes[0].succeeded)

    def test_lateTimerDoesNotTouchASuccess(self) -> None:
        self.attempt.childSays(f"ready {CHILD_PID}")
        self.attempt.childSays("serving")
        self.reactor.advance(READY_TIMEOUT * 2)
        self.assertEqual(self.attempt.signalsSent, [])
        self.assertEqual(len(self.outcomes), 1)
