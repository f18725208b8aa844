"""
Under C{python -m txflip run} the program owns logging: flip's lines go to
standard error only until the program begins logging, and then to wherever the
program logs, through Twisted's own buffer.

A real L{LogBeginner} and L{LogPublisher}, with a stand-in warnings module.
"""

from __future__ import annotations

import io
import types
import warnings

from twisted.logger import LogBeginner, Logger, LogPublisher
from twisted.trial.unittest import TestCase

from txflip.core.log import RestartLogger
from txflip.programlog import FlipLinesOnStderr


class ProgramOwnsLoggingTests(TestCase):
    def setUp(self) -> None:
        self.publisher = LogPublisher()
        self.warnings = types.SimpleNamespace(showwarning=warnings.showwarning)
        self.beginner = LogBeginner(
            self.publisher, io.StringIO(), types.SimpleNamespace(), self.warnings
        )
        self.stderr = io.StringIO()
        self.observer = FlipLinesOnStderr(self.stderr, self.beginner, self.warnings)
        self.publisher.addObserver(self.observer)
        self.flip = RestartLogger(observer=self.publisher)
        self.program = Logger(namespace="program", observer=self.publisher)
        self.programLog: list[dict] = []

    def flipLine(self, text: str) -> None:
        self.flip.info(text)

    def test_flipsLinesOnlyUntilTheProgramLogs(self) -> None:
        """flip's lines, not the program's, are on stderr; none once it begins logging."""
        self.flipLine("first flip line")
        self.program.info("the program's own line")
        self.flipLine("second flip line")
        self.beginner.beginLoggingTo([self.programLog.append], redirectStandardIO=False)
        self.flipLine("after the program began")
        shown = self.stderr.getvalue()
        self.assertIn("first flip line", shown)
        self.assertIn("second flip line", shown)
        self.assertNotIn("the program's own line", shown)
        self.assertNotIn("after the program began", shown)
        self.assertEqual(shown.count("first flip line"), 1)
        # Every line reached the program's log, the one that gave the start away included.
        texts = [e["log_format"].split("] ")[-1] for e in self.programLog]
        self.assertEqual(
            texts,
            [
                "first flip line",
                "the program's own line",
                "second flip line",
                "after the program began",
            ],
        )

    def test_programThatDiscardsTheBuffer(self) -> None:
        """twisted.python.log.startLogging discards the buffer: seen by the warnings hand-over."""
        self.flipLine("before")
        self.beginner.beginLoggingTo(
            [self.programLog.append], discardBuffer=True, redirectStandardIO=False
        )
        self.flipLine("after")
        self.assertIn("before", self.stderr.getvalue())
        self.assertNotIn("after", self.stderr.getvalue())
        self.assertEqual(len(self.programLog), 1)

    def test_programThatBeganBeforeFlipLogged(self) -> None:
        self.beginner.beginLoggingTo([self.programLog.append], redirectStandardIO=False)
        self.flipLine("serving")
        self.assertEqual(self.stderr.getvalue(), "")
        self.assertEqual(len(self.programLog), 1)

    def test_programThatNeverLogs(self) -> None:
        for n in range(3):
            self.flipLine(f"line {n}")
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertRegex(lines[2], r"\[txflip gen \d+ pid \d+\] line 2$")

    def test_criticalLeftToTwisted(self) -> None:
        """Twisted writes critical events to stderr itself until logging begins."""
        self.flip.critical("on fire")
        self.assertEqual(self.stderr.getvalue(), "")
