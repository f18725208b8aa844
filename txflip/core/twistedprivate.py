"""
Every use txflip makes of a name Twisted keeps private, and no other code.

Twisted may rename any of these in a release, without a deprecation. With all
of them here, a rename breaks one known module: L{PRIVATE_NAMES} lists each
name, where it lives and what txflip needs it for;
tests/unit/test_twisted_private.py checks every one against the installed
Twisted (and that no other module of txflip reaches for one).
"""

from __future__ import annotations

import fcntl
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateName:
    """
    One private name of Twisted's that txflip uses.

    @ivar owner: the dotted name of the module or class it belongs to.
    @ivar name: the attribute.
    @ivar purpose: what txflip needs it for.
    @ivar instance: makes an instance to look for C{name} on, when Twisted sets
        it in C{__init__} rather than on the class; else the owner is looked at.
    """

    owner: str
    name: str
    purpose: str
    instance: Callable[[], object] | None = None


def _httpChannel():
    from twisted.web.http import HTTPChannel

    return HTTPChannel()


def _siteProtocol():
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    return Site(Resource()).buildProtocol(None)


def _fileDescriptor():
    from twisted.internet.abstract import FileDescriptor

    return FileDescriptor()


def _unixPort():
    from twisted.internet.protocol import Factory
    from twisted.internet.unix import Port

    return Port("/nonexistent/txflip-probe.sock", Factory())


def _logFile():
    import tempfile
    from types import SimpleNamespace

    from twisted.python.logfile import LogFile

    with tempfile.TemporaryDirectory(prefix="txflip-probe-") as directory:
        logFile = LogFile("probe.log", directory)
        opened = SimpleNamespace(**vars(logFile))  # close() deletes _file
        logFile.close()
    return opened


def _tcpEndpoint():
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    return TCP4ServerEndpoint(reactor, 0)


def _webSocketFactory():
    from autobahn.twisted.websocket import WebSocketServerFactory

    return WebSocketServerFactory()


def _webSocketResource():
    from autobahn.twisted.resource import WebSocketResource

    return WebSocketResource(_webSocketFactory())


