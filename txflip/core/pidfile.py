"""
The PID file: written atomically, never followed through a symlink.

Each generation writes it once it serves, by writing a temporary file in the
same directory and renaming it over the old one, so a reader sees the old PID
or the new one and never a partial file. Only the generation that the file
names removes it, at its final shutdown.
"""

from __future__ import annotations

import errno
import os
import tempfile


class PIDFileError(Exception):
    """The PID file cannot be used; the message says why and what to do."""


def checkWritableDirectory(path: str) -> None:
    """
    Fail early, with an actionable message, when C{path} could not be written.

    A real file is created and removed in its directory, since permission bits
    alone say nothing about read-only mounts or other users' directories.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PIDFileError(
            f"PID file directory {directory} does not exist: create it or choose another --pid-file"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".txflip-probe-", dir=directory)
    except OSError as e:
        raise PIDFileError(
            f"cannot write the PID file in {directory} ({e.strerror}): "
            "fix its permissions or choose another --pid-file"
        ) from None
    os.close(fd)
    os.unlink(probe)


def readPID(path: str) -> int | None:
    """The PID named by the file, or L{None} if it is absent, a symlink, or not a PID."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def writePID(path: str, pid: int | None = None) -> None:
    """Replace the file's content with C{pid} (default: this process) in one rename."""
    pid = os.getpid() if pid is None else pid
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".txflip-pid-", dir=directory)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, f"{pid}\n".encode("ascii"))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(temporary)
        raise


def removePIDIfOurs(path: str, pid: int | None = None) -> bool:
    """Remove the file only if it names C{pid} (default: this process)."""
    pid = os.getpid() if pid is None else pid
    if readPID(path) != pid:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def processIsAlive(pid: int) -> bool:
    """Whether C{pid} names a running process (a zombie waiting to be reaped is not)."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno != errno.EPERM:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
