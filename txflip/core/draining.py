"""
Starting one generation's drain: after a handover (moving what can move) or
at a final stop. The drain and the mover themselves are L{txflip.core.drain}
and L{txflip.core.connmove}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

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