def _h2Connection():
    from twisted.web._http2 import H2Connection

    return H2Connection()


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # Services that only listen (txflip.core.service: a sequential handover keeps them).
    PrivateName(
        "twisted.application.internet",
        "_AbstractServer",
        "telling internet.TCPServer and its kin, which only listen, from the app's services",
    ),
    # HTTP/2 (txflip.core.h2drain): Twisted's HTTP/2 server is private as a whole.
    PrivateName(
        "twisted.web._http2.H2Connection",
        "_consumerBlocked",
        "whether Twisted holds frames back for a blocked transport (GOAWAY at a drain)",
        _h2Connection,
    ),
    PrivateName(
        "twisted.web._http2.H2Connection",
        "_bufferedControlFrames",
        "queueing GOAWAY and PING behind the frames Twisted holds back",
        _h2Connection,
    ),
    PrivateName(
        "twisted.web._http2.H2Connection",
        "_bufferedControlFrameBytes",
        "queueing GOAWAY and PING behind the frames Twisted holds back",
        _h2Connection,
    ),
    PrivateName(
        "twisted.web._http2.H2Connection",
        "_tryToWriteControlData",
        "writing what the h2 state machine prepared before txflip's own frames",
    ),
    PrivateName(
        "twisted.web._http2.H2Connection",
        "_requestDone",
        "knowing when a stream is finished, to close the connection once none is left",
    ),
    # Listening ports (txflip.core.listeners).
    PrivateName(
        "twisted.internet.unix.Port",
        "_bindPath",
        "the path a unix listener removes at its final shutdown",
        _unixPort,
    ),
    PrivateName(
        "twisted.internet.unix.Port",
        "_fromListeningDescriptor",
        "adopting a listening unix socket into txflip's own port class",
    ),
    PrivateName(
        "twisted.internet.tcp.Port",
        "_logConnectionLostMsg",
        "silencing '(TCP Port N Closed)' for a port handed over, not closed",
    ),
    PrivateName(
        "twisted.internet.tcp.Port",
        "_type",
        "naming a TLS port 'TLS' in its log lines, as listenSSL's are",
    ),
    PrivateName(
        "twisted.internet.tcp.Connection",
        "_shouldShutdown",
        "closing this process's copy of a socket without shutdown(), "
        "when another process holds it (moved connections, handed-over unix ports)",
    ),
    # HTTP/1.x channels (txflip.core.drain, txflip.core.movable).
    PrivateName(
        "twisted.web.http._GenericHTTPChannelProtocol",
        "_channel",
        "finding the HTTPChannel behind Site's protocol",
        _siteProtocol,
    ),
    PrivateName(
        "twisted.web.http.HTTPChannel",
        "_handlingRequest",
        "whether a request is in progress (draining, moving, status)",
        _httpChannel,
    ),
    PrivateName(
        "twisted.web.http.HTTPChannel",
        "_dataBuffer",
        "whether pipelined requests are buffered (draining, moving, status)",
        _httpChannel,
    ),
    PrivateName(
        "twisted.web.http.HTTPChannel",
        "_HTTPChannel__header",
        "whether a request's headers are half read (moving)",
    ),
    PrivateName(
        "twisted.web.http.HTTPChannel",
        "_waitingForTransport",
        "whether a response is still being written (moving)",
    ),
    PrivateName(
        "twisted.protocols.basic.LineReceiver",
        "_buffer",
        "the unparsed bytes of a request line, which move with a connection",
    ),
    PrivateName(
        "twisted.web.http.Request",
        "_disconnected",
        "whether the demo's client went away before its answer",
    ),
    # Transports (txflip.core.movable, txflip.core.child).
    PrivateName(
        "twisted.internet.abstract.FileDescriptor",
        "_tempDataBuffer",
        "whether a transport still has bytes to write",
        _fileDescriptor,
    ),
    PrivateName(
        "twisted.internet.abstract.FileDescriptor",
        "_tempDataLen",
        "how many bytes a transport still has to write",
        _fileDescriptor,
    ),
    PrivateName(
        "twisted.internet.abstract.FileDescriptor",
        "dataBuffer",
        "how many bytes a transport still has to write (undocumented)",
    ),
    PrivateName(
        "twisted.internet.abstract.FileDescriptor",
        "offset",
        "how many bytes a transport still has to write (undocumented)",
    ),
    # The reactor (txflip.core.service).
    PrivateName(
        "twisted.internet.base.ReactorBase",
        "_exitSignal",
        "letting twistd exit 0 after a drain that SIGTERM started",
    ),
    # twistd's log file (txflip.twistd.compat).
    PrivateName(
        "twisted.python.logfile.LogFile",
        "_openFile",
        "opening twistd's --logfile for appending",
    ),
    PrivateName(
        "twisted.python.logfile.LogFile",
        "_file",
        "opening twistd's --logfile for appending",
        _logFile,
    ),
    # HTTP client (txflip.acme.client).
    PrivateName(
        "twisted.web.client",
        "_HTTP11ClientFactory",
        "an HTTP connection pool whose connections log no 'Starting factory'",
    ),
    PrivateName(
        "twisted.web.client.HTTPConnectionPool",
        "_factory",
        "an HTTP connection pool whose connections log no 'Starting factory'",
    ),
    # Autobahn's WebSocket server (txflip.core.wsmove): a moved WebSocket.
    PrivateName(
        "autobahn.twisted.resource.WebSocketResource",
        "_factory",
        "the WebSocket factory a moved connection's path leads to, in a Site",
        _webSocketResource,
    ),
    PrivateName(
        "autobahn.twisted.websocket.WebSocketServerFactory",
        "_batched_timer",
        "starting a moved WebSocket's automatic pings, as its opening handshake would",
        _webSocketFactory,
    ),
    PrivateName(
        "autobahn.websocket.protocol.WebSocketProtocol",
        "_sendAutoPing",
        "starting a moved WebSocket's automatic pings, as its opening handshake would",
    ),
    # Endpoints (txflip.acme.endpoint).
    PrivateName(
        "twisted.internet.endpoints.TCP4ServerEndpoint",
        "_port",
        "listening with TLS on the address of an le: or --acme-listen tcp: endpoint",
        _tcpEndpoint,
    ),
    PrivateName(
        "twisted.internet.endpoints.TCP4ServerEndpoint",
        "_backlog",
        "listening with TLS on the address of an le: or --acme-listen tcp: endpoint",
        _tcpEndpoint,
    ),
    PrivateName(
        "twisted.internet.endpoints.TCP4ServerEndpoint",
        "_interface",
        "listening with TLS on the address of an le: or --acme-listen tcp: endpoint",
        _tcpEndpoint,
    ),
)
"""Every private name of Twisted's this module uses."""


# Listening ports.


def boundPath(port) -> bytes | str:
    """The path a unix port is bound to."""
    return port._bindPath


def adoptUNIXPort(portClass, reactor, fd: int, factory):
    """A C{portClass} (a L{twisted.internet.unix.Port}) for the listening unix socket C{fd}."""
    return portClass._fromListeningDescriptor(reactor, fd, factory)


def silenceCloseLog(port) -> None:
    """The port will not log C{(TCP Port N Closed)} when it stops."""
    port._logConnectionLostMsg = _logNothing


def _logNothing() -> None:
    pass


def nameTLS(port) -> None:
    """The port's log lines call it a TLS port."""
    port._type = "TLS"


