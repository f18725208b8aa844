"""Where the control socket lives; shared by the server and the Twisted-free C{txflip} command."""

from __future__ import annotations

CONTROL_SUFFIX = ".control"


def defaultControlPath(pidFile: str) -> str:
    """Where the control socket of the server with this PID file lives."""
    return pidFile + CONTROL_SUFFIX
