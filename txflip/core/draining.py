"""
Starting one generation's drain: after a handover (moving what can move) or
at a final stop. The drain and the mover themselves are L{txflip.core.drain}
and L{txflip.core.connmove}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from txflip.core.connmove import ConnectionMover
from txflip.core.drain import Drain


def startDraining(
    generation,
    handedOver: bool,
    transfer=None,
    arriving: Callable[[], bool] = lambda: False,
) -> tuple[object, ConnectionMover | None, Deferred]:
    """
    Drain C{generation}'s connections. After a handover, idle HTTP/1.x
    connections move to the successor over C{transfer}, and the drain leaves
    them to the mover, which goes on while C{arriving()} says connections may
    still arrive from this generation's own predecessor. A role with its own
    drain (a leader of workers) gets C{transfer} instead.

    @return: the drain, the mover (or L{None}) and a L{Deferred} firing with
        the number of connections aborted at the deadline.
    """
    own = generation.role.newDrain(handedOver, transfer if handedOver else None)
    mover = None
    if own is None and handedOver and transfer is not None:
        mover = ConnectionMover(
            generation.reactor,
            generation.tracker,
            generation.registry,
            transfer,
            generation.events,
            generation.drainTimeout,
            arriving=arriving,
        )
    generation.events.emit(
        "draining",
        handedOver=handedOver,
        connections=len(generation.tracker.open()),
        moving=mover is not None or bool(getattr(own, "moving", False)),
    )
    drain = own or Drain(
        generation.reactor,
        generation.tracker,
        generation.drainTimeout,
        claims=mover,
        closeSpread=generation.closeSpread,
        handedOver=handedOver,
    )
    if mover is not None:
        mover.start()
    return drain, mover, drain.start()


def shutDown(generation) -> Deferred:
    """
    A final shutdown (SIGTERM, SIGINT): close every listener, drain, and remove
    the PID file if it still names this process.
    """
    from txflip.core import pidfile
    from txflip.core.log import log

    log.info("shutting down: closing listeners and draining")
    stopped = maybeDeferred(generation.registry.stopAll)
    stopped.addCallback(lambda _: startDraining(generation, handedOver=False)[2])

    def drained(_) -> None:
        if generation.pidFile:
            pidfile.removePIDIfOurs(generation.pidFile)

    return stopped.addCallback(drained)


def stopForGood(generation) -> Deferred:
    """
    L{txflip.core.generation.Generation.stop}: what a SIGTERM does in each state.

    @return: fires once the generation has nothing left to do.
    """
    from txflip.core.log import log
    from txflip.core.state import State

    if generation.restarts.programStopping:
        # A sequential handover stops the program's reactor: the handover
        # goes on without it (txflip.ownprogram).
        return succeed(None)
    generation.role.stopping()
    if generation.state is State.HANDED_OVER:
        # Already draining; its end fires exiting.
        done: Deferred = Deferred()
        generation.exiting.addBoth(lambda _: done.callback(None))
        return done
    neverServed = generation.state is State.STARTING
    generation.restarts.dropQueued("this generation is shutting down")
    if generation.startup.link is not None and not neverServed:
        generation.startup.link.retired("stopping")
    if generation.state is not State.STOPPING:
        generation._moveTo(State.STOPPING)
    stopped = generation.restarts.abandonAttempt()
    if neverServed and generation.inherited is not None:
        # The sockets still belong to the generation that started this one.
        log.info("stopping before serving: letting go of inherited listeners")
        stopped.addCallback(lambda _: generation.registry.releaseAll())
    elif not generation.exiting.called:
        stopped.addCallback(lambda _: shutDown(generation))
        stopped.addCallback(lambda _: generation._exit("shut down"))
    return stopped
