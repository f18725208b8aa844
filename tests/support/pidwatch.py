"""
Read a PID file the instant a new PID is renamed into place (Linux inotify).

A generation writes its PID file just before it says it serves; a test that
signals a PID the moment the file names it must see the rename at once. The
kernel wakes a watcher blocked on inotify within microseconds, and it costs
no CPU meanwhile, unlike polling in a loop, which on a two-core machine also
slows the very processes it waits for. (Measured on c212352, where a SIGHUP in
that window was refused: polling hit it 2 times in 20, twice; this, 12 and 18.)
"""

from __future__ import annotations

import ctypes
import os
import select
import time

from tests.support.procs import DeadlineExceeded, Flip, readPidFile

_IN_MOVED_TO = 0x80
_libc = ctypes.CDLL(None, use_errno=True)


class PidFileWatch:
    """Watches C{flip}'s PID file from now until the test ends."""

    def __init__(self, testCase, flip: Flip) -> None:
        self._flip = flip
        self._fd = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        testCase.addCleanup(os.close, self._fd)
        directory = os.path.dirname(flip.pidFile).encode()
        if _libc.inotify_add_watch(self._fd, directory, _IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch", directory)

    def nextPid(self, old: int | None, deadline: float = 30.0) -> int:
        """The PID the file names instead of C{old}, read as soon as it is renamed in."""
        end = time.monotonic() + deadline
        while (pid := readPidFile(self._flip.pidFile)) in (None, old):
            left = end - time.monotonic()
            if left <= 0:
                said = [line for line in self._flip.log().splitlines() if "[txflip gen" in line]
                raise DeadlineExceeded(
                    f"the PID file still names {old} after {deadline}s; the log ends:\n"
                    + "\n".join(said[-3:])
                )
            select.select([self._fd], [], [], left)
            try:
                os.read(self._fd, 65536)  # the events only wake this up
            except BlockingIOError:
                pass
        self._flip.seen.add(pid)
        return pid
