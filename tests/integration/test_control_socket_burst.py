"""
The control socket under a burst: 200 clients asking at once all get their
answer, and a queue that stays full ends in one line, not a hang.
"""

from __future__ import annotations

import threading
import time

from twisted.trial.unittest import TestCase

from tests.support.fullqueue import fullQueue
from tests.support.procs import askStatus, demoFlip, txflip
from txflip.control import client

BURST = 200


class BurstTests(TestCase):
    def test_twoHundredAtOnce(self):
        """
        200 threads, released together by a barrier, each run the client's
        connect-and-ask: every one gets the status. (Before: a backlog of 50
        and no retry, and most got EAGAIN.)
        """
        flip, _ = demoFlip(self)
        pid = flip.start()
        path = flip.pidFile + ".control"
        barrier = threading.Barrier(BURST)
        answers: list[dict] = []
        errors: list[str] = []

        def one() -> None:
            barrier.wait(30)
            try:
                answers.append(askStatus(path))
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=one, daemon=True) for _ in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(answers), BURST)
        self.assertEqual({(a["phase"], a["pid"]) for a in answers}, {("status", pid)})


class FullQueueTests(TestCase):
    def test_givesUpWithOneLine(self):
        """The client retries briefly, then says in one line what is wrong; exit status 2."""
        path = fullQueue(self)
        started = time.monotonic()
        result = txflip("status", "--control", path, timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, "")
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(f"the control socket {path} is not accepting", result.stderr)
        self.assertGreaterEqual(elapsed, client.FULL_QUEUE_RETRY_SECONDS)
        self.assertLess(elapsed, client.FULL_QUEUE_RETRY_SECONDS + 10)
