"""
Starting one generation's drain: after a handover (moving what can move) or
at a final stop. The drain and the mover themselves are L{txflip.core.drain}
and L{txflip.core.connmove}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred

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
    still arrive from this generation's own predecessor.

    @return: the drain, the mover (or L{None}) and a L{Deferred} firing with
        the number of connections aborted at the deadline.
    """
    mover = None
    if handedOver and transfer is not None:
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
        moving=mover is not None,
    )
    drain = generation.role.newDrain(handedOver) or Drain(
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
