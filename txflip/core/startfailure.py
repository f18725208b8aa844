"""
The one way a generation that cannot start says so: L{reportStartFailure}.

Every start failure (bad input before the reactor runs, an app that fails to
start, a ready timeout, an uncaught exception) goes through it: the reason
reaches the parent word for word (a child's stderr may go nowhere), the log,
and standard error as one line, C{PROGRAM: error: REASON}, where C{PROGRAM} is
how the operator started this process (L{setProgramName}).

A new generation that dies of an uncaught exception before it serves also
tells its parent why: twistd runs flip's C{makeService}, then opens its log
file, starts the services and runs the reactor, and an exception on the way
ends the process with a traceback on standard error, which under a detached
twistd is /dev/null. Until this generation serves, L{StartFailureReporter}'s
except hook reports the exception.
"""

from __future__ import annotations

import os
import sys
import traceback

from txflip.core.channel import reportFailureSynchronously
from txflip.core.log import log

TWISTD_FLIP = "twistd flip"
TXFLIP_RUN = "txflip run"

_programName = TWISTD_FLIP


def setProgramName(name: str) -> None:
    """How this process was started (L{TWISTD_FLIP}, L{TXFLIP_RUN}): its errors begin with it."""
    global _programName
    _programName = name


def programName() -> str:
    return _programName


def errorLine(reason: str) -> str:
    """C{PROGRAM: error: REASON}, on one line."""
    return f"{_programName}: error: " + " ".join(reason.split())


def reportStartFailure(reason: str, generation=None, controlFd: int | None = None) -> str:
    """
    Say why this generation cannot start: to its parent first (the caller
    exits next), then to the log, and as L{errorLine} on standard error
    unless the log already shows there. Socket files the generation created
    are removed: it never served, so they are nobody's.

    @param generation: the L{txflip.core.generation.Generation}, once there is one.
    @param controlFd: the channel to the parent, when there is no generation yet.
    @return: the line written on standard error.
    """
    if generation is not None:
        generation.startup.tellPredecessorFailed(reason)
        generation.registry.removeCreatedPaths()
    elif controlFd is not None:
        reportFailureSynchronously(controlFd, reason)
    # The line below says it on standard error; whatever shows log lines there
    # (txflip.programlog) leaves this one out.
    log.error("{reason}", reason=reason, txflip_onStderrAlready=True)
    line = errorLine(reason)
    # The log shows on standard error only once logging has taken sys.stderr over.
    logOnStderr = (
        generation is not None and generation.logShownOnStderr and sys.stderr is not sys.__stderr__
    )
    stream = sys.__stderr__
    if stream is not None and not logOnStderr:
        stream.write(line + "\n")
        stream.flush()
    return line


def describe(error: BaseException) -> str:
    """C{Type: message (at file:line)}, naming the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


class StartFailureReporter:
    """
    Reports an uncaught exception (L{reportStartFailure}), until L{close};
    the traceback follows, as without it.

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
            reportStartFailure(describe(value), controlFd=self._fd)
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
