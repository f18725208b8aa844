"""
C{python -m txflip run}: zero-downtime restarts for a program that runs its own
reactor (C{reactor.run()}, C{react()}, a C{python -m myserver} entry point),
unchanged.

The launcher makes this process's generation before the program runs, so every
C{listenTCP}, C{listenUNIX}, C{listenSSL} and endpoint the program opens adopts
the socket its predecessor handed down; the generation is ready by the same
rules as under C{twistd flip}. It then runs the program as C{__main__}. The
program's own C{reactor.run()} serves; SIGHUP starts the next generation with
the same command line; SIGTERM and SIGINT drain before the reactor stops.
"""

from __future__ import annotations

import argparse
import math
import runpy
import sys

USAGE = (
    "python -m txflip run [--pid-file PATH] [--ready-timeout S] [--drain-timeout S] "
    "[--control PATH | --no-control] [--fd-store] [--app-notify] [--reactor NAME] "
    "(-m MODULE | SCRIPT) [ARGS...]"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        from txflip.core.startfailure import errorLine

        self.exit(2, f"{errorLine(message)}; usage: {USAGE}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m txflip run", usage=USAGE, allow_abbrev=False)
    p.add_argument("--pid-file", help="PID file, rewritten by each generation once it serves")
    p.add_argument("--ready-timeout", type=_seconds, default=60.0)
    p.add_argument("--drain-timeout", type=_seconds, default=30.0)
    p.add_argument("--control", help="control socket path (default: PID file + .control)")
    p.add_argument("--no-control", action="store_true", help="open no control socket")
    p.add_argument(
        "--fd-store", action="store_true", help="keep the listeners in systemd's fd store"
    )
    p.add_argument(
        "--app-notify",
        action="store_true",
        help="the program speaks sd_notify: its own READY=1 is its readiness",
    )
    p.add_argument("--reactor", help="the reactor to install, as twistd --reactor names it")
    p.add_argument("-m", dest="module", help="run this module as __main__, like python -m")
    p.add_argument(
        "program", nargs=argparse.REMAINDER, help="SCRIPT [ARGS...] or the module's ARGS"
    )
    return p


def _installReactor(name: str | None):
    if name:
        from twisted.application.reactors import NoSuchReactor, installReactor

        try:
            installReactor(name)
        except NoSuchReactor:
            from txflip.core.startfailure import errorLine

            raise SystemExit(
                errorLine(f"no reactor named {name!r}; `twistd --help-reactors` lists them")
            ) from None
    from twisted.internet import reactor

    return reactor


def _logToStandardOutput() -> None:
    """
    Log as C{twistd -n} does, so the generation's lines (and the program's) are
    seen; a program that begins logging itself adds its own observer too.
    """
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)


def main(argv: list[str]) -> int:
    """Run the program named in C{argv} (the words after C{run}) under a generation."""
    from txflip.core.startfailure import TXFLIP_RUN, setProgramName

    setProgramName(TXFLIP_RUN)
    args = parser().parse_args(argv)
    if args.module is None and not args.program:
        parser().error("name the program: -m MODULE or SCRIPT")
    reactor = _installReactor(args.reactor)
    _logToStandardOutput()

    from txflip.core import pidfile
    from txflip.core.service import fatal
    from txflip.host import ConfigError, Host, HostSettings

    try:
        host = Host(reactor)
        generation = host.startGeneration(
            HostSettings(
                pidFile=args.pid_file,
                readyTimeout=args.ready_timeout,
                drainTimeout=args.drain_timeout,
                control=args.control,
                noControl=args.no_control,
                fdStore=args.fd_store,
                appNotify=args.app_notify,
            )
        )
    except (ValueError, ConfigError, pidfile.PIDFileError) as e:
        raise fatal(str(e)) from None

    reactor.callWhenRunning(generation.start)
    generation.handleSignals()

    if args.module is not None:
        sys.argv = [args.module, *args.program]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script, *rest = args.program
        sys.argv = [script, *rest]
        runpy.run_path(script, run_name="__main__")
    return 0
