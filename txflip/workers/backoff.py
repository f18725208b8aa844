"""
How long to wait before replacing a worker that ended on its own.

Each worker slot counts its failures in a row: the first replacement waits
L{Backoff.base} seconds, each further one twice as long, up to L{Backoff.cap}.
A worker that served for L{Backoff.stable} seconds before it ended starts the
count afresh, so one crash a day never waits long, and a release that crashes
at once never restarts at full speed.
"""

from __future__ import annotations


class Backoff:
    """The replacement delays of one worker slot."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, stable: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.stable = stable
        self.failures = 0
        """Failures in a row, the latest included."""

    def failed(self, servedFor: float | None) -> float:
        """
        A worker of this slot ended after serving C{servedFor} seconds (L{None}:
        before it served); return the seconds to wait before the next one.
        """
        if servedFor is not None and servedFor >= self.stable:
            self.failures = 0
        self.failures += 1
        return min(self.base * 2 ** (self.failures - 1), self.cap)
