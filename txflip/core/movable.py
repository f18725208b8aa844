"""
Which connections can move to the next generation, and what moves with them.

A connection moves only between two requests: an HTTP/1.x channel (Twisted's
L{HTTPChannel}, alone or behind C{Site}'s protocol) right on the socket, with
no request in progress, no pipelined request waiting, no response bytes still
to write, and at most a partial request line read but not yet parsed, which
travels with it. Bytes still in the kernel move with the descriptor.

A protocol that provides L{IMovable} moves too, once it consents
(L{txflip.core.appmove}): right on the socket, with nothing left to write,
and, for an Autobahn WebSocket, between messages (L{txflip.core.wsmove}).
A line receiver's unparsed bytes travel with it, as a WebSocket's unread frames do.

Everything else stays with the old generation and is drained there:
TLS (its session state lives in this process), HTTP/2 (ended by GOAWAY,
L{txflip.core.h2drain}), other protocols, a channel
taken over by another protocol that is not movable (a WebSocket upgrade),
one closing already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.basic import LineReceiver

from txflip.core.drain import httpChannelOf, lowestTransport
from txflip.core.h2drain import h2ConnectionOf
from txflip.core.imovable import IMovable
from txflip.core.twistedprivate import (
    handlingRequest,
    pendingOutput,
    readingHeaders,
    requestsBuffered,
    unparsedInput,
    waitingForTransport,
)
from txflip.core.wsmove import isWebSocket, unreadFrames, webSocketWait

BUFFERED_LIMIT = 64 * 1024
"""Unparsed bytes a connection may carry with it; a channel holding more is busy."""

LISTENER_KEY = "_txflipListenerKey"
"""Set on an adopted connection's transport: the listener it came in on."""

STAYS_TLS = "TLS"
STAYS_HTTP2 = "HTTP/2"
STAYS_NOT_HTTP = "not HTTP/1.x"
STAYS_WRAPPED = "wrapped by another protocol"
STAYS_UPGRADED = "taken over by another protocol"
STAYS_CLOSING = "closing already"

HTTP = "HTTP/1.x"
PLAIN = "plain"
WEBSOCKET = "WebSocket"
KINDS = (HTTP, PLAIN, WEBSOCKET)
"""The kinds of connection that move, as C{txflip reload} counts them."""


@dataclass(frozen=True)
class Verdict:
    """
    What to do with one connection now.

    C{kind} is C{movable} (C{buffered} goes with it), C{busy} (maybe later:
    C{reason} says what it waits for) or C{stays} (never: C{reason} says why).
    C{moves} is the kind of connection (L{KINDS}).
    """

    kind: Literal["movable", "busy", "stays"]
    reason: str = ""
    buffered: bytes = b""
    moves: str = HTTP


def verdict(protocol) -> Verdict:
    """Whether C{protocol}'s connection can move now, later, or never."""
    if IMovable.providedBy(protocol):
        return _appVerdict(protocol)
    channel = httpChannelOf(protocol)
    if channel is None:
        if h2ConnectionOf(protocol) is not None:
            return Verdict("stays", STAYS_HTTP2)
        return Verdict("stays", STAYS_NOT_HTTP)
    transport = channel.transport
    if transport is None:
        return Verdict("stays", STAYS_CLOSING)
    if ISSLTransport.providedBy(transport):
        return Verdict("stays", STAYS_TLS)
    if transport is not lowestTransport(protocol):
        return Verdict("stays", STAYS_WRAPPED)
    if getattr(transport, "protocol", None) is not protocol:
        return Verdict("stays", STAYS_UPGRADED)
    if getattr(transport, "disconnecting", False) or getattr(transport, "disconnected", False):
        return Verdict("stays", STAYS_CLOSING)
    if not channel.persistent:
        return Verdict("stays", STAYS_CLOSING)
    if channel.requests or handlingRequest(channel) or requestsBuffered(channel):
        return Verdict("busy", "a request is in progress")
    if not channel.line_mode or readingHeaders(channel):
        return Verdict("busy", "a request is being read")
    if waitingForTransport(channel) or pendingOutput(transport):
        return Verdict("busy", "a response is still being written")
    buffered = unparsedInput(channel)
    if len(buffered) > BUFFERED_LIMIT:
        return Verdict("busy", "too much unparsed input")
    return Verdict("movable", buffered=buffered)


def _appVerdict(protocol) -> Verdict:
    """The verdict on a protocol that says how to carry its state (L{IMovable})."""
    transport = lowestTransport(protocol)
    if transport is None or getattr(protocol, "transport", None) is None:
        return Verdict("stays", STAYS_CLOSING)
    if ISSLTransport.providedBy(protocol.transport) or ISSLTransport.providedBy(transport):
        return Verdict("stays", STAYS_TLS)
    if getattr(transport, "protocol", None) is not protocol:
        return Verdict("stays", STAYS_WRAPPED)
    if getattr(transport, "disconnecting", False) or getattr(transport, "disconnected", False):
        return Verdict("stays", STAYS_CLOSING)
    if isWebSocket(protocol):
        waits = webSocketWait(protocol)
        if waits is not None:
            return Verdict(*waits, moves=WEBSOCKET)
        moves, buffered = WEBSOCKET, unreadFrames(protocol)
    else:
        # A line receiver's partial line; any other protocol carries its own
        # unparsed bytes in its state.
        moves = PLAIN
        buffered = unparsedInput(protocol) if isinstance(protocol, LineReceiver) else b""
    if pendingOutput(transport):
        return Verdict("busy", "output is still being written", moves=moves)
    if len(buffered) > BUFFERED_LIMIT:
        return Verdict("busy", "too much unparsed input", moves=moves)
    return Verdict("movable", buffered=buffered, moves=moves)


def listenerKeyOf(transport, registry) -> str | None:
    """The key of the listener a connection came in on, in this generation or an earlier one."""
    key = getattr(transport, LISTENER_KEY, None)
    if key is not None:
        return key
    return registry.keyOf(getattr(transport, "server", None))
