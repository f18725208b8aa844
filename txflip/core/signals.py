"""
The restart signal (SIGHUP unless C{--restart-signal} names another), routed to
this generation's L{Generation} through the reactor.

twistd installs no SIGHUP handler, so a stray SIGHUP would kill the process
(docs/design.rst): the handler is installed before the app is imported. It does
nothing but note whether an upgrade may start and schedule the work on the
reactor thread.

An app may install a handler of its own for the same signal (Buildbot reloads
its configuration on SIGHUP), which silently ends restarts by signal;
L{TakeoverWatch} notices and says so once.
"""

from __future__ import annotations

import signal

from twisted.internet.task import LoopingCall

from txflip.core.log import log

RESTART_SIGNALS = ("HUP", "USR1", "USR2")
"""The signals flip may restart on: ones that only a person or a supervisor sends."""

_FLIPS_OWN = {
    "TERM": "flip drains and exits on SIGTERM",
    "INT": "flip drains and exits on SIGINT",
    "CHLD": "the reactor learns that its child processes exited by SIGCHLD",
    "KILL": "SIGKILL cannot be caught",
    "STOP": "SIGSTOP cannot be caught",
}


def restartSignal(name: str) -> signal.Signals:
    """
    The signal C{--restart-signal name} names: C{USR2}, C{SIGUSR2}, C{usr2}.

    @raise ValueError: a one-line message saying what is wrong and what to give.
    """
    short = name.strip().upper().removeprefix("SIG")
    choices = ", ".join(RESTART_SIGNALS[:-1]) + " or " + RESTART_SIGNALS[-1]
    if short in RESTART_SIGNALS:
        return signal.Signals["SIG" + short]
    if short in _FLIPS_OWN:
        raise ValueError(f"--restart-signal {name}: {_FLIPS_OWN[short]}; give {choices}")
    if "SIG" + short in signal.Signals.__members__:
        raise ValueError(
            f"--restart-signal {name}: flip restarts only on a signal that nothing but "
            f"you or a supervisor sends; give {choices}"
        )
    raise ValueError(f"--restart-signal {name}: no such signal; give {choices}")


class RestartSignalDispatch:
    """Turns the restart signal into a call to C{generation.upgrade()} on the reactor."""

    def __init__(self, reactor, signum: int = signal.SIGHUP) -> None:
        self._reactor = reactor
        self.signum = signal.Signals(signum)
        self.generation = None

    @property
    def name(self) -> str:
        """C{SIGHUP}, C{SIGUSR2}: what the log lines call it."""
        return self.signum.name

    def install(self) -> None:
        signal.signal(self.signum, self._onSignal)

    def _onSignal(self, signum, frame) -> None:
        generation = self.generation
        refusal = (
            "this generation is not serving yet" if generation is None else generation.refusal()
        )
        self._reactor.callFromThread(self._dispatch, refusal)

    def _dispatch(self, refusalAtSignal: str | None) -> None:
        if refusalAtSignal is not None or self.generation is None:
            why = refusalAtSignal or "this generation is not serving yet"
            log.warn("{signal} refused: {why}", signal=self.name, why=why)
            if self.generation is not None:
                self.generation.events.emit("upgrade-refused", source=self.name, reason=why)
            return
        self.generation.upgrade(self.name)


def flipHandles(signum: int) -> bool:
    """Whether the handler for C{signum} is a L{RestartSignalDispatch}'s, whichever one."""
    handler = signal.getsignal(signum)
    return isinstance(getattr(handler, "__self__", None), RestartSignalDispatch)


class TakeoverWatch:
    """
    Warns once if flip's handler for the restart signal was replaced (by the app,
    usually as it starts), since that signal then restarts nothing.

    It looks when L{check} is called (the host calls it once the generation
    serves, when the app has been built and started) and then every
    C{interval} seconds, for an app that installs its handler later.

    @param reload: how to restart without the signal, for the warning
        (C{restart with `txflip reload --pid-file /run/app.pid`}).
    """

    interval = 5.0

    def __init__(self, clock, signum: int, reload: str, handled=flipHandles) -> None:
        self._signum = signal.Signals(signum)
        self._reload = reload
        self._handled = handled
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self.warned = False

    def start(self) -> None:
        """Check now, then every C{interval} seconds until the warning is given."""
        if not self._loop.running and not self.warned:
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        if self.warned or self._handled(self._signum):
            return
        self.warned = True
        self.stop()
        name = self._signum.name
        other = next(s for s in ("USR2", "USR1") if "SIG" + s != name)
        log.warn(
            "the app installed its own {signal} handler, so {signal} no longer restarts "
            "unless that handler calls flip's in turn: {reload}, or give flip another "
            "signal, e.g. --restart-signal {other}",
            signal=name,
            reload=self._reload,
            other=other,
        )


def handleSignals(generation, restartSignal: int = signal.SIGHUP) -> None:
    """L{txflip.core.generation.Generation.handleSignals}: signals for a program's own reactor."""
    reactor = generation.reactor
    dispatch = RestartSignalDispatch(reactor, restartSignal)
    dispatch.generation = generation
    dispatch.install()
    reactor.addSystemEventTrigger("before", "shutdown", generation.stop)
    generation.exiting.addCallback(lambda _: reactor.running and reactor.stop())
