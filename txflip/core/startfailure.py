"""
A new generation that dies of an uncaught exception before it serves tells
its parent why.

twistd runs flip's C{makeService}, then opens its log file, starts the
services and runs the reactor. An exception on the way ends the process with
a traceback on standard error, which under a detached twistd is /dev/null;
the parent would only learn the exit status. Until this generation serves,
an except hook also writes the exception, as one line, on the channel.
"""

from __future__ import annotations

import os
import sys
import traceback

from txflip.core.channel import reportFailureSynchronously


def describe(error: BaseException) -> str:
    """C{Type: message (at file:line)}, naming the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


class StartFailureReporter:
    """
    Reports an uncaught exception to the parent, until L{close}.

    It writes to its own duplicate of the channel's descriptor: the channel
    itself is adopted by the reactor (and its descriptor closed) once the
    reactor runs.
    """

    def __init__(self, controlFd: int) -> None:
        try:
            self._fd: int | None = os.dup(controlFd)
        except OSError:
            self._fd = None
        self._previous = sys.excepthook
        sys.excepthook = self._hook

    def _hook(self, kind, value, tb) -> None:
        if self._fd is not None and value is not None:
            reportFailureSynchronously(self._fd, describe(value))
        self._previous(kind, value, tb)

    def observe(self, name: str, fields: dict) -> None:
        """An L{Events} observer: once this generation serves, the parent has let go."""
        if name == "serving":
            self.close()

    def close(self) -> None:
        if sys.excepthook == self._hook:
            sys.excepthook = self._previous
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
