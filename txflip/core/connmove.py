"""
Moving idle keep-alive connections to the next generation, after a handoff.

Closing an idle keep-alive connection races with the client's next request:
the request is in flight one way while the server's FIN is in flight the
other, and the client reads end-of-file instead of an answer. So instead of
closing them, the old generation passes each plain HTTP/1.x connection, once
it is between requests (L{txflip.core.movable}), to the new generation over
the transfer channel (L{txflip.core.transfer}), which serves its next request
as if nothing had happened. A protocol that provides C{IMovable} (a plain
protocol, or an Autobahn WebSocket) moves the same way once it consents
(L{txflip.core.appmove}), carrying its state.

L{ConnectionMover} runs beside the L{Drain}: the drain leaves alone every
connection the mover still claims, and drains the rest as before. Bounds:
at most L{MAX_IN_FLIGHT} connections are in the handshake at once, each must
be answered within L{ANSWER_TIMEOUT}, and moving stops L{MOVE_RESERVE} seconds
before the drain deadline. If the new generation refuses a connection, fails
to answer, or dies, the connection is read here again and drained here.

The old generation stops reading a connection before offering it and, once
the new one holds a copy, closes its own without C{shutdown()}: the socket
lives on in the other process, so nothing is sent to the client, neither FIN
nor RST.
"""

from __future__ import annotations

import os
import socket
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from txflip.core.appmove import HeldWrites, SaveFailed, saveForMove
from txflip.core.drain import ConnectionTracker, httpChannelOf, lowestTransport
from txflip.core.events import Events
from txflip.core.imovable import ConnectionMoved
from txflip.core.log import generation, log
from txflip.core.movable import HTTP, Verdict, listenerKeyOf, verdict
from txflip.core.transfer import PacketChannel, closeDescriptors
from txflip.core.twistedprivate import skipShutdown

MAX_IN_FLIGHT = 8
"""Connections offered and not yet settled at once (below the kernel's queue of 10 packets)."""

ANSWER_TIMEOUT = 5.0
"""Seconds the new generation has to answer an offer before the transfer is given up."""

MOVE_RESERVE = 2.0
"""
No new offer is made this long (at most half the drain timeout) before the
drain deadline, and offers still unanswered half that long before it are given
up, so that the deadline never aborts a connection the new generation holds.
"""

CHECK_INTERVAL = 0.02

STAYS_LATE = "still busy when moving stopped"
STAYS_NO_LISTENER = "its listener is unknown"
STAYS_TRANSFER_FAILED = "the transfer failed"
STAYS_WROTE_TOO_MUCH = "its app wrote too much while it was in transfer"

HELD_LIMIT = 64 * 1024
"""
The most bytes an app may write to a connection in transfer: they travel with
C{yours}; a connection written more stays (the new generation's copy is
closed with the channel, and never read).
"""


@dataclass
class MoveReport:
    """How the move went: how many moved, and why the others stay."""

    moved: int = 0
    stayed: Counter = field(default_factory=Counter)
    failure: str | None = None
    seconds: float = 0.0
    movedKinds: Counter = field(default_factory=Counter)
    """How many moved, by kind (L{txflip.core.movable.KINDS})."""

    def describeKinds(self) -> str:
        """The kinds of the connections that moved, when any is not HTTP/1.x."""
        if not set(self.movedKinds) - {HTTP}:
            return ""
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.movedKinds.items()))
        return f" ({kinds})"

    def describeStayed(self) -> str:
        if not self.stayed:
            return "none stay"
        reasons = ", ".join(f"{count} {why}" for why, count in sorted(self.stayed.items()))
        return f"{sum(self.stayed.values())} stay and drain here ({reasons})"


@dataclass
class _Offer:
    protocol: object
    transport: object
    sentAt: float
    savedTimeout: float | None
    moves: str = HTTP
    held: HeldWrites | None = None


def closeWithoutShutdown(
    transport, why: str, reason: type[ConnectionDone] = ConnectionDone
) -> None:
    """
    Close this process's copy of a connection's socket, sending nothing.

    Twisted closes a connection with C{shutdown()} (a FIN, even while another
    process holds the socket) or with C{SO_LINGER} 0 when aborting (a RST); a
    plain C{close()} of one descriptor among several sends neither.
    """
    skipShutdown(transport)
    transport.connectionLost(Failure(reason(why)))


