"""What the old generation and C{txflip reload} say about moved connections."""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import TestCase

from txflip.control.client import describe
from txflip.core.connmove import MoveReport


class MoveReportTests(TestCase):
    def test_nothingStays(self) -> None:
        self.assertEqual(MoveReport(moved=3).describeStayed(), "none stay")

    def test_reasonsCounted(self) -> None:
        report = MoveReport(moved=1, stayed=Counter({"TLS": 2, "not HTTP/1.x": 1}))
        self.assertEqual(report.describeStayed(), "3 stay and drain here (2 TLS, 1 not HTTP/1.x)")

    def test_reloadSaysHowManyMovedAndWhyOthersStay(self) -> None:
        line = describe(
            {
                "phase": "moved",
                "generation": 3,
                "childGeneration": 4,
                "moved": 30,
                "stayed": {"TLS": 2},
                "failure": None,
                "ms": 12,
            }
        )
        self.assertEqual(
            line,
            "moved 30 keep-alive connection(s) to generation 4 in 12 ms; "
            "2 stay with generation 3, closed there as they finish: 2 TLS",
        )

    def test_reloadSaysWhyMovingWasGivenUp(self) -> None:
        line = describe(
            {
                "phase": "moved",
                "generation": 3,
                "childGeneration": 4,
                "moved": 0,
                "stayed": {"the transfer failed": 5},
                "failure": "the transfer channel closed: the other generation closed it",
                "ms": 40,
            }
        )
        self.assertIn("(moving was given up: the transfer channel closed", line)
        self.assertIn("5 stay with generation 3", line)

    def test_reloadSaysWhatIsStillToMove(self) -> None:
        """The first report, before busy connections and those still arriving have moved."""
        line = describe(
            {
                "phase": "moved",
                "generation": 2,
                "childGeneration": 3,
                "moved": 160,
                "stayed": {},
                "failure": None,
                "ms": 92,
                "waiting": 1,
                "arriving": True,
            }
        )
        self.assertEqual(
            line,
            "moved 160 keep-alive connection(s) to generation 3 in 92 ms; 1 busy connection(s) "
            "move or close once their request is answered; connections still arriving from "
            "generation 1 move on to generation 3 as they come",
        )

    def test_reloadCountsEachKind(self) -> None:
        """Once anything other than HTTP/1.x moved, reload counts the connections of each kind."""
        line = describe(
            {
                "phase": "moved",
                "generation": 3,
                "childGeneration": 4,
                "moved": 23,
                "movedKinds": {"HTTP/1.x": 2, "WebSocket": 20, "plain": 1},
                "stayed": {},
                "failure": None,
                "ms": 12,
            }
        )
        self.assertEqual(
            line,
            "moved 23 connection(s) (2 HTTP/1.x, 20 WebSocket, 1 plain) to generation 4 in 12 ms",
        )

    def test_logCountsEachKind(self) -> None:
        report = MoveReport(moved=3, movedKinds=Counter({"WebSocket": 2, "HTTP/1.x": 1}))
        self.assertEqual(report.describeKinds(), " (1 HTTP/1.x, 2 WebSocket)")
        self.assertEqual(
            MoveReport(moved=3, movedKinds=Counter({"HTTP/1.x": 3})).describeKinds(), ""
        )
