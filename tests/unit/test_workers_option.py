"""
C{--workers}: a number from 1 up to 4 per usable core, or auto for the usable
cores; anything else is one line.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from txflip.control.client import formatStatus
from txflip.workers.role import WorkerRole, parseWorkers, takeWorkerRole


class WorkersOptionTests(TestCase):
    def test_numbersAndAuto(self) -> None:
        self.assertEqual(parseWorkers("1"), 1)
        self.assertEqual(parseWorkers("4"), 4)
        self.assertEqual(parseWorkers("auto"), len(os.sched_getaffinity(0)))

    def test_badValuesSayWhatToGive(self) -> None:
        for bad in ("0", "-2", "two", "1.5", ""):
            with self.assertRaises(ValueError) as caught:
                parseWorkers(bad)
            self.assertIn("give a number of processes from 1 up, or auto", str(caught.exception))

    def test_atMostFourPerUsableCore(self) -> None:
        cores = len(os.sched_getaffinity(0))
        self.assertEqual(parseWorkers(str(4 * cores)), 4 * cores)
        for tooMany in (str(4 * cores + 1), "100000"):
            with self.assertRaises(ValueError) as caught:
                parseWorkers(tooMany)
            self.assertEqual(
                str(caught.exception),
                f"--workers {tooMany!r}: at most {4 * cores} here (4 per usable core, "
                f"{cores} usable); give a number from 1 to {4 * cores}, or auto",
            )

    def test_theRoleIsTakenOutOfTheEnvironment(self) -> None:
        environ = {"TXFLIP_WORKER": WorkerRole(1, 2, 9, 10).encode(), "OTHER": "x"}
        self.assertEqual(takeWorkerRole(environ), WorkerRole(1, 2, 9, 10))
        self.assertEqual(environ, {"OTHER": "x"})
        self.assertIsNone(takeWorkerRole(environ))
        with self.assertRaises(ValueError):
            takeWorkerRole({"TXFLIP_WORKER": "{"})


class WorkerStatusTests(TestCase):
    def test_statusListsEveryWorker(self) -> None:
        text = formatStatus(
            {
                "pid": 10,
                "generation": 2,
                "state": "serving",
                "uptimeSeconds": 5.0,
                "startedAt": "2026-01-01T00:00:00+00:00",
                "listeners": ["tcp:127.0.0.1:8080"],
                "connections": 3,
                "lastRestart": None,
                "workers": [
                    {
                        "index": 0,
                        "pid": 11,
                        "state": "serving",
                        "uptimeSeconds": 4.5,
                        "connections": 3,
                        "requests": 120,
                        "restarts": 0,
                    },
                    {
                        "index": 1,
                        "pid": None,
                        "state": "backing off",
                        "nextStartInSeconds": 2.0,
                        "restarts": 3,
                        "lastExit": "worker 1 (PID 12) of generation 2 exited with code 1",
                    },
                ],
            }
        )
        self.assertIn("workers:     2 (this PID leads them)", text)
        self.assertIn("  worker 0: PID 11, serving, up 4.5s, 3 connection(s), 120 request(s)", text)
        self.assertIn(
            "  worker 1: backing off, next start in 2s; restarted 3 time(s), "
            "last: worker 1 (PID 12) of generation 2 exited with code 1",
            text,
        )
