"""
Run a command with listening sockets passed the way systemd passes them:
at descriptors 3, 4, ... with C{LISTEN_FDS}, C{LISTEN_FDNAMES} and
C{LISTEN_PID} set to the PID of the process that runs the command, which is
this one, since it execs it (as C{systemd-socket-activate} does).

    python listenexec.py FD[,FD...] NAME[:NAME...] COMMAND [ARG...]

The descriptors must be inherited from the caller (C{pass_fds}).
"""

from __future__ import annotations

import fcntl
import os
import sys

FIRST = 3


def main(argv: list[str]) -> None:
    fds = [int(fd) for fd in argv[1].split(",")]
    names = argv[2]
    command = argv[3:]
    # Move every descriptor out of the way first, so that none is overwritten
    # while the others are put in place.
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]
    for fd in fds:
        os.close(fd)
    for offset, fd in enumerate(parked):
        os.dup2(fd, FIRST + offset, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_FDNAMES"] = names
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
