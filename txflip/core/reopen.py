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


class GenerationLogs:
    """
    A generation's log files: its access log (C{--access-log}), and every file
    SIGUSR1 reopens here and, passed on, in the other live generations.

    @ivar accessLog: where the app's HTTP requests are logged, if anywhere.
    @ivar files: the files L{reopen} reopens.
    """

    def __init__(self, generation) -> None:
        self._generation = generation
        self.accessLog = None
        self.files = LogFiles()

    def useAccessLog(self, path: str):
        """
        Log every HTTP request the app serves to C{path} (Combined Log Format),
        written directly and reopened by L{reopen}. Its host closes it
        (C{AccessLog.close}) once the reactor has stopped.

        @raise OSError: the file cannot be opened for appending.
        """
        from txflip.core.accesslog import AccessLog

        self.accessLog = AccessLog(self._generation.reactor, path)
        self.files.add(f"the access log {self.accessLog.path}", self.accessLog.reopen)
        return self.accessLog

    def watch(self, factory) -> None:
        """Log the requests C{factory} serves, if there is an access log."""
        if self.accessLog is not None:
            self.accessLog.attach(factory)

    def reopen(
        self, source: str = "SIGUSR1", tell: tuple[str, ...] = (PREDECESSOR, SUCCESSOR)
    ) -> list[str]:
        """
        Reopen this process's log files, and pass the word on to the other
        live generations in the directions C{tell} names (and to this
        generation's workers).

        @return: what was reopened here.
        """
        generation = self._generation
        reopened = self.files.reopen()
        log.info(
            "{source}: reopened {files}",
            source=source,
            files=", ".join(reopened) or "no log files (none to reopen)",
        )
        if PREDECESSOR in tell and generation.startup.link is not None:
            generation.startup.link.reopenLogs()
        if SUCCESSOR in tell:
            generation.restarts.tellSuccessorToReopenLogs()
        generation.role.reopenLogs()
        return reopened

    def fromSuccessor(self) -> None:
        """The successor was told: pass it on to the predecessor only."""
        self.reopen(f"generation {self._generation.number + 1}", tell=(PREDECESSOR,))

    def fromPredecessor(self) -> None:
        """The predecessor was told: pass it on to the successor only."""
        self.reopen(f"generation {self._generation.number - 1}", tell=(SUCCESSOR,))
