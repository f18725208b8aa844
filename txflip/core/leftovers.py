"""
What a generation that never served leaves behind: nothing.

A start that fails (a port in use, an app that raises) exits after the control
socket and any unix listeners were bound; their files would stay next to the
PID file, looking like a server that is not there.
"""

from __future__ import annotations

import atexit

from txflip.core.events import Events
from txflip.core.listeners import ListenerRegistry


def removeSocketFilesUnlessServed(registry: ListenerRegistry, events: Events) -> None:
    """At exit, unless this generation ever served, remove the socket files it created."""
    served = False

    def observe(name: str, fields: dict) -> None:
        nonlocal served
        served = served or name == "serving"

    def atExit() -> None:
        if not served:
            registry.removeCreatedPaths()

    events.subscribe(observe)
    atexit.register(atExit)
