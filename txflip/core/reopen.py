"""
Reopening log files (SIGUSR1), in every live generation.

A log rotation moves the file away and asks the process to open the path
again. During a handover two generations (or more, after restarts in quick
succession) write the same files, and the operator signals the one the PID file
names: it reopens its own files and passes the word on over the handoff
channels, to its predecessor (still draining) and to its successor (still
starting, or taking over). A generation told by its successor passes it on only
to its own predecessor, and one told by its predecessor only to its own
successor, so the word reaches each generation once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from txflip.core.log import log

PREDECESSOR = "predecessor"
SUCCESSOR = "successor"
REOPEN_SIGNAL = signal.SIGUSR1


class LogFiles:
    """The files this process reopens when told to: C{name -> reopen()}."""

    def __init__(self) -> None:
        self._files: dict[str, Callable[[], None]] = {}

    def add(self, name: str, reopen: Callable[[], None]) -> None:
        self._files[name] = reopen

    def __bool__(self) -> bool:
        return bool(self._files)

    def reopen(self) -> list[str]:
        """Reopen every file; one that fails is logged and the others still reopen."""
        reopened = []
        for name, reopen in self._files.items():
            try:
                reopen()
            except OSError as e:
                log.error(
                    "cannot reopen {name}: {error}; still writing to the old file",
                    name=name,
                    error=e,
                )
            else:
                reopened.append(name)
        return reopened


class ReopenSignal:
    """
    SIGUSR1 reopens the log files of every live generation (see the module).

    Installed only where nothing else handles SIGUSR1: not when it is the
    restart signal, and before twistd, which would otherwise rotate its log
    file on it (a rotation, not a reopen).
    """

    def __init__(self, reactor, reopen: Callable[[str], None]) -> None:
        self._reactor = reactor
        self._reopen = reopen

    def install(self) -> bool:
        """Catch SIGUSR1, if nobody does yet; whether it was installed."""
        if signal.getsignal(REOPEN_SIGNAL) not in (signal.SIG_DFL, None):
            return False
        signal.signal(REOPEN_SIGNAL, self._onSignal)
        return True

    def _onSignal(self, signum, frame) -> None:
        self._reactor.callFromThread(self._reopen, "SIGUSR1")