def skipShutdown(transport) -> None:
    """
    When C{transport} (a connection or a port) closes, only C{close()} its
    descriptor: no C{shutdown()}, which would end the socket for every
    process that holds it.
    """
    transport._shouldShutdown = False


# HTTP/1.x channels.


def channelBehind(protocol):
    """The protocol behind Site's protocol (an L{HTTPChannel}), or L{None}."""
    return getattr(protocol, "_channel", None)


def handlingRequest(channel) -> bool:
    """Whether the channel is between reading a request and finishing its answer."""
    return bool(channel._handlingRequest)


def requestsBuffered(channel) -> bool:
    """Whether pipelined requests wait, buffered, behind the one in progress."""
    return bool(channel._dataBuffer)


def unparsedInput(channel) -> bytes:
    """Bytes read but not parsed yet: the start of the next request line."""
    return bytes(getattr(channel, "_buffer", b""))


def readingHeaders(channel) -> bool:
    """Whether a request's headers are half read."""
    return bool(channel._HTTPChannel__header)


def waitingForTransport(channel) -> bool:
    """Whether a response waits for the transport to take more bytes."""
    return bool(channel._waitingForTransport)


def clientGone(request) -> bool:
    """Whether the request's connection has closed."""
    return bool(request._disconnected)


# Transports.


def pendingOutput(transport) -> int:
    """Bytes the transport has yet to write to its socket."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


def hasQueuedOutput(transport) -> bool:
    """Whether anything waits in the transport to be written."""
    return bool(getattr(transport, "dataBuffer", b"") or getattr(transport, "_tempDataBuffer", []))


# The reactor.


def forgetExitSignal(reactor) -> None:
    """twistd will not re-raise the signal that stopped the reactor: the process exits 0."""
    if hasattr(reactor, "_exitSignal"):
        reactor._exitSignal = None


# twistd's log file.


_openedLogFiles: weakref.WeakSet = weakref.WeakSet()


def openLogFilesForAppending() -> None:
    """
    Make every L{LogFile} open its file with C{O_APPEND} (idempotent), and
    remember it for L{reopenLogFiles}.
    """
    from twisted.python.logfile import LogFile

    if getattr(LogFile._openFile, "txflipAppends", False):
        return
    original = LogFile._openFile

    def _openFile(self) -> None:
        original(self)
        fd = self._file.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        _openedLogFiles.add(self)

    _openFile.txflipAppends = True
    LogFile._openFile = _openFile


def reopenLogFiles() -> None:
    """
    Open again, by path, every L{LogFile} opened since
    L{openLogFilesForAppending} (twistd's C{--logfile}): after a C{mv}, lines
    go to a new file. (C{reopen} is public; the file it opens is C{_openFile}.)
    """
    for logFile in list(_openedLogFiles):
        logFile.reopen()


# HTTP client.


def quietConnectionPool():
    """An L{HTTPConnectionPool} class whose connections do not log "Starting factory"."""
    from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

    class QuietFactory(_HTTP11ClientFactory):
        noisy = False

    class QuietPool(HTTPConnectionPool):
        _factory = QuietFactory

    return QuietPool


# Endpoints.


def tcpServerAddress(endpoint) -> tuple[int, int, str]:
    """C{(port, backlog, interface)} of a L{TCP4ServerEndpoint} or L{TCP6ServerEndpoint}."""
    return endpoint._port, endpoint._backlog, endpoint._interface


def internetServerClass() -> type:
    """The base of C{internet.TCPServer}, C{UNIXServer}, C{SSLServer}, C{UDPServer}."""
    from twisted.application.internet import _AbstractServer

    return _AbstractServer


# HTTP/2 (txflip.core.h2drain). C{conn} (the h2 library's state machine) and
# C{streams} are documented instance variables of C{H2Connection}; the rest is private.


def h2ConnectionClass() -> type | None:
    """Twisted's HTTP/2 connection class, or L{None} without C{twisted[http2]}."""
    try:
        from twisted.web._http2 import H2Connection
    except ImportError:  # twisted[http2] is not installed: no connection speaks HTTP/2
        return None
    return H2Connection


def isH2Connection(channel) -> bool:
    """Whether C{channel} is Twisted's HTTP/2 connection (C{twisted.web._http2})."""
    cls = h2ConnectionClass()
    return cls is not None and isinstance(channel, cls)


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


# Autobahn's WebSocket server (txflip.core.wsmove).


def webSocketFactoryOf(resource):
    """The factory behind an Autobahn C{WebSocketResource}."""
    return resource._factory


def startAutoPing(protocol) -> None:
    """Start a WebSocket's automatic pings, as Autobahn does once its handshake is done."""
    if protocol.autoPingInterval:
        protocol.autoPingPendingCall = protocol.factory._batched_timer.call_later(
            protocol.autoPingInterval, protocol._sendAutoPing
        )
