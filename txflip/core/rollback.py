"""
Giving the traffic back to the previous generation (C{txflip rollback},
C{--rollback-on-5xx}): the newer generation's side.

The previous generation keeps its app running for C{--rollback-window}
seconds after a handover (L{txflip.core.handover}). Within it, the newer one
may ask it to take the traffic back: it accepts again and rewrites the PID
file, and only then does the newer one stop accepting, move its idle
keep-alive connections back, drain and exit.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, gatherResults, succeed

from txflip.core.draining import startDraining
from txflip.core.errorwatch import ServerErrorWatch
from txflip.core.log import log
from txflip.core.state import REFUSALS, State
from txflip.core.transfer import transferPair


class Rollbacks:
    """
    The newer generation's side of a rollback, and the watch over its 5xx
    answers that asks for one by itself (C{--rollback-on-5xx}).
    """

    def __init__(self, generation) -> None:
        self._generation = generation
        self._pending: Deferred | None = None
        self._returnEnd = None
        on5xx, window = generation.rollbackOn5xx, generation.rollbackWindow
        self._errorWatch = (
            ServerErrorWatch(generation, on5xx, window) if on5xx > 0 and window > 0 else None
        )

    def watch(self, factory) -> None:
        """Count the answers of C{factory}, if the 5xx watch is on."""
        if self._errorWatch is not None:
            self._errorWatch.attach(factory)

    def serving(self) -> None:
        """The generation serves: a successor's 5xx watch starts."""
        if self._generation.inherited is not None and self._errorWatch is not None:
            self._errorWatch.start()

    def ask(self, source: str, why: str) -> Deferred:
        """
        Ask the previous generation to take the traffic back.

        @return: a L{Deferred} firing with L{None} once it did, or with a
            one-line reason why not; it never fails.
        """
        generation = self._generation
        link = generation.startup.link
        if generation.state is not State.SERVING:
            refusal = REFUSALS.get(generation.state, "this generation is not serving")
        elif self._pending is not None:
            refusal = "a rollback is already in progress"
        elif link is None or not link.listening:
            refusal = (
                "no previous generation is left to take the traffic back: it has exited "
                "(its rollback window, --rollback-window, is over or was not set)"
            )
        else:
            refusal = None
        if refusal is not None:
            log.warn("{source}: rollback refused: {why}", source=source, why=refusal)
            return succeed(refusal)
        log.info(
            "{source}: asking generation {previous} (PID {parent}) to take the traffic back",
            source=source,
            previous=generation.number - 1,
            parent=link.parentPid,
        )
        self._pending = Deferred()
        link.askRollback(why)
        return self._pending

    def answered(self, refusal: str | None) -> None:
        """The previous generation answered: it took the traffic back, or why not."""
        waiting, self._pending = self._pending, None
        if refusal is None and self._generation.state is State.SERVING:
            self._rolledBackHere()
        elif refusal is not None:
            log.warn("rollback refused by the previous generation: {why}", why=refusal)
        if waiting is not None:
            waiting.callback(refusal)

    def _rolledBackHere(self) -> None:
        """The predecessor accepts again: stop accepting, drain, and exit."""
        generation = self._generation
        generation._moveTo(State.HANDED_OVER)
        if self._errorWatch is not None:
            self._errorWatch.stop()
        link = generation.startup.link
        link.retired("rolled back")
        log.info(
            "rolled back: generation {previous} (PID {parent}) serves again; draining",
            previous=generation.number - 1,
            parent=link.parentPid,
        )
        generation.events.emit("rolling-back", parentPid=link.parentPid)
        generation.registry.pauseAll()
        # Idle keep-alive connections move back over a channel of their own;
        # the predecessor's end stays open here too, until this process exits.
        ours, self._returnEnd = transferPair()
        link.returnChannel(self._returnEnd.fileno())
        drain, mover, drained = startDraining(generation, handedOver=True, transfer=ours)
        everything = [drained] if mover is None else [drained, mover.done]
        gatherResults(everything).addBoth(lambda _: generation._handedOverForGood())
