"""Where a server's control socket lives: shared by the server and the C{txflip} client."""

CONTROL_SUFFIX = ".control"


def defaultControlPath(pidFile: str) -> str:
    """Where the control socket of the server with this PID file lives."""
    return pidFile + CONTROL_SUFFIX
