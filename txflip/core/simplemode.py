"""When restarts cannot work here: simple mode, graceful shutdown only."""

from __future__ import annotations

import os
import sys

from twisted.python.runtime import platform


def simpleModeReason(pid: int | None = None, platformType: str | None = None) -> str | None:
    """
    Why this process must run in simple mode, or L{None} if restarts work.

    Restarts need a platform that can hand descriptors to a new process
    (not Windows), and a process that may exit after handing over: PID 1 in a
    container cannot, since its exit stops the container.
    """
    platformType = platform.getType() if platformType is None else platformType
    pid = os.getpid() if pid is None else pid
    if platformType != "posix":
        return f"{sys.platform} cannot hand listening sockets to a new process"
    if pid == 1:
        return "running as PID 1 (a container's init): the orchestrator replaces the container"
    return None
