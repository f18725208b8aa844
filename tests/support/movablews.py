"""
An Autobahn echo server whose connections move at a restart: it answers each
message with C{count:label:payload}, where C{count} counts this connection's
messages (its moved state) and C{label} names the generation (its PID, by
default). For C{--app}:

  - C{factory}: the WebSocket factory itself, on a listener;
  - C{site}: the same behind C{WebSocketResource} at C{/ws} in a C{Site};
  - C{stubborn}: a factory whose connections never consent to move;
  - C{deflating}: a factory that accepts permessage-deflate with context takeover;
  - C{unmovable}: the same echo without IMovable.
"""

from __future__ import annotations

import os

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from txflip import IMovable


class Counting(WebSocketServerProtocol):
    """The echo without IMovable: closed with 1012 at a restart, as before txflip moved any."""

    def onConnect(self, request):
        self.factory.connects += 1

    def onOpen(self):
        self.factory.opens += 1
        self.count = 0

    def onMessage(self, payload, isBinary):
        self.count += 1
        self.sendMessage(f"{self.count}:{self.factory.label}:".encode() + payload)


@implementer(IMovable)
class CountingEcho(Counting):
    def saveMoved(self):
        return str(self.count).encode() if self.factory.consents else None

    def restoreMoved(self, state):
        self.factory.restored += 1
        self.count = int(state)


class CountingFactory(WebSocketServerFactory):
    protocol = CountingEcho

    def __init__(self, label: str | None = None, consents: bool = True) -> None:
        super().__init__()
        self.label = label or str(os.getpid())
        self.consents = consents
        self.connects = self.opens = self.restored = 0


def acceptDeflate(offers):
    """Accept permessage-deflate as the client offers it (context takeover included)."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def siteWith(webSockets: WebSocketServerFactory) -> Site:
    root = Resource()
    root.putChild(b"ws", WebSocketResource(webSockets))
    return Site(root)


factory = CountingFactory()
site = siteWith(CountingFactory())
stubborn = CountingFactory(consents=False)
deflating = CountingFactory()
deflating.setProtocolOptions(perMessageCompressionAccept=acceptDeflate)
unmovable = CountingFactory()
unmovable.protocol = Counting
