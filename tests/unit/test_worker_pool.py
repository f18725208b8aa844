"""
The workers of one generation, in process against a Clock: a generation is
ready only once all its workers are, a worker that fails before then fails the
start, and once it serves a worker that ends is replaced after a back-off
that doubles with each failure in a row and is capped.

The worker processes are stand-ins that record what the pool asks of them;
the process tests (tests/integration/test_workers.py) run real ones.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from txflip.workers.backoff import Backoff
from txflip.workers.pool import HUNG_SECONDS, STOP_GRACE_SECONDS, Phase, WorkerPool

READY_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0


class RecordedWorker:
    """What the pool sees of a worker process: a PID, and every request it made."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.said: list[str] = []
        self.state = None

    def go(self) -> None:
        self.said.append("go")

    def send(self, command: str) -> None:
        self.said.append(command)

    def abort(self) -> None:
        self.said.append("abort")

    def kill(self) -> None:
        self.said.append("kill")


class BackoffTests(TestCase):
    def test_doublesAndIsCapped(self) -> None:
        backoff = Backoff(base=0.5, cap=4.0, stable=10.0)
        delays = [backoff.failed(None) for _ in range(6)]
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual(backoff.failures, 6)

    def test_aStableWorkerStartsTheCountAfresh(self) -> None:
        backoff = Backoff(base=0.5, cap=30.0, stable=10.0)
        backoff.failed(None)
        backoff.failed(2.0)
        self.assertEqual(backoff.failed(9.9), 2.0, "a short life is a failure in a row")
        self.assertEqual(backoff.failed(10.0), 0.5)
        self.assertEqual(backoff.failures, 1)


class PoolTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.launched: list[RecordedWorker] = []
        self.startFailures: list[str] = []
        self.pool = WorkerPool(
            self.clock,
            3,
            self.launch,
            readyTimeout=READY_TIMEOUT,
            drainTimeout=DRAIN_TIMEOUT,
            generation=4,
        )
        self.pool.onStartFailed = self.startFailures.append
        self.ready: list[None] = []
        self.pool.allReady.addCallback(self.ready.append)
        self.pool.start()

    def launch(self, index: int) -> RecordedWorker:
        worker = RecordedWorker(1000 + len(self.launched))
        self.launched.append(worker)
        return worker

    def worker(self, index: int):
        return self.pool.slots[index].worker

    def allServing(self) -> None:
        for slot in self.pool.slots:
            self.pool.workerReady(slot.worker)
        self.pool.resume()
        for slot in self.pool.slots:
            self.pool.workerServing(slot.worker)

    # Readiness.

    def test_readyOnlyOnceEveryWorkerIs(self) -> None:
        self.assertEqual([w.pid for w in self.launched], [1000, 1001, 1002])
        self.pool.workerReady(self.worker(0))
        self.pool.workerReady(self.worker(2))
        self.pool.workerReady(self.worker(2))
        self.assertEqual(self.ready, [], "two of three are ready")
        self.assertEqual(self.pool.readyCount(), 2)
        self.pool.workerReady(self.worker(1))
        self.assertEqual(self.ready, [None])
        self.assertEqual([w.said for w in self.launched], [[], [], []], "no go before the leader")
        self.pool.resume()
        self.assertEqual([w.said for w in self.launched], [["go"], ["go"], ["go"]])

    def test_oneWorkerExitingFailsTheStart(self) -> None:
        self.pool.workerReady(self.worker(0))
        first, second = self.worker(0), self.worker(1)
        self.pool.workerEnded(second, "exited with code 3")
        self.assertEqual(
            self.startFailures, ["worker 1 (PID 1001) exited with code 3 before it was ready"]
        )
        self.assertEqual(self.ready, [])
        self.assertEqual(first.process.said, ["kill"], "the rest of the release is killed")
        self.assertEqual(self.launched[2].said, ["kill"])
        self.clock.advance(60)
        self.assertEqual(len(self.launched), 3, "nothing is replaced in a failed start")

    def test_aWorkerThatCannotStartSaysWhy(self) -> None:
        self.pool.workerFailed(self.worker(2), "the app's startService Deferred failed: boom")
        self.assertEqual(
            self.startFailures,
            ["worker 2 (PID 1002) cannot start: the app's startService Deferred failed: boom"],
        )

    def test_notReadyInTimeFailsTheStartNamingWhatItWaitsFor(self) -> None:
        for index in (0, 1):
            self.pool.workerReady(self.worker(index))
        self.pool.workerWaiting(self.worker(2), "the app to call ready()")
        self.clock.advance(READY_TIMEOUT - 0.01)
        self.assertEqual(self.startFailures, [])
        self.clock.advance(0.01)
        self.assertEqual(
            self.startFailures,
            [
                "worker 2 (PID 1002) was not ready within the ready timeout of 10s; "
                "it was still waiting for the app to call ready()"
            ],
        )
        self.assertIn("kill", self.launched[2].said)

    # Replacement.

    def test_aCrashedWorkerIsReplacedAfterABackoffThatDoubles(self) -> None:
        self.allServing()
        delays = []
        for _ in range(5):
            process = self.worker(1).process
            endedAt = self.clock.seconds()
            self.pool.workerEnded(self.worker(1), "was killed by signal 9")
            self.assertIsNone(self.worker(1))
            launched = len(self.launched)
            while len(self.launched) == launched:
                self.clock.advance(0.25)
            delays.append(self.clock.seconds() - endedAt)
            self.assertIsNot(self.worker(1).process, process)
            self.pool.workerReady(self.worker(1))
            self.assertEqual(self.worker(1).process.said, ["go"], "accepting: go at once")
            self.pool.workerServing(self.worker(1))
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 8.0])
        status = self.pool.status()[1]
        self.assertEqual(status["restarts"], 5)
        self.assertEqual(status["failuresInARow"], 5)
        self.assertEqual(
            status["lastExit"], "worker 1 (PID 1006) of generation 4 was killed by signal 9"
        )
        self.assertEqual([s["restarts"] for s in self.pool.status()], [0, 5, 0])

    def test_statusWhileBackingOff(self) -> None:
        self.allServing()
        self.pool.workerEnded(self.worker(0), "exited with code 1")
        status = self.pool.status()[0]
        self.assertEqual(status["state"], "backing off")
        self.assertIsNone(status["pid"])
        self.assertEqual(status["nextStartInSeconds"], 0.5)

    def test_aReplacementThatIsNeverReadyIsKilledAndReplacedAgain(self) -> None:
        self.allServing()
        self.pool.workerEnded(self.worker(0), "exited with code 1")
        self.clock.advance(0.5)
        replacement = self.worker(0)
        self.clock.advance(READY_TIMEOUT)
        self.assertEqual(replacement.process.said, ["kill"])
        self.assertEqual(self.startFailures, [], "a serving generation does not fail")
        self.pool.workerEnded(replacement, "was killed by signal 9")
        self.assertIn("was not ready within the ready timeout", self.pool.slots[0].lastExit)
        self.assertEqual(self.pool.slots[0].backoff.failures, 2)

    def test_aSilentWorkerIsKilledAndReplaced(self) -> None:
        """A serving worker that says nothing for HUNG_SECONDS (blocked, or stopped) is killed."""
        self.allServing()
        silent = self.worker(0)
        for _ in range(int(HUNG_SECONDS) - 1):
            self.clock.advance(1)
            for index in (1, 2):
                self.pool.workerHeard(self.worker(index))
        self.assertEqual(silent.process.said, ["go"])
        self.clock.advance(1)
        self.assertEqual(silent.process.said, ["go", "kill"])
        self.assertEqual(self.worker(1).process.said, ["go"], "the others answer")
        self.pool.workerEnded(silent, "was killed by signal 9")
        self.assertEqual(
            self.pool.slots[0].lastExit,
            "worker 0 (PID 1000) of generation 4 stopped answering for 30s and was killed",
        )
        self.clock.advance(0.5)
        self.assertIsNot(self.worker(0), None)

    def test_aReplacementWaitsWhileTheGenerationIsPaused(self) -> None:
        self.allServing()
        self.pool.workerEnded(self.worker(2), "exited with code 1")
        self.pool.pause()
        self.clock.advance(0.5)
        self.pool.workerReady(self.worker(2))
        self.assertEqual(self.worker(2).process.said, [])
        self.pool.resume()
        self.assertEqual(self.worker(2).process.said, ["go"])
        self.assertEqual(self.worker(0).process.said, ["go", "pause", "resume"])

    # Draining and stopping.

    def test_drainWaitsForEveryWorkerAndReplacesNone(self) -> None:
        self.allServing()
        self.pool.workerEnded(self.worker(0), "was killed by signal 9")
        drained = []
        self.pool.drain().addCallback(drained.append)
        self.assertEqual(self.pool.phase, Phase.DRAINING)
        self.clock.advance(60)
        self.assertIsNone(self.worker(0), "no replacement while draining")
        self.assertEqual(self.worker(1).process.said[-1], "drain")
        self.pool.workerDrained(self.worker(1), 0)
        self.assertEqual(drained, [])
        self.pool.workerDrained(self.worker(2), 2)
        self.assertEqual(drained, [2])

    def test_undrainServesAgainAndRefillsEmptySlots(self) -> None:
        self.allServing()
        self.pool.drain()
        self.pool.workerEnded(self.worker(0), "exited with code 0")
        self.pool.undrain()
        self.assertEqual(self.worker(1).process.said[-1], "undrain")
        self.assertIsNotNone(self.worker(0), "the empty slot gets a worker at once")
        self.assertEqual(len(self.launched), 4)

    def test_stopAllStopsEveryWorkerAndKillsLaggardsAfterTheDrainTimeout(self) -> None:
        self.allServing()
        self.pool.workerEnded(self.worker(1), "exited with code 1")
        exited = []
        self.pool.stopAll()
        self.pool.exited().addCallback(exited.append)
        self.clock.advance(60)
        self.assertEqual(len(self.launched), 3, "no replacement once stopping")
        self.assertEqual(self.launched[0].said, ["go", "stop", "kill"])
        self.pool.workerEnded(self.worker(0), "exited with code 0")
        self.assertEqual(exited, [])
        self.pool.workerEnded(self.worker(2), "was killed by signal 9")
        self.assertEqual(exited, [None])
        self.assertEqual(self.pool.slots[2].restarts, 0, "a planned exit is no crash")

    def test_stopKillsOnlyAfterTheDrainTimeoutAndGrace(self) -> None:
        self.allServing()
        self.pool.stopAll()
        self.clock.advance(DRAIN_TIMEOUT + STOP_GRACE_SECONDS - 0.01)
        self.assertEqual(self.launched[0].said, ["go", "stop"])
        self.clock.advance(0.01)
        self.assertEqual(self.launched[0].said, ["go", "stop", "kill"])

    def test_stoppingBeforeServingAbortsTheWorkers(self) -> None:
        self.pool.workerReady(self.worker(0))
        self.pool.stopAll()
        self.assertEqual([w.said for w in self.launched], [["abort"]] * 3)
