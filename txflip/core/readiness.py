"""
When a starting generation is ready: the conditions it still waits for.

A generation is ready once nothing is pending. Conditions are named in words
("the app's startService Deferred", "listening again on tcp:0.0.0.0:8080"), so
that C{txflip status} and a timed-out start can say what was missing.
"""

from __future__ import annotations

from collections.abc import Callable

REACTOR_RUNNING = "the reactor to run"
APP_READY_CALL = "the app to call ready()"
APP_LISTENING = "the app to listen"
PREDECESSOR_APP_STOPPED = "the previous generation to stop its app"


class Readiness:
    """
    A set of pending conditions; C{onReady} is called once, when the last one clears.

    @ivar explicit: whether the app gave a readiness signal of its own (a
        Deferred from C{startService}, or a promise to call C{ready()}); if it
        did not, the generation is ready only once it listens again on every
        socket it inherited.
    """

    def __init__(self, onReady: Callable[[], None]) -> None:
        self._onReady = onReady
        self._pending: list[str] = []
        self._done = False
        self.explicit = False
        self.onChange: Callable[[list[str]], None] = lambda pending: None
        """Called with what is still pending, each time that changes before ready."""

    @property
    def done(self) -> bool:
        return self._done

    def pending(self) -> list[str]:
        """What is still awaited, in the order it was asked for."""
        return list(self._pending)

    def hold(self, what: str) -> None:
        """Wait for C{what} too, unless already ready."""
        if not self._done and what not in self._pending:
            self._pending.append(what)
            self.onChange(self.pending())

    def release(self, what: str) -> None:
        """C{what} happened; if nothing else is pending, be ready."""
        if what in self._pending:
            self._pending.remove(what)
            if self._pending:
                self.onChange(self.pending())
        self._check()

    def _check(self) -> None:
        if not self._done and not self._pending:
            self._done = True
            self._onReady()
