"""
The control client against a control socket whose queue stays full: it retries
for the whole period it says it did, then gives up with one line.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import TestCase

from tests.support.fullqueue import fullQueue
from txflip.control import client

RETRY_SECONDS = 0.3


class FullQueueRetryTests(TestCase):
    def test_retriesForTheWholePeriod(self) -> None:
        """
        The last try comes at the end of C{retryFor}, not up to a pause
        before it: the error says the queue stayed full that long.
        """
        path = fullQueue(self)
        started = time.monotonic()
        with self.assertRaises(client.Unreachable) as caught:
            client.connect(path, 30.0, retryFor=RETRY_SECONDS)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, RETRY_SECONDS)
        self.assertLess(elapsed, RETRY_SECONDS + 10)
        self.assertEqual(
            str(caught.exception),
            f"the control socket {path} is not accepting: its queue stayed full for "
            f"{RETRY_SECONDS:g}s; try again, or check that the server is not stuck",
        )

    def test_shorterTimeoutBoundsTheRetries(self) -> None:
        """A command timeout shorter than the retry period is the period."""
        path = fullQueue(self)
        started = time.monotonic()
        with self.assertRaises(client.Unreachable) as caught:
            client.connect(path, RETRY_SECONDS, retryFor=60.0)
        self.assertGreaterEqual(time.monotonic() - started, RETRY_SECONDS)
        self.assertIn(f"stayed full for {RETRY_SECONDS:g}s", str(caught.exception))
