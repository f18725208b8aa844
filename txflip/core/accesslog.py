"""
C{--access-log PATH}: the HTTP access log, in the Combined Log Format, written
straight to its file by every generation.

Twisted's C{HTTPFactory} writes access lines to the log (without C{logPath})
or to a file it opens without C{O_APPEND}, one write per line. Here each
generation opens the file with C{O_APPEND}, so two generations writing during
a handover never overwrite each other's lines, and gathers the lines of a
moment into one write (each write ends with a whole line, so lines never
interleave). L{AccessLog.reopen} writes what is pending to the file it was
meant for, then opens the path again: after C{mv access.log access.log.1},
the lines that follow land in a new C{access.log}, as logrotate expects.
"""

from __future__ import annotations

import os

from twisted.web.http import HTTPFactory, combinedLogFormatter, datetimeToLogString

FLUSH_SECONDS = 0.1
"""At most this long between a request's end and its line reaching the file."""
FLUSH_BYTES = 64 * 1024
"""Write at once when this much is pending."""


class AccessLog:
    """
    One access-log file, appended to.

    @param path: the file; created (0644, less the umask) if missing.
    @raise OSError: it cannot be opened for appending.
    """

    def __init__(self, reactor, path: str) -> None:
        self._reactor = reactor
        self.path = os.path.abspath(path)
        self._fd = self._open()
        self._pending: list[str] = []
        self._pendingSize = 0
        self._flushCall = None
        self._second = -1
        self._stamp = ""
        self.lines = 0
        """Lines handed to this log (written, or pending)."""

    def _open(self) -> int:
        return os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o644
        )

    def attach(self, factory):
        """
        Have C{factory}, if it serves HTTP, log its requests here; return it.
        A factory whose C{log} was set on it already (txflip's metrics
        endpoint, which logs nothing) is left alone.
        """
        if (
            isinstance(factory, HTTPFactory)
            and "log" not in vars(factory)
            and not getattr(factory, "txflipOwn", False)
        ):
            # An instance attribute: the factory's own log (the twisted log,
            # or its logPath) is never written to.
            factory.log = self.logRequest
        return factory

    def logRequest(self, request) -> None:
        """Log one finished request (C{HTTPFactory.log}'s contract)."""
        now = int(self._reactor.seconds())
        if now != self._second:
            self._second = now
            self._stamp = datetimeToLogString(now)
        self.write(combinedLogFormatter(self._stamp, request) + "\n")

    def write(self, line: str) -> None:
        """Queue one whole line (ending with a newline)."""
        if self._fd < 0:
            return  # closed: the process is on its way out
        self._pending.append(line)
        self._pendingSize += len(line)
        self.lines += 1
        if self._pendingSize >= FLUSH_BYTES:
            self.flush()
        elif self._flushCall is None:
            self._flushCall = self._reactor.callLater(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write every pending line now."""
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        if not self._pending or self._fd < 0:
            return
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending.clear()
        self._pendingSize = 0
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def reopen(self) -> None:
        """Write what is pending to the file open now, then open the path again."""
        self.flush()
        fd = self._open()
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        """Write what is pending and close the file."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
