"""
txflip: zero-downtime restarts for Twisted servers.

On SIGHUP a running generation starts its successor with the same command line,
hands it the listening sockets, waits for it to report ready, and only then stops
accepting, drains what it has in flight, and exits.

The public API is what C{__all__} names; every other module is private. Importing
C{txflip} alone imports no Twisted: the names load on first use.
"""

from __future__ import annotations

from txflip._version import __version__

__all__ = [
    "Generation",
    "GenerationService",
    "IMovable",
    "ConnectionMoved",
    "Outcome",
    "State",
    "current",
    "__version__",
]

_WHERE = {
    "Generation": "txflip.core.generation",
    "current": "txflip.core.generation",
    "GenerationService": "txflip.core.service",
    "IMovable": "txflip.core.imovable",
    "ConnectionMoved": "txflip.core.imovable",
    "Outcome": "txflip.core.parent",
    "State": "txflip.core.state",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'txflip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
