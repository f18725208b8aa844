"""
Lifecycle events of one generation, for whoever reports them (logs, systemd, the control socket).

Events and their fields:

  serving           first (bool), listeners (list of keys)
  upgrade-started   source, childPid, nextGeneration
  child-ready       childPid, ms
  upgrade-succeeded childPid, ms
  upgrade-failed    childPid, reason, ms
  upgrade-refused   source, reason
  draining          handedOver (bool), connections, moving (bool: connections-moved follows)
  connections-moved moved, stayed (reason -> count), failure (why moving was given up, or None),
                    ms, final (bool: False once every idle connection has moved while
                    waiting ones, busy or still arriving, may follow), waiting (int),
                    arriving (bool: connections still arrive from the generation before)
  exiting           handedOver (bool)
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

Observer = Callable[[str, dict], None]

_log = Logger()


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
