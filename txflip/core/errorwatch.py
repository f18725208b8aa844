"""
C{--rollback-on-5xx RATIO}: a new generation that answers mostly server errors
gives the traffic back to its predecessor, within the rollback window.

From the moment it serves (after a restart, never in a first generation) until
the window (C{--rollback-window}) ends, the generation counts the HTTP responses
of every C{HTTPFactory} the app listens with. Once it has answered at least
L{MINIMUM_RESPONSES} and at least C{RATIO} of them were 5xx, it asks its
predecessor to take the traffic back (L{Generation.rollback}), once.
"""

from __future__ import annotations

import os

from twisted.web.http import HTTPFactory

from txflip.core.log import log

MINIMUM_RESPONSES = 20
_COUNTED = "_txflipResponsesCounted"


class ServerErrorWatch:
    """Counts a generation's HTTP responses and rolls it back on too many 5xx."""

    def __init__(self, generation, ratio: float, window: float) -> None:
        self._generation = generation
        self.ratio = ratio
        self._window = window
        self.responses = 0
        self.serverErrors = 0
        self._watching = False
        self._decided = False
        self._timer = None

    def attach(self, factory):
        """Count the responses of C{factory}, if it serves HTTP; return it."""
        if (
            isinstance(factory, HTTPFactory)
            and not getattr(factory, "txflipOwn", False)
            and not getattr(factory, _COUNTED, False)
        ):
            setattr(factory, _COUNTED, True)
            logged = factory.log

            def log(request) -> None:
                logged(request)
                self.responded(request.code)

            factory.log = log
        return factory

    def start(self) -> None:
        """This generation serves after a restart: watch for the length of the window."""
        self._watching = True
        self._timer = self._generation.reactor.callLater(self._window, self.stop)

    def stop(self) -> None:
        self._watching = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def responded(self, code: int) -> None:
        if not self._watching:
            return
        self.responses += 1
        if 500 <= code < 600:
            self.serverErrors += 1
        if self.responses >= MINIMUM_RESPONSES and self.serverErrors >= self.ratio * self.responses:
            self._rollBack()

    def _rollBack(self) -> None:
        self.stop()
        if self._decided:
            return
        self._decided = True
        generation = self._generation
        figures = (
            f"{self.serverErrors} of {self.responses} responses were 5xx "
            f"({self.serverErrors / self.responses:.0%}, --rollback-on-5xx {self.ratio:g})"
        )
        log.error(
            "release PID {pid} (generation {gen}): {figures}; rolling back to generation "
            "{previous}",
            pid=os.getpid(),
            gen=generation.number,
            figures=figures,
            previous=generation.number - 1,
        )
        generation.rollbacks.ask("--rollback-on-5xx", f"--rollback-on-5xx: {figures}")
