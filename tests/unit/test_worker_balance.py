"""
Long-lived connections are balanced over the workers: the leader holds a
worker whose settled connections exceed all those of the least-loaded one,
renews the hold with each report, and releases it once the others catch up;
a worker's hold lapses on its own and never resumes what its leader paused.

All against a Clock, with stand-in listeners and worker processes; the
process test (tests/integration/test_workers.py) opens real connections.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from txflip.workers.balance import (
    HOLD_SECONDS,
    SETTLED_SECONDS,
    SLACK,
    AcceptHold,
    SettledCounter,
    aheadOfTheOthers,
)
from txflip.workers.pool import FRESH_SECONDS, WorkerPool

from .test_worker_pool import DRAIN_TIMEOUT, READY_TIMEOUT, RecordedWorker


class Connection:
    """Anything a tracker lists as open."""


class Unhashable:
    """An app's protocol may not be hashable (a dataclass, say): it still counts."""

    __hash__ = None


class SettledCounterTests(TestCase):
    def test_onlyConnectionsOpenLongEnoughCount(self) -> None:
        counter = SettledCounter()
        old, young = Connection(), Unhashable()
        self.assertEqual(counter.count([old], 10.0), 0, "just seen")
        self.assertEqual(counter.count([old, young], 10.0 + SETTLED_SECONDS), 1)
        self.assertEqual(counter.count([old, young], 10.0 + 2 * SETTLED_SECONDS), 2)
        self.assertEqual(counter.count([young], 10.0 + 2 * SETTLED_SECONDS), 1, "old closed")

    def test_aConnectionMissingFromAReportIsForgotten(self) -> None:
        counter = SettledCounter()
        connection = Connection()
        counter.count([connection], 0.0)
        counter.count([], SETTLED_SECONDS)
        self.assertEqual(counter.count([connection], 2 * SETTLED_SECONDS), 0, "seen afresh")


class AheadTests(TestCase):
    def test_settledBeyondAllOfTheFewestIsAhead(self) -> None:
        counts = {"a": (10, 12), "b": (1, 7), "c": (10, 10), "d": (7 + SLACK, 11)}
        self.assertEqual(aheadOfTheOthers(counts), {"a", "c"})

    def test_withinTheSlackNobodyIsHeld(self) -> None:
        self.assertEqual(aheadOfTheOthers({"a": (2 + SLACK, 9), "b": (0, 2)}), set())

    def test_shortRequestsNeverHoldAnyone(self) -> None:
        """Many open, none settled: a burst of new connections moves nobody."""
        self.assertEqual(aheadOfTheOthers({"a": (0, 14), "b": (0, 2)}), set())

    def test_theFewestIsNeverHeldNorALoneWorker(self) -> None:
        self.assertEqual(aheadOfTheOthers({"a": (50, 50)}), set())
        self.assertEqual(aheadOfTheOthers({"a": (50, 50), "b": (50, 50)}), set())
        self.assertEqual(aheadOfTheOthers({}), set())


class Listener:
    def __init__(self, listening: bool = True) -> None:
        self.listening = listening
        self.said: list[str] = []

    def pause(self) -> None:
        self.said.append("pause")

    def resume(self) -> None:
        self.said.append("resume")


class AcceptHoldTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tcp, self.gone = Listener(), Listener(listening=False)
        self.paused = False
        self.hold = AcceptHold(self.clock, lambda: [self.tcp, self.gone], lambda: self.paused)

    def test_holdStopsAcceptingAndReleaseResumes(self) -> None:
        self.hold.hold()
        self.assertTrue(self.hold.held)
        self.assertEqual(self.tcp.said, ["pause"])
        self.assertEqual(self.gone.said, [], "a released listener is left alone")
        self.hold.release()
        self.assertFalse(self.hold.held)
        self.assertEqual(self.tcp.said, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_aHoldLapsesUnlessRenewed(self) -> None:
        self.hold.hold()
        self.clock.advance(HOLD_SECONDS * 0.9)
        self.hold.hold()
        self.clock.advance(HOLD_SECONDS * 0.9)
        self.assertEqual(self.tcp.said, ["pause"], "renewed: still held")
        self.clock.advance(HOLD_SECONDS * 0.1)
        self.assertEqual(self.tcp.said, ["pause", "resume"])
        self.assertFalse(self.hold.held)

    def test_whatTheLeaderPausedIsNeverResumedByTheHold(self) -> None:
        self.hold.hold()
        self.hold.forget()
        self.clock.advance(HOLD_SECONDS * 2)
        self.hold.release()
        self.assertEqual(self.tcp.said, ["pause"])
        self.assertFalse(self.hold.held)

    def test_aListenerLetGoOfMeanwhileIsNotResumed(self) -> None:
        """The worker stopped and closed its ports while held: nothing to read again."""
        self.hold.hold()
        self.tcp.listening = False
        self.clock.advance(HOLD_SECONDS)
        self.assertEqual(self.tcp.said, ["pause"])

    def test_aHoldThatLapsesAfterAPauseResumesNothing(self) -> None:
        """However the generation came to pause, the hold's end never undoes it."""
        self.hold.hold()
        self.paused = True
        self.clock.advance(HOLD_SECONDS)
        self.assertEqual(self.tcp.said, ["pause"])
        self.assertFalse(self.hold.held)


class PoolBalanceTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.pool = WorkerPool(
            self.clock,
            2,
            lambda index: RecordedWorker(1000 + index),
            readyTimeout=READY_TIMEOUT,
            drainTimeout=DRAIN_TIMEOUT,
            generation=3,
        )
        self.pool.start()
        self.a, self.b = (slot.worker for slot in self.pool.slots)
        for worker in (self.a, self.b):
            self.pool.workerReady(worker)
        self.pool.resume()
        for worker in (self.a, self.b):
            self.pool.workerServing(worker)
            worker.process.said.clear()

    def report(self, worker, settled: int, connections: int, **more) -> None:
        self.pool.workerHeard(worker)
        stats = {"connections": connections, "settled": settled, "requests": 0}
        stats.update({"accepting": True, "held": False}, **more)
        self.pool.workerStats(worker, stats)

    def test_aWorkerAheadIsHeldWithEveryReportThenReleased(self) -> None:
        self.report(self.b, 1, 1)
        self.report(self.a, 9, 9)
        self.assertTrue(self.a.held)
        self.report(self.a, 9, 9, held=True)
        self.assertEqual(self.a.process.said, ["hold", "hold"])
        self.assertEqual(self.pool.status()[0]["held"], True, "as the worker says")
        self.report(self.b, 5, 7)
        self.report(self.a, 9, 9, held=True)
        self.assertEqual(self.a.process.said, ["hold", "hold", "unhold"])
        self.assertFalse(self.a.held)
        self.assertEqual(self.b.process.said, [], "the fewest is never held")

    def test_aSilentWorkerDoesNotHoldTheOthersBack(self) -> None:
        """A worker not heard from lately may not be accepting: nobody waits on it."""
        self.report(self.b, 0, 0)
        self.clock.advance(FRESH_SECONDS + 0.1)
        self.report(self.a, 9, 9)
        self.assertEqual(self.a.process.said, [])

    def test_aWorkerThatStopsAcceptingByItselfHoldsNobodyBack(self) -> None:
        """A worker sent SIGTERM drains on its own: the others must take its place."""
        self.report(self.b, 0, 1)
        self.report(self.a, 9, 9)
        self.report(self.b, 0, 1, accepting=False)
        self.report(self.a, 9, 9)
        self.assertEqual(self.a.process.said, ["hold", "unhold"])

    def test_nobodyIsHeldWhileTheGenerationDoesNotAccept(self) -> None:
        self.report(self.b, 0, 0)
        self.report(self.a, 9, 9)
        self.pool.pause()
        self.assertEqual(self.a.process.said, ["hold", "pause"])
        self.report(self.a, 9, 9)
        self.assertEqual(self.a.process.said, ["hold", "pause"], "paused: no hold, no unhold")
        self.pool.resume()
        self.report(self.b, 0, 0)
        self.report(self.a, 9, 9)
        self.assertEqual(self.a.process.said, ["hold", "pause", "resume", "hold"])

    def test_aWorkerThatEndsLeavesTheBalance(self) -> None:
        self.report(self.b, 0, 0)
        self.pool.workerEnded(self.b, "was killed by signal 9")
        self.report(self.a, 9, 9)
        self.assertEqual(self.a.process.said, [])
