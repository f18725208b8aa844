"""
Long-lived connections spread evenly over the workers.

Every worker waits on the same listening socket, and whichever the kernel
schedules first takes the next connection. Under load that spreads
connections well, but a steady trickle of long-lived ones (WebSockets,
keep-alive clients) piles up on one worker: 60 connections opened 20 ms apart
went 42 to 18 and 47 to 13 over two workers; balanced, 24 to 36 at worst
(four runs of 60, 20 ms apart; 50 ms apart, 33 to 27 at worst).

So the leader compares its workers' connections as their stats arrive. A
worker whose settled connections (open for L{SETTLED_SECONDS} or more; a
short request never counts) exceed by more than L{SLACK} all the connections
of the worker holding the fewest is told to hold: it stops accepting, and the
others take the new connections, until the leader says unhold. A hold lapses
by itself after L{HOLD_SECONDS} unless the leader renews it (it does, with
every stats report from a worker still ahead), so a worker never stays deaf
if its leader goes quiet. Only a worker that serves beside another that
accepts (it says so in its reports, and was heard from lately) is ever held.
"""

from __future__ import annotations

from collections.abc import Iterable

SETTLED_SECONDS = 0.25
"""A connection open this long counts in the balance."""
SLACK = 2
"""Settled connections a worker may hold beyond all those of the least-loaded one."""
HOLD_SECONDS = 1.0
"""A hold the leader does not renew lapses after this long."""


class SettledCounter:
    """
    A worker's count of its connections open for L{SETTLED_SECONDS} or more,
    as seen at its stats reports (so a connection counts between
    L{SETTLED_SECONDS} and one report period more after it opened).
    """

    def __init__(self) -> None:
        self._firstSeen: dict[int, float] = {}

    def count(self, sockets: Iterable[object], now: float) -> int:
        """
        How many of C{sockets} (the transports that own the open connections'
        sockets, all of them at each report) were first seen
        L{SETTLED_SECONDS} or more before C{now}.

        Keyed by identity, so any object counts, and forgotten at the first
        report without it, so a closed connection's number is never inherited
        by the next one.
        """
        firstSeen = {id(s): self._firstSeen.get(id(s), now) for s in sockets}
        self._firstSeen = firstSeen
        return sum(1 for since in firstSeen.values() if now - since >= SETTLED_SECONDS)


def aheadOfTheOthers(counts: dict[object, tuple[int, int]]) -> set[object]:
    """
    The workers to hold, among C{counts} (every worker that serves, with its
    latest settled and open connections): those whose settled connections
    alone exceed, by more than L{SLACK}, all the connections of the worker
    holding the fewest.

    Settled against open: a worker is held only for connections that stay,
    and released as soon as the others' new ones (settled or not) catch up,
    so a burst of short requests never holds anyone and the lag of settling
    never tips the balance the other way. The worker with the fewest is never
    held, and nobody is unless two serve.
    """
    if len(counts) < 2:
        return set()
    fewest = min(open for _, open in counts.values())
    return {worker for worker, (settled, _) in counts.items() if settled > fewest + SLACK}


class AcceptHold:
    """
    A worker's hold: its stream listeners stop accepting until released, or
    until L{HOLD_SECONDS} after the last C{hold()}.

    @param listeners: returns the listeners to hold (those that accept
        connections; datagrams are never held).
    @param paused: returns whether the leader has paused the listeners since:
        then a release resumes nothing.
    """

    def __init__(self, clock, listeners, paused=lambda: False) -> None:
        self._clock = clock
        self._listeners = listeners
        self._paused = paused
        self._held: list = []
        self._lapse = None

    @property
    def held(self) -> bool:
        return bool(self._held) or self._lapse is not None

    def hold(self) -> None:
        """Stop accepting (or keep holding) for L{HOLD_SECONDS} more."""
        if self._lapse is not None and self._lapse.active():
            self._lapse.reset(HOLD_SECONDS)
            return
        self._held = [listener for listener in self._listeners() if listener.listening]
        for listener in self._held:
            listener.pause()
        self._lapse = self._clock.callLater(HOLD_SECONDS, self.release)

    def release(self) -> None:
        """Accept again on every listener this hold stopped (and that still listens)."""
        if self._lapse is not None and self._lapse.active():
            self._lapse.cancel()
        self._lapse = None
        held, self._held = self._held, []
        if self._paused():
            return
        for listener in held:
            if listener.listening:
                listener.resume()

    def forget(self) -> None:
        """
        The leader paused, drained or stopped this worker, or it stops by
        itself: the listeners are no longer this hold's to resume.
        """
        if self._lapse is not None and self._lapse.active():
            self._lapse.cancel()
        self._lapse = None
        self._held = []
