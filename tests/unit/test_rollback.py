"""
Rolling back in process: the generation that handed over takes the traffic
back when its successor asks within the window, and refuses, in one line,
outside it; a generation without a predecessor to go back to says so.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ScriptedGeneration, clockReactor
from txflip.core.state import State


class TakingTheTrafficBackTests(TestCase):
    def handedOver(self, window: float):
        generation = ScriptedGeneration(self, clockReactor(), rollbackWindow=window)
        generation.ready()
        generation.upgrade("test")
        attempt = generation.restarts.attempt
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        with open(generation.pidFile, "w") as f:
            f.write(f"{CHILD_PID}\n")  # as the successor writes it
        self.assertIs(generation.state, State.HANDED_OVER)
        return generation, attempt

    def test_withinTheWindow(self) -> None:
        generation, attempt = self.handedOver(10)
        for _ in range(50):  # 5 s of heartbeats: past the usual watch, inside the window
            attempt.childSays("alive")
            generation.reactor.advance(0.1)
        self.assertFalse(generation.exiting.called, "it waits out its window")
        attempt.childSays("rollback")
        self.assertEqual(attempt.parentSaid()[-1], "rolled-back")
        self.assertIs(generation.state, State.SERVING)
        self.assertFalse(generation.registry.paused)
        with open(generation.pidFile) as f:
            self.assertEqual(int(f.read()), os.getpid())
        self.assertIn("rolled-back", generation.seen)
        self.assertIsNone(generation.restarts.handover)
        self.assertIsNone(generation.refusal(), "it may restart again")

    def test_withoutAWindow(self) -> None:
        generation, attempt = self.handedOver(0)
        attempt.childSays("rollback")
        self.assertEqual(
            attempt.channelTransport.value().decode().splitlines()[-1],
            "rollback-refused there is no rollback window "
            "(start flip with --rollback-window SECONDS)",
        )
        self.assertIs(generation.state, State.HANDED_OVER)

    def test_afterTheWindow(self) -> None:
        generation, attempt = self.handedOver(2)
        for _ in range(25):
            attempt.childSays("alive")
            generation.reactor.advance(0.1)
        # Still here for a moment (its drain, a move), but the window is over.
        generation.restarts.handover._rollbackAsked()
        last = attempt.channelTransport.value().decode().splitlines()[-1]
        self.assertTrue(last.startswith("rollback-refused the rollback window of 2s"), last)


class NothingToGoBackToTests(TestCase):
    def test_aFirstGenerationHasNoPredecessor(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        generation.ready()
        refusal = self.successResultOf(
            generation.rollbacks.ask("test", "by hand (txflip rollback)")
        )
        self.assertIn("no previous generation is left to take the traffic back", refusal)
        self.assertIs(generation.state, State.SERVING)
