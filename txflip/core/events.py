"""
Lifecycle events of one generation, for whoever reports them (logs, systemd, the control socket).

The events and their fields are L{EVENTS}; a test holds every C{emit} in txflip
to it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

Observer = Callable[[str, dict], None]

_log = Logger()

EVENTS: dict[str, tuple[str, ...]] = {
    "serving": ("first", "listeners"),  # first (bool), listeners (list of keys)
    "upgrade-started": ("source", "childPid", "nextGeneration"),
    # A sequential handover (txflip.core.pause): the successor built its app ...
    "child-prepared": ("childPid", "ms"),
    # ... and this generation's app stopped, so the successor starts its own.
    "app-stopped": ("childPid", "ms"),
    "child-ready": ("childPid", "ms"),
    # pauseMs: a sequential handover's pause, from accepting nothing to the
    # successor serving (None in an overlapping handover).
    "upgrade-succeeded": ("childPid", "ms", "pauseMs"),
    "upgrade-failed": ("childPid", "reason", "ms"),
    "upgrade-refused": ("source", "reason"),
    # After a handover, while this generation still holds the sockets: the
    # successor went silent (this one accepts beside it again) ...
    "successor-silent": ("childPid",),
    # ... or died (this one serves again, alone).
    "successor-died": ("childPid", "reason"),
    # ... or handed the traffic back (txflip rollback): this one serves again.
    "rolled-back": ("childPid", "reason"),
    # This generation handed the traffic back to its predecessor and drains.
    "rolling-back": ("parentPid",),
    # moving (bool): connections-moved follows.
    "draining": ("handedOver", "connections", "moving"),
    # movedKinds: kind (HTTP/1.x, plain, WebSocket) -> count;
    # stayed: reason -> count; failure: why moving was given up, or None; final:
    # False once every idle connection has moved while waiting ones (busy, or
    # still arriving from this generation's predecessor) may follow.
    # arriving: connections still arrive from this generation's predecessor;
    # movedKinds: how many moved of each kind (HTTP/1.x, WebSocket, plain).
    "connections-moved": (
        "moved",
        "movedKinds",
        "stayed",
        "failure",
        "ms",
        "final",
        "waiting",
        "arriving",
    ),
    # After a handover: the drain ended, C{aborted} connections cut at its deadline.
    "drained": ("aborted", "ms"),
    "exiting": ("handedOver",),
}
"""Every event a generation emits, and the fields it comes with."""


class Events:
    """A small publish/subscribe hub; an observer that raises is logged and skipped."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, name: str, **fields: object) -> None:
        for observer in list(self._observers):
            try:
                observer(name, fields)
            except Exception:
                _log.failure(
                    "txflip event observer {observer!r} failed on {name}",
                    observer=observer,
                    name=name,
                )
