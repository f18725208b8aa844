"""
Moving a connection whose protocol says how to carry its state
(L{txflip.core.imovable.IMovable}): what travels with it, what the old
generation's app writes to it while it is in transfer, and how the new
generation attaches a protocol to it.

An offer for such a connection names its kind (C{move}: C{plain} or
C{WebSocket}) and the length of the app's state (C{state}); the packet's
payload is the state followed by the bytes read but not handled. A
WebSocket's offer also carries the outcome of its opening handshake
(C{ws}, L{txflip.core.wsmove}). Bytes the old generation's app writes while
the connection is in transfer are held back and travel with C{yours}: the new
generation writes them before anything of its own.
"""

from __future__ import annotations

from txflip.core.imovable import IMovable
from txflip.core.log import log
from txflip.core.movable import HTTP, KINDS, WEBSOCKET, Verdict
from txflip.core.transfer import PACKET_LIMIT, encode
from txflip.core.wsmove import restoreWebSocket, saveWebSocket, webSocketFactoryFor

STATE_LIMIT = 48 * 1024
"""The most bytes of state an app may carry for one connection."""


STAYS_SAVE_FAILED = "its saveMoved failed"
STAYS_TOO_LARGE = "too large to move (state, unread bytes and handshake)"

HEADER_ROOM = 1024
"""Bytes of a packet kept for the offer's own fields (id, key, family...)."""


class SaveFailed(Exception):
    """
    The connection cannot move: the app's C{saveMoved} failed or answered
    wrongly, or what it carries does not fit in one packet.

    @ivar reason: why it stays, as the move report counts it.
    """

    def __init__(self, message: str, reason: str = STAYS_SAVE_FAILED) -> None:
        super().__init__(message)
        self.reason = reason


def saveForMove(protocol, seen: Verdict) -> tuple[dict, bytes] | None:
    """
    The header fields and the payload C{protocol}'s connection moves with, or
    L{None} if the app says not now. Raise L{SaveFailed} if the app's
    C{saveMoved} fails or answers wrongly (the connection then stays).
    """
    if seen.moves == HTTP:
        return {}, seen.buffered
    try:
        state = protocol.saveMoved()
    except Exception as e:
        raise SaveFailed(f"{type(protocol).__name__}.saveMoved raised {e!r}") from e
    if state is None:
        return None
    if not isinstance(state, bytes):
        raise SaveFailed(
            f"{type(protocol).__name__}.saveMoved returned {type(state).__name__}, "
            "not bytes or None"
        )
    if len(state) > STATE_LIMIT:
        raise SaveFailed(
            f"{type(protocol).__name__}.saveMoved returned {len(state)} bytes, "
            f"more than {STATE_LIMIT}"
        )
    header = {"move": seen.moves, "state": len(state)}
    if seen.moves == WEBSOCKET:
        header["ws"] = saveWebSocket(protocol)
    payload = state + seen.buffered
    size = len(encode(header, payload)) + HEADER_ROOM
    if size > PACKET_LIMIT:
        raise SaveFailed(
            f"a {seen.moves} connection of {type(protocol).__name__} needs {size} bytes "
            f"to move, more than {PACKET_LIMIT}",
            STAYS_TOO_LARGE,
        )
    return header, payload


class HeldWrites:
    """
    Holds what the app writes to a connection in transfer, instead of writing
    it: to the client from here if the connection stays, or from the new
    generation, which writes it first, if it moves.
    """

    def __init__(self, transport) -> None:
        self._transport = transport
        self._data: list[bytes] = []
        transport.write = self._data.append
        transport.writeSequence = self._data.extend

    def hold(self, data: bytes) -> None:
        """Hold C{data} again, before anything held since (it was taken, and not sent)."""
        self._data.insert(0, data)

    def take(self) -> bytes:
        """What was written so far (later writes are held still)."""
        taken = b"".join(self._data)
        self._data.clear()
        return taken

    def release(self) -> bytes:
        """Stop holding; return what was held and not taken."""
        del self._transport.write
        del self._transport.writeSequence
        return self.take()


def refusal(factory, header: dict, payload: bytes) -> str | None:
    """Why this generation cannot take the offered connection, or L{None}."""
    moves = header.get("move", HTTP)
    if moves not in KINDS:
        return f"unknown kind of connection {moves!r}"
    if moves == HTTP:
        return None
    state = header.get("state")
    if not isinstance(state, int) or not 0 <= state <= len(payload):
        return "malformed offer"
    if moves == WEBSOCKET:
        ws = header.get("ws")
        if not isinstance(ws, dict) or not isinstance(ws.get("uri"), str):
            return "malformed offer"
        factory = webSocketFactoryFor(factory, ws["uri"])
        if factory is None:
            return f"no WebSocket resource serves {ws['uri']} here"
    protocolClass = getattr(factory, "protocol", None)
    if isinstance(protocolClass, type) and not IMovable.implementedBy(protocolClass):
        return f"{protocolClass.__name__} does not provide IMovable here"
    return None


class _Restoring:
    """
    Builds the protocol of a moved connection with the app's factory; a
    plain protocol's C{connectionMade} is skipped, since C{restoreMoved}
    takes its place (a WebSocket's connects as Autobahn's always do).
    """

    def __init__(self, factory, webSocket: bool) -> None:
        self._factory = factory
        self._webSocket = webSocket
        self.protocol = None

    def buildProtocol(self, addr):
        protocol = self._factory.buildProtocol(addr)
        if protocol is not None and not self._webSocket:
            protocol.connectionMade = _nothing
        self.protocol = protocol
        return protocol


def _nothing() -> None:
    pass


def adoptMoved(
    reactor, factory, fd: int, family: int, header: dict, payload: bytes, written: bytes, track
):
    """
    Adopt a moved app connection into this generation: build its protocol
    with the factory that serves it (C{track}ed, so that it can move again),
    write what the old generation's app wrote in transfer, restore the app's
    state, then deliver the bytes read but not handled. Return the transport.
    """
    length = header["state"]
    state, unread = payload[:length], payload[length:]
    ws = header.get("ws")
    if ws is not None:
        factory = webSocketFactoryFor(factory, ws["uri"])
    restoring = _Restoring(track(factory), webSocket=ws is not None)
    transport = reactor.adoptStreamConnection(fd, family, restoring)
    protocol = restoring.protocol
    if transport is None or protocol is None:
        return None
    if ws is None:
        del protocol.connectionMade
    if not IMovable.providedBy(protocol):
        log.error(
            "a moved connection's new protocol {name} does not provide IMovable; closing it",
            name=type(protocol).__name__,
        )
        transport.loseConnection()
        return transport
    if written:
        transport.write(written)
    try:
        if ws is not None:
            restoreWebSocket(protocol, ws)
        protocol.restoreMoved(state)
        if unread:
            protocol.dataReceived(unread)
    except Exception as e:
        log.error(
            "restoring a moved connection in {name} failed: {error}; closing it",
            name=type(protocol).__name__,
            error=e,
        )
        transport.loseConnection()
    return transport
