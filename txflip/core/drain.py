"""
Connection tracking and draining.

twisted.web's Site does not track its connections (docs/design.rst), so txflip
records every protocol its listeners build, at no cost per request: the
factory's C{buildProtocol} is wrapped once, and the drain alone touches the
connections.

The drain, after a handoff or on SIGTERM/SIGINT:

  - After a handoff, plain HTTP/1.x connections are moved to the next
    generation (L{txflip.core.connmove}); the drain leaves alone every
    connection its C{claims} object still claims.
  - HTTP/1.x connections (any L{HTTPChannel}, inside TLS or not): the response
    being written, if its headers are not out yet, and every later response on
    that connection carries C{Connection: close}.
  - A plain (non-TLS) HTTP/1.x connection with no request in progress, nothing
    buffered and nothing waiting in the kernel, that has been quiet for
    C{idleGrace} seconds, is closed. A request that crosses such a close is
    thus only possible from a client that waited that long and then sent at
    that very instant; after a handoff only connections that could not move
    are treated so.
  - An idle TLS connection is never closed: it closes after its next response
    (which says C{Connection: close}), when its client closes it, or at the
    deadline.
  - HTTP/2 connections get the two-step GOAWAY at once; their streams in
    flight finish, and each closes once idle (L{txflip.core.h2drain}).
  - Long-lived protocols (WebSockets, protocols with C{drainStarted}): told to
    close, one at a time over the close-spread window (L{txflip.core.farewell}).
  - Other protocols: the drain waits for them to close.
  - At the drain timeout, whatever is left is aborted.
"""

from __future__ import annotations

import socket
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import LoopingCall
from twisted.web.http import HTTPChannel

from txflip.core.farewell import Farewell
from txflip.core.h2drain import FINAL_GOAWAY_FALLBACK, HTTP2Goodbyes
from txflip.core.log import log
from txflip.core.twistedprivate import (
    channelBehind,
    handlingRequest,
    requestsBuffered,
    unparsedInput,
)

_TRACKED_MARK = "_txflipTracked"


def lowestTransport(protocol):
    """The transport that owns the socket, below any TLS or wrapping layers."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        # twisted.web's Site builds a proxy whose channel holds the transport.
        transport = getattr(channelBehind(protocol), "transport", None)
    while transport is not None and getattr(transport, "transport", None) is not None:
        transport = transport.transport
    return transport


def _transportOf(protocol):
    """The transport C{protocol} writes to (TLS included, if any)."""
    return getattr(protocol, "transport", None) or channelBehind(protocol).transport


def isOpen(protocol) -> bool:
    transport = lowestTransport(protocol)
    if transport is None:
        return False
    return not getattr(transport, "disconnected", False)


def httpChannelOf(protocol) -> HTTPChannel | None:
    """The HTTP/1.x channel behind C{protocol}, if it is one."""
    if isinstance(protocol, HTTPChannel):
        return protocol
    inner = channelBehind(protocol)
    if isinstance(inner, HTTPChannel):
        return inner
    return None


def betweenRequests(channel: HTTPChannel) -> bool:
    """Whether an HTTP/1.x channel has no request in progress and none buffered."""
    if channel.requests or handlingRequest(channel):
        return False
    return not (unparsedInput(channel) or requestsBuffered(channel))


def isIdleKeepAlive(protocol) -> bool:
    """Whether C{protocol} is an HTTP/1.x connection waiting for its client's next request."""
    channel = httpChannelOf(protocol)
    return channel is not None and betweenRequests(channel)


def isTLS(protocol) -> bool:
    """Whether C{protocol} speaks through TLS."""
    return ISSLTransport.providedBy(_transportOf(protocol))


class Claims(Protocol):
    """Connections that something else (moving them) handles for now."""

    moved: int
    active: bool
    """Whether it still moves connections (more may arrive here to be moved on)."""

    def claimed(self, protocol) -> bool: ...


