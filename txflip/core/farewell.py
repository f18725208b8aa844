"""
Telling long-lived connections that the drain began, so they close in time.

HTTP/1.x connections close by themselves once told C{Connection: close}; a
WebSocket, or an app's own protocol, stays open until someone says goodbye.
When the drain starts, each such connection is told once, at a moment spread
over the close-spread window, so that its clients do not all reconnect to the
new generation at the same instant:

  - An Autobahn WebSocket server connection (through a factory or through
    C{WebSocketResource}) gets a close frame: 1012 (Service Restart) after a
    handoff, 1001 (Going Away) at a final shutdown.
  - A protocol with a C{drainStarted(deadline, handedOver)} method (see
    L{IDrainAware}) has it called.

Whatever is still open at the drain's deadline is aborted, as any connection.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable

from zope.interface import Interface

from txflip.core.log import log

SERVICE_RESTART = 1012
GOING_AWAY = 1001


class IDrainAware(Interface):
    """
    A protocol that closes by itself when asked, e.g. by telling its client to
    reconnect. Providing the interface is optional: the method is enough.
    """

    def drainStarted(deadline: float, handedOver: bool) -> None:
        """
        This generation is draining: close this connection before C{deadline}.

        @param deadline: when the connection is aborted if still open, on the
            reactor's clock (C{reactor.seconds()}).
        @param handedOver: C{True} when a newer generation serves (the client
            may reconnect at once), C{False} at a final shutdown.
        """


Say = Callable[[float, bool], bool]
"""Tell one connection; C{False} means "not now, ask again at the next check"."""


def _autobahnServerProtocol():
    module = sys.modules.get("autobahn.websocket.protocol")
    return getattr(module, "WebSocketServerProtocol", None)


def _dropMessagesAfterClose(protocol) -> None:
    """
    Once the close frame is out, a message the app sends on this connection (an
    echo of one the client sent before it saw the close) is dropped, as the
    protocol requires, instead of raising C{Disconnected} inside the app's
    C{onMessage}, which would abort the connection before the close handshake.
    """
    sendMessage = protocol.sendMessage

    def sendMessageUnlessClosing(*args, **kwargs):
        if protocol.state == protocol.STATE_OPEN:
            return sendMessage(*args, **kwargs)
        return None

    protocol.sendMessage = sendMessageUnlessClosing


def _closeWebSocket(protocol, reactor) -> Say:
    def say(deadline: float, handedOver: bool) -> bool:
        if protocol.state == protocol.STATE_CONNECTING:
            return False
        if protocol.state == protocol.STATE_OPEN:
            code, reason = (
                (SERVICE_RESTART, b"service restart") if handedOver else (GOING_AWAY, b"going away")
            )
            # Autobahn aborts a connection whose client has not answered the close
            # within closeHandshakeTimeout (1s by default), which can drop the
            # close frame itself on a busy machine; the drain's deadline is the limit.
            protocol.closeHandshakeTimeout = max(
                protocol.closeHandshakeTimeout or 0, deadline - reactor.seconds()
            )
            # sendClose() accepts only 1000 and 3000-4999; the frame itself may carry any code.
            protocol.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)
            _dropMessagesAfterClose(protocol)
        return True

    return say


def farewellFor(protocol, reactor) -> Say | None:
    """How to tell C{protocol} that the drain began, or L{None} if it needs no telling."""
    drainStarted = getattr(protocol, "drainStarted", None)
    if callable(drainStarted):

        def say(deadline: float, handedOver: bool) -> bool:
            drainStarted(deadline, handedOver)
            return True

        return say
    webSocket = _autobahnServerProtocol()
    if webSocket is not None and isinstance(protocol, webSocket):
        return _closeWebSocket(protocol, reactor)
    return None


class Farewell:
    """
    One drain's goodbyes: every long-lived connection is told once, the
    connections open at the start at evenly spread moments over C{spread}
    seconds, any that turn up later (upgraded off HTTP during the drain) at once.
    """

    def __init__(self, reactor, spread: float, deadline: float, handedOver: bool) -> None:
        self._reactor = reactor
        self.spread = max(spread, 0.0)
        self._deadline = deadline
        self._handedOver = handedOver
        self._when: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._told: weakref.WeakSet = weakref.WeakSet()

    def plan(self, protocols: Iterable) -> int:
        """Give each connection open at the start its moment; return how many need telling."""
        start = self._reactor.seconds()
        participants = [p for p in protocols if farewellFor(p, self._reactor) is not None]
        for index, protocol in enumerate(participants):
            self._when[protocol] = start + self.spread * index / len(participants)
        return len(participants)

    def tellDue(self, protocols: Iterable) -> None:
        """Tell every connection whose moment has come and that was not told yet."""
        now = self._reactor.seconds()
        for protocol in protocols:
            if protocol in self._told:
                continue
            say = farewellFor(protocol, self._reactor)
            if say is None or self._when.setdefault(protocol, now) > now:
                continue
            try:
                told = say(self._deadline, self._handedOver)
            except Exception as e:
                log.warn(
                    "drain: telling {protocol} to close failed: {error}",
                    protocol=type(protocol).__name__,
                    error=e,
                )
                told = True
            if told:
                self._told.add(protocol)
