"""
The one logger txflip writes through, so that every line names PID and generation.
"""

from __future__ import annotations

import os

from twisted.logger import Logger

_generation = 1


def setGeneration(generation: int) -> None:
    """Record which generation this process is, for every later log line."""
    global _generation
    _generation = generation


def generation() -> int:
    """The generation of this process: 1 for the first start."""
    return _generation


class RestartLogger:
    """
    A L{Logger} whose lines start with C{[txflip gen N pid P]}.

    Every line about a restart must name the process and its generation; putting
    it in the format here means no call site can forget it.
    """

    def __init__(self, namespace: str = "txflip", observer=None) -> None:
        self._log = Logger(namespace=namespace, observer=observer)

    def _emit(self, level: str, fmt: str, **kw: object) -> None:
        prefix = "[txflip gen {txflip_generation} pid {txflip_pid}] "
        getattr(self._log, level)(
            prefix + fmt, txflip_generation=_generation, txflip_pid=os.getpid(), **kw
        )

    def info(self, fmt: str, **kw: object) -> None:
        self._emit("info", fmt, **kw)

    def warn(self, fmt: str, **kw: object) -> None:
        self._emit("warn", fmt, **kw)

    def error(self, fmt: str, **kw: object) -> None:
        self._emit("error", fmt, **kw)

    def critical(self, fmt: str, **kw: object) -> None:
        self._emit("critical", fmt, **kw)


log = RestartLogger()
