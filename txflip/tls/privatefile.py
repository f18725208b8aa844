"""Writing a file that holds a secret: atomically, and never readable by others."""

from __future__ import annotations

import os


def writePrivate(path: str, data: bytes) -> None:
    """
    Replace C{path} with C{data} in one rename, mode 0600 from creation on.

    The temporary file is truncated if a crash left one behind with the same
    PID (PID 1 in a container restarts with the same PID every time).
    """
    temporary = f"{path}.tmp.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    os.replace(temporary, path)
