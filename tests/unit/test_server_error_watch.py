"""
C{--rollback-on-5xx}: a new generation counts its HTTP responses during the
window and asks for a rollback, once, when at least 20 were answered and at
least the ratio of them were 5xx.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.unit.test_access_log import get
from txflip.core.errorwatch import MINIMUM_RESPONSES, ServerErrorWatch


class FakeGeneration:
    """What the watch uses of a generation: its number, reactor and rollbacks."""

    number = 2

    def __init__(self) -> None:
        self.reactor = Clock()
        self.asked: list[tuple[str, str]] = []
        self.rollbacks = self

    def ask(self, source: str, why: str):
        self.asked.append((source, why))


class ServerErrorWatchTests(TestCase):
    def setUp(self) -> None:
        self.generation = FakeGeneration()
        self.watch = ServerErrorWatch(self.generation, 0.5, window=10)

    def answer(self, *codes: int) -> None:
        for code in codes:
            self.watch.responded(code)

    def test_rollsBackOnceEnoughResponsesAreServerErrors(self) -> None:
        self.watch.start()
        self.answer(*[500] * (MINIMUM_RESPONSES - 1))
        self.assertEqual(self.generation.asked, [], "not before 20 responses")
        self.answer(503)
        self.assertEqual(len(self.generation.asked), 1)
        source, why = self.generation.asked[0]
        self.assertEqual(source, "--rollback-on-5xx")
        self.assertIn("20 of 20 responses were 5xx (100%, --rollback-on-5xx 0.5)", why)
        self.answer(500, 500)
        self.assertEqual(len(self.generation.asked), 1, "only once")

    def test_belowTheRatioNothingHappens(self) -> None:
        self.watch.start()
        self.answer(*[200, 500, 404] * 20)
        self.assertEqual(self.generation.asked, [])

    def test_onlyWithinTheWindow(self) -> None:
        self.answer(*[500] * 30)
        self.assertEqual(self.generation.asked, [], "not watching before serving")
        self.watch.start()
        self.generation.reactor.advance(10)
        self.answer(*[500] * 30)
        self.assertEqual(self.generation.asked, [], "nor after the window")

    def test_countsEachSiteOnceAndNeverTxflipsOwn(self) -> None:
        site = Site(Resource(), reactor=self.generation.reactor)
        self.watch.attach(site)
        self.watch.attach(site)  # the same Site on a second listener
        own = Site(Resource(), reactor=self.generation.reactor)
        own.txflipOwn = True
        self.watch.attach(own)
        self.watch.start()
        get(site, 1, expect=b"404")
        get(own, 2, expect=b"404")
        self.assertEqual(self.watch.responses, 1)


class SettingsTests(TestCase):
    def test_needsAWindowAndAFraction(self) -> None:
        from txflip.host import ConfigError, HostSettings

        with self.assertRaises(ConfigError) as e:
            HostSettings(rollbackOn5xx=0.5).check()
        self.assertIn("--rollback-on-5xx needs --rollback-window SECONDS", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            HostSettings(rollbackOn5xx=0.5, rollbackWindow=10, workers=2).check()
        self.assertIn("works with one process per generation", str(e.exception))
        HostSettings(rollbackOn5xx=0.5, rollbackWindow=10).check()
