"""
The new generation's side of moving connections: adopt what the previous
generation hands over (L{txflip.core.connmove}) into the factory of the
listener each connection came in on, and serve its next request.

A connection whose protocol carries its own state (C{IMovable}) is attached
to a protocol built by the same factory, restored instead of connected
(L{txflip.core.appmove}).

A connection is adopted only once the previous generation says C{yours}
(L{txflip.core.transfer}); until then this process holds a copy without
reading it, and closes that copy if the channel goes away.
"""

from __future__ import annotations

import os
import socket

from txflip.core.appmove import adoptMoved, refusal
from txflip.core.handoff import HandoffState
from txflip.core.log import log
from txflip.core.movable import LISTENER_KEY
from txflip.core.transfer import PacketChannel, closeDescriptors


class ConnectionReceiver:
    """Takes the connections that arrive over the transfer channel."""

    def __init__(self, reactor, registry, skt: socket.socket, fromGeneration: int) -> None:
        self._reactor = reactor
        self._registry = registry
        self._fromGeneration = fromGeneration
        self._held: dict[int, tuple[int, str, int, bytes]] = {}
        self._moves: dict[int, dict] = {}  # the offer's header, for an app connection
        self.adopted = 0
        self.refused = 0
        self.channel = PacketChannel(reactor, skt, self._packet, self._closed)

    @property
    def receiving(self) -> bool:
        """Whether the previous generation may still move connections here."""
        return not self.channel.closed

    def _packet(self, header: dict, payload: bytes, fds: list[int]) -> None:
        op, offerId = header["op"], header.get("id")
        if not isinstance(offerId, int):
            closeDescriptors(fds)
            return
        if op == "offer":
            self._offered(offerId, header, payload, fds)
        elif op == "yours":
            closeDescriptors(fds)
            held = self._held.pop(offerId, None)
            header = self._moves.pop(offerId, None)
            if held is not None and header is not None:
                self._adoptApp(*held, header, payload)
            elif held is not None:
                self._adopt(*held)
        else:
            closeDescriptors(fds)

    def _offered(self, offerId: int, header: dict, payload: bytes, fds: list[int]) -> None:
        key = header.get("key")
        family = getattr(socket, str(header.get("family")), None)
        factory = self._registry.appFactory(key) if isinstance(key, str) else None
        if len(fds) != 1 or family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            reason = "malformed offer"
        elif factory is None:
            reason = f"this generation does not listen on {key}"
        elif (reason := refusal(factory, header, payload)) is not None:
            pass
        else:
            self._held[offerId] = (fds[0], key, family, payload)
            if "move" in header:
                self._moves[offerId] = header
            self._answer({"op": "took", "id": offerId})
            return
        closeDescriptors(fds)
        self.refused += 1
        self._answer({"op": "refused", "id": offerId, "reason": reason})

    def _answer(self, header: dict) -> None:
        try:
            self.channel.send(header)
        except OSError:
            pass  # the channel is gone; _closed lets go of what is held

    def _adopt(self, fd: int, key: str, family: int, buffered: bytes) -> None:
        """Adopt a plain HTTP/1.x connection, and read what it had sent but not parsed."""
        transport = self._adoptWith(
            fd, key, lambda factory: self._reactor.adoptStreamConnection(fd, family, factory)
        )
        if transport is not None and buffered:
            try:
                transport.protocol.dataReceived(buffered)
            except Exception as e:
                log.error("a moved connection's first bytes failed: {error}", error=e)
                transport.loseConnection()

    def _adoptApp(
        self, fd: int, key: str, family: int, payload: bytes, header: dict, written: bytes
    ) -> None:
        """Adopt a connection that carries its app's state (and what was written in transfer)."""
        self._adoptWith(
            fd,
            key,
            lambda factory: adoptMoved(
                self._reactor, factory, fd, family, header, payload, written, self._registry.track
            ),
        )

    def _adoptWith(self, fd: int, key: str, adopt):
        """
        Adopt C{fd} into the factory of the app's listener C{key} with
        C{adopt(factory)}; C{fd} is closed here, whatever happens.

        @return: the connection's transport, or L{None} if it could not be adopted.
        """
        factory = self._registry.appFactory(key)
        try:
            if factory is None:
                return None
            transport = adopt(factory)
        except OSError as e:
            # The client reset the connection while it moved.
            log.info("a moved connection was gone on arrival: {error}", error=e)
            return None
        except Exception as e:
            log.error("could not adopt a moved connection: {error}", error=e)
            return None
        finally:
            os.close(fd)
        if transport is not None:
            setattr(transport, LISTENER_KEY, key)
            self.adopted += 1
        return transport

    def _closed(self, why: str) -> None:
        held = [fd for fd, *_ in self._held.values()]
        self._held.clear()
        self._moves.clear()
        closeDescriptors(held)
        log.info(
            "adopted {adopted} connection(s) from generation {previous} "
            "({refused} refused, {dropped} not handed over); the channel closed: {why}",
            adopted=self.adopted,
            previous=self._fromGeneration,
            refused=self.refused,
            dropped=len(held),
            why=why,
        )

    def close(self) -> None:
        self.channel.close("this generation stops")


def receiveConnections(reactor, registry, inherited: HandoffState | None):
    """Start taking connections from the previous generation, if it sends any."""
    if inherited is None or inherited.transferFd is None:
        return None
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=inherited.transferFd)
    return ConnectionReceiver(reactor, registry, skt, inherited.generation - 1)
