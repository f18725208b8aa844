"""
SIGHUP, routed to this generation's L{Generation} through the reactor.

twistd installs no SIGHUP handler, so a stray SIGHUP would kill the process
(docs/design.rst): the handler is installed before the app is imported. It does
nothing but note whether an upgrade may start and schedule the work on the
reactor thread.
"""

from __future__ import annotations

import signal

from txflip.core.log import log


class SighupDispatch:
    """Turns SIGHUP into a call to C{generation.upgrade()} on the reactor."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.generation = None

    def install(self) -> None:
        signal.signal(signal.SIGHUP, self._onSignal)

    def _onSignal(self, signum, frame) -> None:
        generation = self.generation
        refusal = (
            "this generation is not serving yet" if generation is None else generation.refusal()
        )
        self._reactor.callFromThread(self._dispatch, refusal)

    def _dispatch(self, refusalAtSignal: str | None) -> None:
        if refusalAtSignal is not None or self.generation is None:
            why = refusalAtSignal or "this generation is not serving yet"
            log.warn("SIGHUP refused: {why}", why=why)
            if self.generation is not None:
                self.generation.events.emit("upgrade-refused", source="SIGHUP", reason=why)
            return
        self.generation.upgrade("SIGHUP")


def handleSignals(generation) -> None:
    """L{txflip.core.generation.Generation.handleSignals}: signals for a program's own reactor."""
    reactor = generation.reactor
    dispatch = SighupDispatch(reactor)
    dispatch.generation = generation
    dispatch.install()
    reactor.addSystemEventTrigger("before", "shutdown", generation.stop)
    generation.exiting.addCallback(lambda _: reactor.running and reactor.stop())
