"""
flip's log lines for a program that runs its own reactor, which owns its logging.

C{python -m txflip run} never calls C{globalLogBeginner.beginLoggingTo}: the
program may, once, as it would without flip (a second call is what Twisted
warns about as "primary log target selected twice"). Until then Twisted keeps
every event in a buffer, and replays it to the program's observers when it
begins logging, so flip's lines end up in the program's log too.

A program that never begins logging would show nothing of flip, so
L{FlipLinesOnStderr} writes flip's own lines to standard error until the
program begins logging. It knows that moment by what Twisted documents of
C{beginLoggingTo}: the buffered events are published again (the first line it
wrote comes round a second time), and C{warnings.showwarning} becomes the
beginner's, which also covers a program that discards the buffer (as
C{twisted.python.log.startLogging} does).
"""

from __future__ import annotations

import warnings
from typing import IO

from twisted.logger import (
    LogLevel,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)


def isFlips(event: dict) -> bool:
    """Whether C{event} was logged through L{txflip.core.log.log}."""
    return "txflip_generation" in event


class FlipLinesOnStderr:
    """
    A log observer writing flip's lines to C{stream} until the program begins
    logging. Critical ones are left out: Twisted writes those to standard
    error itself until then.
    """

    def __init__(self, stream: IO[str], beginner=globalLogBeginner, warningsModule=warnings):
        self._write = textFileLogObserver(stream)
        self._beginner = beginner
        self._warnings = warningsModule
        self._first: dict | None = None
        self.programLogs = False

    def __call__(self, event: dict) -> None:
        if self.programLogs or self._programBegan(event):
            # It stays subscribed, doing nothing: removing an observer while
            # the publisher iterates over them would skip the next one.
            self.programLogs = True
            return
        if not isFlips(event) or event.get("log_level") == LogLevel.critical:
            return
        if event.get("txflip_onStderrAlready"):
            return  # a start failure: its one line on standard error is written apart
        if self._first is None:
            self._first = event
        self._write(event)

    def _programBegan(self, event: dict) -> bool:
        return event is self._first or self._warnings.showwarning == self._beginner.showwarning


def showFlipLinesOnStderr(stream: IO[str], publisher=globalLogPublisher) -> FlipLinesOnStderr:
    """Subscribe a L{FlipLinesOnStderr} writing to C{stream}; return it."""
    observer = FlipLinesOnStderr(stream)
    publisher.addObserver(observer)
    return observer
