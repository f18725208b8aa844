"""
State a generation hands to the next one over the channel (C{carry <json>}),
so that what it counts outlives it: metrics, for one.

Each part has a name, a provider in the generation that sends (called for
the latest value each time), and, in the one that receives, the latest value
its predecessor sent. The parent sends before it says C{go}, once the child
serves (the restart itself counted), and just before it exits (its drain
counted): the child always holds the latest, and a value never goes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from txflip.core.log import log


class Carried:
    """What this generation carries to its successor, and what its predecessor carried here."""

    def __init__(self) -> None:
        self._providers: dict[str, Callable[[], object]] = {}
        self._observers: dict[str, list[Callable[[object], None]]] = {}
        self.received: dict[str, object] = {}
        """The latest value of each part, from the predecessor."""

    def provide(self, name: str, provider: Callable[[], object]) -> None:
        """Send C{provider()} (JSON-able) under C{name} to each successor."""
        self._providers[name] = provider

    def follow(self, name: str, observer: Callable[[object], None]) -> None:
        """Call C{observer} with each value of C{name} received (the last one at once, if any)."""
        self._observers.setdefault(name, []).append(observer)
        if name in self.received:
            observer(self.received[name])

    def snapshot(self) -> str | None:
        """The line's JSON, or L{None} when there is nothing to carry."""
        if not self._providers:
            return None
        return json.dumps({name: p() for name, p in self._providers.items()}, separators=(",", ":"))

    def receive(self, text: str) -> None:
        """A C{carry} line's JSON from the predecessor."""
        try:
            parts = json.loads(text)
        except ValueError:
            log.warn("the previous generation carried something unreadable; ignored")
            return
        if not isinstance(parts, dict):
            return
        for name, value in parts.items():
            self.received[name] = value
            for observer in self._observers.get(name, ()):
                observer(value)
