"""
Every private name of Twisted's HTTP/2 server that txflip uses, in one place.

Twisted's HTTP/2 support (C{twisted.web._http2.H2Connection}) is private: it
may change in any release. txflip needs it to end an HTTP/2 connection
gracefully at a drain (L{txflip.core.h2drain}), and reaches into it only
through the functions below, so that a change in Twisted is mended here
alone. Each says which private name it stands on.

C{conn} (the C{h2} library's state machine) and C{streams} are documented
instance variables of C{H2Connection}; they are reached through here too.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    from twisted.web._http2 import H2Connection
except ImportError:  # twisted[http2] is not installed: no connection speaks HTTP/2
    H2Connection = None


def isH2Connection(channel) -> bool:
    """Whether C{channel} is Twisted's HTTP/2 connection (C{twisted.web._http2})."""
    return H2Connection is not None and isinstance(channel, H2Connection)


def stateMachine(connection):
    """The C{h2} library's connection object inside Twisted's (C{H2Connection.conn})."""
    return connection.conn


def streamsInProgress(connection) -> int:
    """Streams Twisted still serves: a request or its response not finished (C{streams})."""
    return len(connection.streams)


def outputBlocked(connection) -> bool:
    """
    Whether Twisted holds frames of its own back, waiting for the transport
    (C{_consumerBlocked}, C{_bufferedControlFrames}).
    """
    return connection._consumerBlocked is not None or bool(connection._bufferedControlFrames)


def writeFrames(connection, frames: bytes) -> None:
    """
    Send C{frames} (whole serialized frames) after every frame Twisted has
    prepared so far, in order: what the C{h2} state machine holds is flushed
    first, and when Twisted is holding frames back for a blocked transport,
    these queue behind them (C{_tryToWriteControlData},
    C{_bufferedControlFrames}, C{_bufferedControlFrameBytes}).
    """
    if not connection._tryToWriteControlData():
        return  # Twisted aborted the connection (too much buffered)
    if outputBlocked(connection):
        connection._bufferedControlFrames.append(frames)
        connection._bufferedControlFrameBytes += len(frames)
    else:
        connection.transport.write(frames)


def flushControlFrames(connection) -> None:
    """Write what the C{h2} state machine has prepared (C{_tryToWriteControlData})."""
    connection._tryToWriteControlData()


def whenStreamDone(connection, callback: Callable[[int], object]) -> None:
    """
    Call C{callback(streamID)} each time Twisted forgets a finished or reset
    stream (after C{H2Connection._requestDone}).
    """
    requestDone = connection._requestDone

    def requestDoneThenCall(streamID: int) -> None:
        requestDone(streamID)
        callback(streamID)

    connection._requestDone = requestDoneThenCall


def whenWritable(connection, callback: Callable[[], object]) -> None:
    """Call C{callback} once the transport takes writes again (C{_consumerBlocked})."""
    blocked = connection._consumerBlocked
    if blocked is None:
        callback()
    else:
        blocked.addCallback(lambda result: (callback(), result)[1])
