"""
The WebSocket layer of a connection that moves (Autobahn's server protocol,
through a factory or through C{WebSocketResource} in a C{Site}).

txflip carries the outcome of the opening handshake (the request's URI and
headers, the subprotocol) and the frame parser's unread bytes, and moves a
WebSocket only between messages: not inside a fragmented message, nor while
a frame is being written or waits to be sent, nor while a ping waits for its
pong. The new generation's protocol is connected as Autobahn connects any
(its opening handshake timer cancelled), put in the open state as its
handshake would, and neither C{onConnect} nor C{onOpen} is called again.

A WebSocket with an extension in use (permessage-deflate) stays: a
compression context cannot move, and one without it is not worth the
difference. TLS stays too (its session lives in the old process).
"""

from __future__ import annotations

import sys
import urllib.parse
from types import SimpleNamespace

from twisted.web.http_headers import Headers
from twisted.web.server import Site

from txflip.core.twistedprivate import startAutoPing, webSocketFactoryOf

STAYS_EXTENSION = "a WebSocket extension (permessage-deflate) in use"
STAYS_WEBSOCKET_CLOSING = "WebSocket closing"


def _serverProtocolClass():
    module = sys.modules.get("autobahn.websocket.protocol")
    return getattr(module, "WebSocketServerProtocol", None)


def isWebSocket(protocol) -> bool:
    """Whether C{protocol} is an Autobahn WebSocket server connection."""
    webSocket = _serverProtocolClass()
    return webSocket is not None and isinstance(protocol, webSocket)


def webSocketWait(protocol) -> tuple[str, str] | None:
    """
    Why the WebSocket C{protocol} cannot move now (C{("busy", why)}) or ever
    (C{("stays", why)}); L{None} when it is between messages.
    """
    if protocol.state == protocol.STATE_CONNECTING:
        return ("busy", "its opening handshake is under way")
    if protocol.state != protocol.STATE_OPEN:
        return ("stays", STAYS_WEBSOCKET_CLOSING)
    if protocol.websocket_extensions_in_use:
        return ("stays", STAYS_EXTENSION)
    if protocol.inside_message or protocol.current_frame is not None:
        return ("busy", "a WebSocket message is being read")
    if (
        protocol.send_state != protocol.SEND_STATE_GROUND
        or protocol.send_queue
        or protocol.triggered
    ):
        return ("busy", "a WebSocket message is being written")
    if protocol.autoPingPending is not None:
        return ("busy", "a WebSocket ping waits for its pong")
    return None


def unreadFrames(protocol) -> bytes:
    """Bytes of the next frames, read and not parsed yet."""
    return bytes(protocol.data)


def saveWebSocket(protocol) -> dict:
    """The outcome of C{protocol}'s opening handshake, as JSON-ready values."""
    return {
        "uri": protocol.http_request_uri,
        "host": protocol.http_request_host,
        "headers": dict(protocol.http_headers),
        "version": protocol.websocket_version,
        "origin": protocol.websocket_origin,
        "protocols": list(protocol.websocket_protocols),
        "protocol": protocol.websocket_protocol_in_use,
    }


def _requestFor(path: bytes) -> SimpleNamespace:
    """
    What a C{Site} reads of a request to find the resource that serves C{path}
    (a resource whose C{getChild} reads more does not take moved WebSockets).
    """
    return SimpleNamespace(
        method=b"GET",
        uri=path,
        path=path,
        args={},
        requestHeaders=Headers(),
        prepath=[],
        postpath=list(map(urllib.parse.unquote_to_bytes, path[1:].split(b"/"))),
    )


def webSocketFactoryFor(factory, uri: str):
    """
    The WebSocket factory that serves C{uri} behind the listener's C{factory}:
    the factory itself, or the one of the C{WebSocketResource} at the URI's
    path in a C{Site}; L{None} if there is none.
    """
    if not isinstance(factory, Site):
        return factory
    module = sys.modules.get("autobahn.twisted.resource")
    resourceClass = getattr(module, "WebSocketResource", None)
    path = urllib.parse.urlsplit(uri).path.encode() or b"/"
    try:
        resource = factory.getResourceFor(_requestFor(path))
    except Exception:
        return None
    if resourceClass is None or not isinstance(resource, resourceClass):
        return None
    return webSocketFactoryOf(resource)


def restoreWebSocket(protocol, saved: dict) -> None:
    """Put the just-connected C{protocol} where C{saved}'s handshake left the old one."""
    uri = saved["uri"]
    parts = urllib.parse.urlsplit(uri)
    protocol.http_request_uri = uri
    protocol.http_request_path = parts.path
    protocol.http_request_params = urllib.parse.parse_qs(parts.query)
    protocol.http_request_host = saved["host"]
    protocol.http_headers = dict(saved["headers"])
    protocol.websocket_version = saved["version"]
    protocol.websocket_origin = saved["origin"]
    protocol.websocket_protocols = list(saved["protocols"])
    protocol.websocket_extensions = []
    protocol.websocket_protocol_in_use = saved["protocol"]
    protocol.websocket_extensions_in_use = []
    if protocol.openHandshakeTimeoutCall is not None:
        protocol.openHandshakeTimeoutCall.cancel()
        protocol.openHandshakeTimeoutCall = None
    protocol.state = protocol.STATE_OPEN
    protocol.inside_message = False
    protocol.current_frame = None
    startAutoPing(protocol)
    opened = getattr(protocol, "is_open", None)
    if opened is not None and not opened.called:
        opened.callback(None)
