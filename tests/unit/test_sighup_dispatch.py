"""
SIGHUP routed to the generation: a real SIGHUP sent to this process, its
handler, and the work it schedules on the running reactor.

The generation is a stand-in with a real L{Events} hub, whose refusal the
test sets: the point is when the refusal is taken, not why.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txflip.core.events import Events
from txflip.core.signals import SighupDispatch


class StandInGeneration:
    def __init__(self, refusing: str | None = None) -> None:
        self.events = Events()
        self.refusing = refusing
        self.upgrades: list[str] = []
        self.refused: list[dict] = []
        self.events.subscribe(
            lambda name, fields: self.refused.append(fields) if name == "upgrade-refused" else None
        )

    def refusal(self) -> str | None:
        return self.refusing

    def upgrade(self, source: str) -> None:
        self.upgrades.append(source)


class SighupTests(TestCase):
    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.dispatch = SighupDispatch(reactor)
        self.dispatch.install()
        self.logs: list[str] = []
        observer = lambda event: self.logs.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def hangUp(self) -> Deferred:
        """Send SIGHUP to this process; fire once the reactor has run what it scheduled."""
        os.kill(os.getpid(), signal.SIGHUP)
        done: Deferred = Deferred()
        # The handler ran at once and scheduled its work with callFromThread;
        # this is scheduled after it.
        reactor.callFromThread(done.callback, None)
        return done

    def test_upgradeStarts(self) -> None:
        generation = self.dispatch.generation = StandInGeneration()

        def check(_):
            self.assertEqual(generation.upgrades, ["SIGHUP"])
            self.assertEqual(generation.refused, [])

        return self.hangUp().addCallback(check)

    def test_refusedWithTheReasonItHadAtTheSignal(self) -> None:
        """What the generation refused when the signal came decides, not what it says later."""
        generation = self.dispatch.generation = StandInGeneration(
            "an upgrade is already in progress"
        )
        d = self.hangUp()
        generation.refusing = None

        def check(_):
            self.assertEqual(generation.upgrades, [])
            self.assertEqual(
                generation.refused,
                [{"source": "SIGHUP", "reason": "an upgrade is already in progress"}],
            )
            refusals = [line for line in self.logs if "SIGHUP refused" in line]
            self.assertEqual(len(refusals), 1)
            self.assertTrue(refusals[0].endswith("an upgrade is already in progress"))

        return d.addCallback(check)

    def test_beforeServing(self) -> None:
        """A SIGHUP before the generation serves is refused, and does not kill the process."""

        def check(_):
            refusals = [line for line in self.logs if "SIGHUP refused" in line]
            self.assertEqual(len(refusals), 1)
            self.assertTrue(refusals[0].endswith("this generation is not serving yet"))

        return self.hangUp().addCallback(check)