class ConnectionMover:
    """
    Moves this generation's movable connections to the next, for one drain.

    @param arriving: whether connections may still arrive here from this
        generation's own predecessor; moving goes on until they stop.
    @ivar done: fires with the L{MoveReport} once nothing is left to move.
    """

    def __init__(
        self,
        reactor,
        tracker: ConnectionTracker,
        registry,
        transferSocket: socket.socket,
        events: Events,
        drainTimeout: float,
        arriving: Callable[[], bool] = lambda: False,
    ) -> None:
        self._reactor = reactor
        self._tracker = tracker
        self._registry = registry
        self._events = events
        self._arriving = arriving
        reserve = min(MOVE_RESERVE, drainTimeout / 2)
        self._window = drainTimeout - reserve
        self._lastAnswer = drainTimeout - reserve / 2
        self._socket = transferSocket
        self._channel: PacketChannel | None = None
        self._offers: dict[int, _Offer] = {}  # offered, not answered yet
        self._settling: dict[int, _Offer] = {}  # taken; "yours" not in the peer's queue yet
        self._offered: weakref.WeakSet = weakref.WeakSet()
        self._stays: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._nextId = 1
        self._started = 0.0
        self._loop: LoopingCall | None = None
        self.active = False
        self._firstPassReported = False
        self.report = MoveReport()
        self.done: Deferred = Deferred()

    @property
    def moved(self) -> int:
        return self.report.moved

    def start(self) -> Deferred:
        self.active = True
        self._started = self._reactor.seconds()
        self._channel = PacketChannel(self._reactor, self._socket, self._packet, self._closed)
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._reactor
        self._loop.start(CHECK_INTERVAL, now=True).addErrback(self._loopFailed)
        return self.done

    def claimed(self, protocol) -> bool:
        """Whether the drain must leave C{protocol} alone: it is moving, or may move."""
        if protocol in self._offered:
            return True
        if not self.active or protocol in self._stays:
            return False
        return verdict(protocol).kind != "stays"

    # The periodic look at every connection.

    def _check(self) -> None:
        now = self._reactor.seconds()
        inFlight = [*self._offers.values(), *self._settling.values()]
        if inFlight and min(o.sentAt for o in inFlight) + ANSWER_TIMEOUT < now:
            self._giveUp(f"the new generation did not answer within {ANSWER_TIMEOUT:g}s")
            return
        if inFlight and now - self._started >= self._lastAnswer:
            self._giveUp("the new generation did not answer before the drain deadline")
            return
        late = now - self._started >= self._window
        waiting = 0
        for protocol in self._tracker.open():
            if protocol in self._offered or protocol in self._stays:
                continue
            if self._inFlight() >= MAX_IN_FLIGHT:
                # No room for another offer: the rest are looked at once some
                # are answered (looking at every one for each few offers made
                # moving thousands quadratic).
                waiting += 1
                break
            transport = lowestTransport(protocol)
            key = listenerKeyOf(transport, self._registry)
            if self._registry.isInternal(key):
                self._stays[protocol] = "txflip's own"  # the control socket: not reported
                continue
            seen = verdict(protocol)
            if seen.kind == "stays":
                self._stay(protocol, seen.reason)
            elif key is None:
                self._stay(protocol, STAYS_NO_LISTENER)
            elif late:
                self._stay(protocol, STAYS_LATE)
            elif seen.kind == "busy":
                waiting += 1
            else:
                try:
                    saved = saveForMove(protocol, seen)
                except SaveFailed as e:
                    log.error("a connection stays: {error}", error=e)
                    self._stay(protocol, e.reason)
                    continue
                if saved is None:
                    waiting += 1  # the app says not now: ask again at the next check
                    continue
                self._offer(protocol, transport, key, seen, saved, now)
                if not self.active:
                    return
        arriving = self._arriving()
        if not waiting and not self._inFlight() and not arriving:
            # Connections still arriving from this generation's own predecessor
            # (a restart right after the last one) are handed on as they come.
            self._finish()
        elif not self._inFlight() and not self._firstPassReported:
            # Every idle connection has moved; the rest wait for a request in
            # flight (or are still arriving): say so now, not at their end.
            self._firstPassReported = True
            self._emit(final=False, waiting=waiting, arriving=arriving)

    def _inFlight(self) -> int:
        return len(self._offers) + len(self._settling)

    def _stay(self, protocol, reason: str) -> None:
        self._stays[protocol] = reason
        self.report.stayed[reason] += 1

    def _offer(
        self, protocol, transport, key: str, seen: Verdict, saved: tuple[dict, bytes], now: float
    ) -> None:
        transport.stopReading()
        transport.stopWriting()
        savedTimeout = held = None
        if seen.moves == HTTP:
            # Its idle timeout must not close it (with a FIN) while the other generation holds it.
            savedTimeout = httpChannelOf(protocol).setTimeout(None)
        else:
            # The app may write to it meanwhile (a chat's broadcast): held, not lost.
            held = HeldWrites(transport)
        offerId = self._nextId
        self._nextId += 1
        self._offers[offerId] = _Offer(protocol, transport, now, savedTimeout, seen.moves, held)
        self._offered.add(protocol)
        extra, payload = saved
        header = {
            **extra,
            "op": "offer",
            "id": offerId,
            "key": key,
            "family": socket.AddressFamily(transport.socket.family).name,
        }
        try:
            # A duplicate goes in the packet (the channel closes it once sent), so
            # that a packet waiting for room never names a descriptor closed meanwhile.
            self._channel.send(header, payload, [os.dup(transport.fileno())])
        except OSError:
            # The channel is gone: _giveUp has already resumed this connection.
            pass

    # What the new generation answers.

    def _packet(self, header: dict, payload: bytes, fds: list[int]) -> None:
        closeDescriptors(fds)
        offerId = header.get("id")
        offer = self._offers.pop(offerId, None) if isinstance(offerId, int) else None
        if offer is None:
            return
        if header["op"] == "took":
            self._settle(offerId, offer)
        else:
            self._resume(offer, f"refused: {header.get('reason', 'no reason given')}")
        if not self._inFlight() and self.active and self._loop is not None:
            # Offer the next ones without waiting for the next check.
            self._reactor.callLater(0, self._checkIfActive)

    def _checkIfActive(self) -> None:
        if self.active:
            self._check()

    def _settle(self, offerId: int, offer: _Offer) -> None:
        written = offer.held.take() if offer.held is not None else b""
        if len(written) > HELD_LIMIT:
            offer.held.hold(written)
            self._resume(offer, STAYS_WROTE_TOO_MUCH)
            return
        self._settling[offerId] = offer
        try:
            self._channel.send(
                {"op": "yours", "id": offerId}, written, onSent=lambda: self._gone(offerId)
            )
        except OSError:
            pass  # the channel is gone: _giveUp has resumed this connection

    def _gone(self, offerId: int) -> None:
        """The new generation is told the connection is its own: let go of this copy."""
        offer = self._settling.pop(offerId)
        self._offered.discard(offer.protocol)
        self.report.moved += 1
        self.report.movedKinds[offer.moves] += 1
        if offer.held is not None:
            late = offer.held.release()
            if late:
                log.warn(
                    "{count} byte(s) the app wrote to a connection just moved to generation "
                    "{next} were dropped (written after it was handed over)",
                    count=len(late),
                    next=generation() + 1,
                )
            closeWithoutShutdown(
                offer.transport, f"moved to generation {generation() + 1}", ConnectionMoved
            )
            return
        closeWithoutShutdown(offer.transport, f"moved to generation {generation() + 1}")

    def _resume(self, offer: _Offer, reason: str) -> None:
        """The connection stays: this generation reads it again and drains it."""
        self._offered.discard(offer.protocol)
        self._stay(offer.protocol, reason)
        written = offer.held.release() if offer.held is not None else b""
        if not getattr(offer.transport, "disconnected", False):
            if offer.moves == HTTP:
                httpChannelOf(offer.protocol).setTimeout(offer.savedTimeout)
            offer.transport.startReading()
            if written:
                offer.transport.write(written)

    def _closed(self, why: str) -> None:
        if self.active:
            self._giveUp(f"the transfer channel closed: {why}")

    def abandon(self, why: str) -> None:
        """Stop moving: connections in transfer are read here again."""
        self._giveUp(why)

    def _giveUp(self, why: str) -> None:
        if not self.active:
            return
        self.active = False
        self.report.failure = why
        offers = [*self._offers.values(), *self._settling.values()]
        self._offers.clear()
        self._settling.clear()
        for offer in offers:
            self._resume(offer, STAYS_TRANSFER_FAILED)
        log.warn(
            "gave up moving connections to generation {next}: {why}; "
            "{count} connection(s) in transfer stay here and drain",
            next=generation() + 1,
            why=why,
            count=len(offers),
        )
        self._finish()

    def _loopFailed(self, failure) -> None:
        log.error("moving connections failed: {error}", error=failure.value)
        self._giveUp(f"internal error: {failure.value}")

    def _finish(self) -> None:
        self.active = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._channel is not None:
            self._channel.closeWhenSent("nothing more to move")
        if self.done.called:
            return
        self.report.seconds = self._reactor.seconds() - self._started
        ms = int(self.report.seconds * 1000)
        log.info(
            "moved {moved} connection(s) to generation {next} in {ms} ms{kinds}; {stayed}",
            moved=self.report.moved,
            kinds=self.report.describeKinds(),
            next=generation() + 1,
            ms=ms,
            stayed=self.report.describeStayed(),
        )
        self._emit(final=True, waiting=0, arriving=False)
        self.done.callback(self.report)

    def _emit(self, final: bool, waiting: int, arriving: bool) -> None:
        self._events.emit(
            "connections-moved",
            moved=self.report.moved,
            movedKinds=dict(self.report.movedKinds),
            stayed=dict(self.report.stayed),
            failure=self.report.failure,
            ms=int((self._reactor.seconds() - self._started) * 1000),
            final=final,
            waiting=waiting,
            arriving=arriving,
        )
