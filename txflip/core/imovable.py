"""
The interface a protocol provides to have its connections move to the next
generation at a restart, instead of being closed (L{txflip.core.appmove}).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from zope.interface import Interface


class IMovable(Interface):
    """
    A protocol whose open connections can move to the next generation.

    At a restart the old generation asks each such connection, between two
    of its messages, for its state; the new generation builds a protocol with
    the factory of the listener the connection came in on, gives it the
    state in place of C{connectionMade}, and the connection goes on there.
    """

    def saveMoved() -> bytes | None:
        """
        Called on the old generation at the handoff.

        @return: the app's state for this connection, as bytes, which is also
            consent to move it now; or L{None}: not now (asked again shortly;
            a connection never consenting is closed at the drain's end, as it
            would be without this interface).
        """

    def restoreMoved(state: bytes) -> None:
        """
        Called on the new generation, on a protocol built by the same factory,
        already connected to the moved connection, instead of C{connectionMade}.
        The bytes the old generation had read but not handled are delivered
        right after, through C{dataReceived}.
        """


class ConnectionMoved(ConnectionDone):
    """
    The reason given to C{connectionLost} on the old generation's protocol
    when its connection went on in the next generation: nothing was closed.
    """
