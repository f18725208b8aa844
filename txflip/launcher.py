"""
C{python -m txflip run}: zero-downtime restarts for a program that runs its own
reactor (C{reactor.run()}, C{react()}, a C{python -m myserver} entry point),
unchanged.

The launcher makes this process's generation before the program runs, so every
C{listenTCP}, C{listenUNIX}, C{listenSSL} and endpoint the program opens adopts
the socket its predecessor handed down; the generation is ready by the same
rules as under C{twistd flip}. It then runs the program as C{__main__}, with
every word after the module or script as its arguments. The program's own
C{reactor.run()} serves; the restart signal (SIGHUP unless
C{--restart-signal}) starts the next generation with the same command line;
SIGTERM and SIGINT drain before the reactor stops. Logging is the program's
(L{txflip.programlog}).
"""

from __future__ import annotations

import argparse
import math
import runpy
import sys

USAGE = (
    "python -m txflip run [--pid-file PATH] [--ready-timeout S] [--drain-timeout S] "
    "[--handover overlap|sequential] [--pause-timeout S] "
    "[--control PATH | --no-control] [--fd-store] [--app-notify] [--access-log PATH] "
    "[--metrics ENDPOINT] [--rollback-window S] [--rollback-on-5xx RATIO] "
    "[--reactor NAME] "
    "[--restart-signal NAME] (-m MODULE | SCRIPT) [ARGS...]"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        from txflip.core.startfailure import TXFLIP_RUN

        self.exit(2, f"{TXFLIP_RUN}: error: {message}; usage: {USAGE}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _secondsOrZero(text: str) -> float:
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return _seconds(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction above 0 and at most 1")
    return value


_WITH_A_VALUE = {
    "--pid-file": {"help": "PID file, rewritten by each generation once it serves"},
    "--ready-timeout": {"type": _seconds, "default": 60.0},
    "--drain-timeout": {"type": _seconds, "default": 30.0},
    "--handover": {"choices": ("overlap", "sequential"), "default": "overlap"},
    "--pause-timeout": {"type": _seconds, "default": 30.0},
    "--control": {"help": "control socket path (default: PID file + .control)"},
    "--access-log": {"help": "log HTTP requests to this file (Combined Log Format)"},
    "--metrics": {"help": "serve /metrics (Prometheus) on this endpoint"},
    "--rollback-window": {"type": _secondsOrZero, "default": 0.0},
    "--rollback-on-5xx": {"type": _fraction, "default": 0.0},
    "--reactor": {"help": "the reactor to install, as twistd --reactor names it"},
    "--restart-signal": {
        "default": "HUP",
        "help": "the signal that restarts: HUP (default), USR1 or USR2",
    },
}
_FLAGS = {
    "--no-control": "open no control socket",
    "--fd-store": "keep the listeners in systemd's fd store",
    "--app-notify": "the program speaks sd_notify: its own READY=1 is its readiness",
}


def parser() -> argparse.ArgumentParser:
    """flip's own options, the words before C{-m MODULE} or C{SCRIPT}."""
    p = _Parser(prog="python -m txflip run", usage=USAGE, allow_abbrev=False)
    for name, settings in _WITH_A_VALUE.items():
        p.add_argument(name, **settings)
    for name, text in _FLAGS.items():
        p.add_argument(name, action="store_true", help=text)
    return p


def splitCommandLine(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """
    C{argv} (the words after C{run}) as flip's options, the module to run (or
    L{None} for a script), and the program's command line: C{[SCRIPT, ARGS...]}
    or the module's C{[ARGS...]}.

    flip's options end at C{-m MODULE} or at the first word that is not one
    (the script; C{--} may come before it). Every word after the module or the
    script is the program's, unchanged, as C{python -m} and C{python SCRIPT}
    leave them, an C{--} included.
    """
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "-m":
            if index + 1 == len(argv):
                parser().error("-m needs a MODULE")
            return argv[:index], argv[index + 1], argv[index + 2 :]
        if word.startswith("-m") and not word.startswith("--"):
            return argv[:index], word[2:], argv[index + 1 :]
        if word == "--":
            return argv[:index], None, argv[index + 1 :]
        if not word.startswith("-") or word == "-":
            return argv[:index], None, argv[index:]
        index += 2 if word in _WITH_A_VALUE else 1
    return argv, None, []


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


def main(argv: list[str]) -> int:
    """Run the program named in C{argv} (the words after C{run}) under a generation."""
    from txflip.core.startfailure import TXFLIP_RUN, setProgramName

    setProgramName(TXFLIP_RUN)
    flipArgs, module, program = splitCommandLine(argv)
    args = parser().parse_args(flipArgs)
    if module is None and not program:
        parser().error("name the program: -m MODULE or SCRIPT")

    from txflip.core.signals import restartSignal

    try:
        signum = restartSignal(args.restart_signal)
    except ValueError as e:
        parser().error(str(e))
    reactor = _installReactor(args.reactor)
    from txflip.programlog import showFlipLinesOnStderr

    # The program owns logging; flip's lines are on stderr until it begins.
    showFlipLinesOnStderr(sys.stderr)

    from txflip.core import pidfile
    from txflip.core.service import fatal
    from txflip.host import ConfigError, Host, HostSettings

    try:
        host = Host(reactor, signum)
        generation = host.startGeneration(
            HostSettings(
                pidFile=args.pid_file,
                readyTimeout=args.ready_timeout,
                drainTimeout=args.drain_timeout,
                handover=args.handover,
                pauseTimeout=args.pause_timeout,
                control=args.control,
                noControl=args.no_control,
                fdStore=args.fd_store,
                appNotify=args.app_notify,
                accessLog=args.access_log,
                metrics=args.metrics,
                rollbackWindow=args.rollback_window,
                rollbackOn5xx=args.rollback_on_5xx,
            )
        )
    except (ValueError, ConfigError, pidfile.PIDFileError) as e:
        raise fatal(str(e)) from None

    stopper = None
    if args.handover == "sequential":
        stopper = _sequential(reactor, generation, args, module)

    reactor.callWhenRunning(generation.start)
    generation.handleSignals(signum)

    try:
        if module is not None:
            sys.argv = [module, *program]
            # Imported ahead by a sequential handover: run afresh as __main__
            # (what it imports stays imported), without runpy's warning.
            sys.modules.pop(module, None)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(program)
            runpy.run_path(program[0], run_name="__main__")
    except SystemExit:
        if stopper is not None and stopper.handingOver:
            stopper.finish()
        raise
    if stopper is not None and stopper.handingOver:
        stopper.finish()
    return 0


def _sequential(reactor, generation, args, module: str | None):
    """
    C{--handover sequential}: this generation stops its program for the next
    one; a new generation waits, the program imported, until the previous
    program has stopped (txflip.ownprogram).
    """
    from txflip.core.pause import AppLifecycle
    from txflip.ownprogram import ProgramStop, preImport, waitForTurn

    stopper = ProgramStop(reactor, generation)
    generation.app = AppLifecycle(stopper.stop, lambda: None)
    if generation.inherited is not None and generation.inherited.sequential:
        if module is not None:
            preImport(generation, module)
        waitForTurn(generation, args.ready_timeout)
    return stopper