def _kernelHasUnreadBytes(protocol) -> bool:
    transport = lowestTransport(protocol)
    skt = getattr(transport, "socket", None)
    if skt is None:
        return False
    try:
        return bool(skt.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


def _refuseKeepAlive(request, version) -> bool:
    """
    A replacement for L{HTTPChannel.checkPersistence} while draining: the last
    request the client sent gets C{Connection: close}; one with more pipelined
    behind it keeps the connection, so that every buffered request is answered.
    """
    channel = request.channel
    if requestsBuffered(channel) or unparsedInput(channel):
        return True
    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
    return False


class _HTTPDrainState:
    """What the drain needs to know about one HTTP channel."""

    def __init__(self, channel: HTTPChannel, seconds: Callable[[], float]) -> None:
        self.channel = channel
        self.lastActivity = seconds()
        self.timedOut = False
        """Whether the app's own idle timeout (C{Site(timeout=...)}) closed it."""
        originalDataReceived = channel.dataReceived

        def dataReceived(data: bytes) -> None:
            self.lastActivity = seconds()
            originalDataReceived(data)

        originalRequestDone = channel.requestDone

        def requestDone(request) -> None:
            # A response just ended: the client may be about to send the next
            # request, so the quiet period starts now.
            self.lastActivity = seconds()
            originalRequestDone(request)

        originalTimeoutConnection = channel.timeoutConnection

        def timeoutConnection() -> None:
            self.timedOut = True
            originalTimeoutConnection()

        channel.dataReceived = dataReceived
        channel.requestDone = requestDone
        channel.timeoutConnection = timeoutConnection
        channel.checkPersistence = _refuseKeepAlive
        if requestsBuffered(channel):
            # Pipelined requests are already buffered: each gets its answer, and
            # the last one's carries Connection: close (checkPersistence above).
            return
        for request in channel.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                channel.persistent = False

    def idleFor(self, now: float) -> float:
        """Seconds with nothing in progress, or 0 if a request is under way."""
        if not betweenRequests(self.channel):
            return 0.0
        return now - self.lastActivity


def _currentProtocol(transport):
    """The protocol a connection's socket feeds now, below any TLS or wrapping layers."""
    protocol = getattr(transport, "protocol", None)
    while getattr(protocol, "wrappedProtocol", None) is not None:
        protocol = protocol.wrappedProtocol
    return protocol


def _rememberTransport(protocol, transports: weakref.WeakSet) -> None:
    """Record the socket C{protocol} is connected to, when it is."""
    makeConnection = protocol.makeConnection

    def remembering(transport) -> None:
        del protocol.makeConnection
        lowest = transport
        while getattr(lowest, "transport", None) is not None:
            lowest = lowest.transport
        try:
            transports.add(lowest)
        except TypeError:
            pass
        makeConnection(transport)

    try:
        protocol.makeConnection = remembering
    except AttributeError:
        pass


class ConnectionTracker:
    """
    Remembers every connection built by the factories it has seen.

    Each connection is known by its protocol and by its socket's transport, so a
    connection whose protocol changes (a WebSocket upgrade takes the transport
    away from the HTTP channel) is still found, through the transport.
    """

    def __init__(self) -> None:
        self._protocols: weakref.WeakSet = weakref.WeakSet()
        self._transports: weakref.WeakSet = weakref.WeakSet()

    def track(self, factory):
        """Wrap C{factory.buildProtocol} so its connections are remembered; return C{factory}."""
        if getattr(factory, _TRACKED_MARK, False):
            return factory
        build = factory.buildProtocol
        protocols = self._protocols
        transports = self._transports

        def buildProtocol(addr):
            protocol = build(addr)
            if protocol is not None:
                protocols.add(protocol)
                _rememberTransport(protocol, transports)
            return protocol

        factory.buildProtocol = buildProtocol
        setattr(factory, _TRACKED_MARK, True)
        return factory

    def open(self) -> list:
        """The connections still open, each by the protocol that now owns it."""
        protocols = [p for p in list(self._protocols) if isOpen(p)]
        owned = {id(lowestTransport(p)) for p in protocols}
        for transport in list(self._transports):
            if id(transport) in owned or getattr(transport, "disconnected", False):
                continue
            protocol = _currentProtocol(transport)
            if protocol is not None and isOpen(protocol):
                protocols.append(protocol)
        return protocols


class Drain:
    """
    One drain of every tracked connection, bounded by C{timeout}.

    @param closeSpread: seconds over which long-lived connections are told to
        close (at most half of C{timeout}, so that they have time to).
    @param handedOver: whether a newer generation serves (a restart) rather
        than this being a final shutdown.
    @param seconds: the clock the quiet periods and the deadline are measured
        by; monotonic, so that a step of the wall clock changes neither.
    @ivar done: fires with the number of connections aborted at the deadline.
    """

    def __init__(
        self,
        reactor,
        tracker: ConnectionTracker,
        timeout: float,
        idleGrace: float = 1.0,
        interval: float = 0.05,
        claims: Claims | None = None,
        closeSpread: float = 0.0,
        handedOver: bool = False,
        seconds: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reactor = reactor
        self._seconds = seconds
        self._tracker = tracker
        self._timeout = timeout
        self._idleGrace = min(idleGrace, timeout)
        self._interval = interval
        self._http: dict[int, _HTTPDrainState] = {}
        self.done: Deferred = Deferred()
        self._loop: LoopingCall | None = None
        self._deadlineCall = None
        self._deadline = 0.0
        self._claims = claims
        self._started = 0.0
        self._drained: set[int] = set()
        self._closedIdle: set[int] = set()
        self._aborted: set[int] = set()
        self._http2 = HTTP2Goodbyes(reactor, min(FINAL_GOAWAY_FALLBACK, timeout / 4))
        self._http2Ids: set[int] = set()
        self._closeSpread = min(closeSpread, timeout / 2)
        self._handedOver = handedOver
        self._farewell: Farewell | None = None

    def start(self) -> Deferred:
        now = self._seconds()
        self._started = time.monotonic()
        self._deadline = now + self._timeout
        self._farewell = Farewell(
            self._reactor,
            self._closeSpread,
            self._reactor.seconds() + self._timeout,
            self._handedOver,
        )
        connections = self._tracker.open()
        longLived = self._farewell.plan(self._unclaimed(connections))
        log.info(
            "draining {count} connection(s), at most {timeout}s",
            count=len(connections),
            timeout=self._timeout,
        )
        if longLived:
            log.info(
                "telling {count} long-lived connection(s) to close over {spread:.1f}s",
                count=longLived,
                spread=self._farewell.spread,
            )
        self._deadlineCall = self._reactor.callLater(self._timeout + 1, self._abortAll)
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(self._loopFailed)
        return self.done

    def _unclaimed(self, protocols: list) -> list:
        """The connections the mover does not claim (that will not move)."""
        if self._claims is None:
            return protocols
        return [p for p in protocols if not self._claims.claimed(p)]

    def _loopFailed(self, failure) -> None:
        log.error("drain check failed: {error}; aborting at the deadline", error=failure.value)

    def _abortAll(self) -> None:
        """The deadline, enforced even if the periodic check has died."""
        remaining = self._tracker.open()
        for protocol in remaining:
            self._drained.add(id(protocol))
            self._aborted.add(id(protocol))
            _transportOf(protocol).abortConnection()
        if remaining:
            log.warn(
                "drain timeout: aborted {count} connection(s) still open", count=len(remaining)
            )
        self._finish(len(remaining))

    def _check(self) -> None:
        now = self._seconds()
        remaining = self._tracker.open()
        if not remaining and not (self._claims is not None and self._claims.active):
            # While connections move, more may arrive here (from this generation's
            # own predecessor), and one that cannot move stays to be drained.
            self._finish(0)
            return
        if now >= self._deadline:
            self._abortAll()
            return
        # A connection the mover still claims (it may move) is told nothing yet.
        self._farewell.tellDue(self._unclaimed(remaining))
        for protocol in remaining:
            if self._claims is not None and self._claims.claimed(protocol):
                continue
            self._drained.add(id(protocol))
            if self._http2.tell(protocol):
                self._http2Ids.add(id(protocol))
                continue
            channel = httpChannelOf(protocol)
            if channel is None:
                continue
            state = self._http.get(id(channel))
            if state is None or state.channel is not channel:
                state = self._http[id(channel)] = _HTTPDrainState(channel, self._seconds)
            if isTLS(protocol):
                continue
            try:
                if state.idleFor(now) >= self._idleGrace and not _kernelHasUnreadBytes(protocol):
                    self._closedIdle.add(id(protocol))
                    _transportOf(protocol).loseConnection()
            except Exception as e:
                log.warn("drain: could not close an idle connection: {error}", error=e)

    def cancel(self) -> None:
        """Stop draining (this generation serves again); C{done} never fires."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._deadlineCall is not None and self._deadlineCall.active():
            self._deadlineCall.cancel()

    def _finish(self, aborted: int) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._deadlineCall is not None and self._deadlineCall.active():
            self._deadlineCall.cancel()
        if not self.done.called:
            http2 = len(self._http2Ids - self._aborted)
            timedOut = sum(1 for state in self._http.values() if state.timedOut)
            log.info(
                "drained in {seconds:.1f}s: {moved} connection(s) moved to the next "
                "generation; {closed} closed here ({idle} idle, {http2} HTTP/2 after "
                "GOAWAY, {timedOut} by the app's idle timeout, {aborted} aborted at the "
                "deadline, {rest} after their last response or by their client)",
                seconds=time.monotonic() - self._started,
                moved=self._claims.moved if self._claims is not None else 0,
                closed=len(self._drained),
                idle=len(self._closedIdle),
                http2=http2,
                timedOut=timedOut,
                aborted=aborted,
                rest=max(
                    0, len(self._drained) - len(self._closedIdle) - http2 - timedOut - aborted
                ),
            )
            if self._http2.count:
                log.info(
                    "HTTP/2: {count} connection(s) told GOAWAY, {refused} stream(s) "
                    "opened after the final GOAWAY refused",
                    count=self._http2.count,
                    refused=self._http2.refused,
                )
            self.done.callback(aborted)
