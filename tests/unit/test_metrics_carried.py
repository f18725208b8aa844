"""
What --metrics counts, and how it goes from a generation to the next: the
parent carries its totals before go, once the child serves (the restart
counted) and before it exits (its drain counted); the child shows the latest
totals plus its own.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ScriptedGeneration, clockReactor
from tests.unit.test_generation_states import openConnection
from txflip.core.carry import Carried
from txflip.core.generation import Generation
from txflip.metrics import GenerationMetrics, addCounts, emptyCounts


def carriedLines(attempt) -> list[dict]:
    lines = attempt.channelTransport.value().decode().splitlines()
    return [
        json.loads(line.split(" ", 1)[1])["metrics"] for line in lines if line.startswith("carry ")
    ]


def sample(metrics: GenerationMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels or None)


class CountingTests(TestCase):
    def setUp(self) -> None:
        self.generation = ScriptedGeneration(self, clockReactor())
        self.metrics = GenerationMetrics(self.generation)
        self.generation.ready()

    def test_aServedRestartIsCarriedBeforeGoAndOnceServing(self) -> None:
        self.generation.upgrade("test")
        attempt = self.generation.restarts.attempt
        self.generation.reactor.advance(0.75)
        attempt.childSays(f"ready {CHILD_PID}")
        (before,) = carriedLines(attempt)
        self.assertEqual(before["restarts"]["served"], 0)
        self.assertEqual(attempt.parentSaid()[-1], "go")
        attempt.childSays("serving")
        _, after = carriedLines(attempt)
        self.assertEqual(after["restarts"]["served"], 1)
        self.assertEqual(after["handoff"]["sum"], 0.75)
        self.assertEqual(sample(self.metrics, "txflip_handoff_seconds_bucket", le="1.0"), 1)
        self.assertEqual(sample(self.metrics, "txflip_handoff_seconds_bucket", le="0.5"), 0)

    def test_theDrainIsCarriedJustBeforeTheExit(self) -> None:
        connection = openConnection(self.generation)
        self.generation.upgrade("test")
        attempt = self.generation.restarts.attempt
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.generation.reactor.advance(0.3)
        connection.transport.disconnected = True
        for _ in range(int(Generation.successorWatch / 0.1) + 2):
            attempt.childSays("alive")
            self.generation.reactor.advance(0.1)
        self.assertTrue(self.generation.exiting.called)
        last = carriedLines(attempt)[-1]
        self.assertEqual(sum(last["drain"]["counts"]), 1)
        self.assertEqual(last["closed"], {"drained": 1, "drain_timeout": 0})

    def test_aFailedRestartCounts(self) -> None:
        self.generation.upgrade("test")
        self.generation.restarts.attempt.childSays("failed it broke")
        self.assertEqual(sample(self.metrics, "txflip_restarts_total", outcome="failed"), 1)
        self.assertEqual(sample(self.metrics, "txflip_restarts_total", outcome="served"), 0)

    def test_theProcessOwnMetricsAreThere(self) -> None:
        self.assertIsNotNone(sample(self.metrics, "process_open_fds"))
        self.assertEqual(sample(self.metrics, "txflip_generation"), 1)


class InheritingTests(TestCase):
    def test_theLatestCarriedTotalsPlusOwnCounts(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        metrics = GenerationMetrics(generation)
        generation.ready()
        carried = emptyCounts()
        carried["restarts"]["served"] = 2
        generation.carried.receive(json.dumps({"metrics": carried}))
        carried["restarts"]["served"] = 3  # the later line replaces the earlier one
        generation.carried.receive(json.dumps({"metrics": carried}))
        generation.upgrade("test")
        generation.restarts.attempt.childSays("failed no")
        self.assertEqual(sample(metrics, "txflip_restarts_total", outcome="served"), 3)
        self.assertEqual(sample(metrics, "txflip_restarts_total", outcome="failed"), 1)

    def test_malformedPartsAddNothing(self) -> None:
        theirs = {"restarts": {"served": "x", "failed": 2, "other": 5}, "handoff": {"counts": [1]}}
        total = addCounts(emptyCounts(), theirs)
        self.assertEqual(total["restarts"], {"served": 0, "failed": 2, "rolled_back": 0})
        self.assertEqual(total["handoff"], emptyCounts()["handoff"])

    def test_unreadableCarryIsIgnored(self) -> None:
        carried = Carried()
        seen = []
        carried.follow("metrics", seen.append)
        carried.receive("{not json")
        carried.receive('{"metrics": {"moved": 1}}')
        self.assertEqual(seen, [{"moved": 1}])
