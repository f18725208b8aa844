"""
What flip changes in twistd's own behaviour so that restarts work under it.

- The pidfile: twistd refuses to start while its pidfile names a live process,
  and removes the file at exit even after a newer generation rewrote it
  (docs/design.rst, "twistd's pidfile"). flip takes the file over and writes
  it itself.
- Daemon mode: the first generation may detach (C{twistd} without C{-n},
  e.g. under systemd's C{Type=forking}); its successors are started by an
  already-detached process, so they run with C{--nodaemon} (detaching again
  would hide the PID that reports ready) and log where the first one did.
- The log file: twistd opens C{--logfile} without C{O_APPEND}, so two
  generations writing during a handoff would overwrite each other's lines;
  flip makes twistd open it (and every rotated successor) in append mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from txflip.core import twistedprivate


@dataclass(frozen=True)
class TwistdSettings:
    """What flip took over from twistd's options."""

    pidfile: str | None = None
    successorOptions: list[str] = field(default_factory=list)
    logfile: str | None = None
    logsToStdout: bool = False
    """Whether twistd's log goes to standard output (C{-n} without C{--logfile}, or C{-})."""


def takeOverTwistd(parent) -> TwistdSettings:
    """
    Take the pidfile away from twistd and work out the successor's twistd options.

    @param parent: twistd's C{ServerOptions} (the C{flip} options' parent), or
        L{None} when flip runs under another runner.
    """
    if parent is None or "pidfile" not in parent:
        return TwistdSettings()
    pidfile = parent["pidfile"] or None
    parent["pidfile"] = ""
    successorOptions = ["--pidfile="]
    logfile = parent.get("logfile") or None
    logsToStdout = not parent.get("syslog") and (
        logfile == "-" or (logfile is None and bool(parent.get("nodaemon")))
    )
    if not parent.get("nodaemon"):
        successorOptions.append("--nodaemon")
        if logfile is None and not parent.get("syslog"):
            logfile = "twistd.log"
    if logfile in ("-",) or parent.get("syslog"):
        logfile = None
    if logfile is not None:
        logfile = os.path.abspath(logfile)
        successorOptions.append(f"--logfile={logfile}")
    return TwistdSettings(pidfile, successorOptions, logfile, logsToStdout)


def sameFile(a, b) -> bool:
    """Whether two open files (e.g. standard output and error) are one file, terminal or pipe."""
    try:
        first, second = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def successorArgv(origArgv: list[str], executable: str, options: list[str]) -> list[str]:
    """
    The next generation's command line: this one's, run by this interpreter,
    with C{options} inserted just before the C{flip} subcommand (so that they
    override the same twistd options given earlier).
    """
    argv = [executable, *origArgv[1:]]
    if not options:
        return argv
    try:
        at = argv.index("flip", 1)
    except ValueError:
        return argv
    # An earlier generation inserted the same options: keep one copy.
    before = [arg for arg in argv[:at] if arg not in options]
    return [*before, *options, *argv[at:]]


def openLogFilesForAppending() -> None:
    """
    Make twistd's L{LogFile} open its file with C{O_APPEND}.

    Called from C{makeService}, which runs before twistd opens the log file,
    so that even the first lines a new generation writes land at the end of
    the file rather than over its predecessor's latest lines.
    """
    twistedprivate.openLogFilesForAppending()


def reopenLogFiles() -> None:
    """Open twistd's C{--logfile} again by its path (SIGUSR1, after a C{mv})."""
    twistedprivate.reopenLogFiles()
