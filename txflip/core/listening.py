"""
How a generation listens: the keys listeners are known by, the sockets txflip
makes itself, and L{ListeningReactor}, which stands in for the reactor's
listen methods.

txflip creates every listening socket itself (socket, bind, listen,
non-blocking, close-on-exec) and adopts it into the reactor, in every
generation, the first one included. A port made by C{listenTCP} would be shut
down when it stops, killing the listener the next generation shares; an
adopted one is only closed (docs/design.rst, "listenTCP shuts its socket down").

L{ListeningReactor} takes the place of the reactor's C{listenTCP},
C{listenUNIX}, C{listenSSL} and C{listenUDP}, so that an app that listens by
itself (through C{strports}, endpoints or the reactor) adopts the socket its
predecessor handed down for the same address, without changing a line. What
it listens on is kept in the generation's L{txflip.core.listeners.ListenerRegistry}.

A UDP port is one socket shared by both generations during a handoff: the old
one stops reading when it pauses, so datagrams waiting in the socket's buffer
are read by the new one, and keeps the socket open for writing until it exits,
so that answers to datagrams it had already read still go out from the right
address. Multicast ports are not handed over (C{listenMulticast} is refused).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import tcp, unix
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorSSL,
    IReactorTCP,
    IReactorUDP,
    IReactorUNIX,
)
from zope.interface import implementer

from txflip.core.log import log
from txflip.core.twistedprivate import (
    adoptUNIXPort,
    boundPath,
    nameTLS,
    silenceCloseLog,
    skipShutdown,
)

if TYPE_CHECKING:
    from txflip.core.listeners import ListenerRegistry

FactoryHook = Callable[[IProtocolFactory], IProtocolFactory]


class HandoffUNIXPort(unix.Port):
    """
    A UNIX port that can stop accepting without unlinking its path.

    Twisted's UNIX port unlinks its path and shuts the socket down when it
    stops (docs/design.rst). At a handoff the next generation is listening on
    the same socket, so the path and the socket must stay as they are.
    """

    keepPath = False

    def release(self):
        """Stop accepting here; leave the path and the shared socket alone."""
        self.keepPath = True
        skipShutdown(self)
        silenceCloseLog(self)
        return self.stopListening()

    def connectionLost(self, reason):
        # unix.Port.connectionLost, except that a path that cannot be removed
        # (a read-only filesystem) is logged and the socket is closed anyway:
        # there, an unlink error skipped the close and failed the shutdown.
        if not self.keepPath:
            self._removePath()
            if self.lockFile is not None:
                self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)

    def _removePath(self) -> None:
        path = boundPath(self)
        if path[:1] in (b"\0", "\0"):
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error(
                "cannot remove {path}: {error}; closing the socket anyway",
                path=os.fsdecode(path),
                error=e.strerror,
            )


def tcpKey(port: int, interface: str) -> str:
    """The name a TCP listener is handed down by: what was asked for, not what was got."""
    if not interface:
        interface = "0.0.0.0"
    if isIPv6Address(interface):
        return f"tcp:[{interface}]:{port}"
    return f"tcp:{interface}:{port}"


def udpKey(port: int, interface: str) -> str:
    """The name a UDP port is handed down by."""
    return "udp:" + tcpKey(port, interface).partition(":")[2]


def unixKey(path: str | bytes) -> str:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return "unix:" + os.path.abspath(path)


def _unboundSocket(port: int, interface: str, kind: int) -> tuple[socket.socket, tuple]:
    """A close-on-exec socket of C{kind} for C{interface}, and the address to bind it to."""
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    try:
        if family == socket.AF_INET6:
            address = socket.getaddrinfo(
                interface, port, socket.AF_INET6, kind, 0, socket.AI_NUMERICHOST
            )[0][4]
        else:
            address = (interface or "0.0.0.0", port)
        return socket.socket(family, kind), address
    except OSError as e:
        raise CannotListenError(interface, port, e)


def bindTCP(port: int, interface: str, backlog: int) -> socket.socket:
    """A new, non-blocking, close-on-exec TCP listening socket."""
    skt, address = _unboundSocket(port, interface, socket.SOCK_STREAM)
    try:
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        skt.bind(address)
        skt.listen(backlog)
        skt.setblocking(False)
    except OSError as e:
        skt.close()
        raise CannotListenError(interface, port, e)
    return skt


def bindUDP(port: int, interface: str) -> socket.socket:
    """
    A new, non-blocking, close-on-exec UDP socket.

    No C{SO_REUSEADDR}: on a datagram socket it would let a second process bind
    the same port and silently share its traffic; the next generation gets
    this very socket instead.
    """
    skt, address = _unboundSocket(port, interface, socket.SOCK_DGRAM)
    try:
        skt.bind(address)
        skt.setblocking(False)
    except OSError as e:
        skt.close()
        raise CannotListenError(interface, port, e)
    return skt


class MulticastNotHandedOver(Exception):
    """C{listenMulticast} under flip: multicast ports are not handed over."""

    def __init__(self, port: int) -> None:
        super().__init__(
            f"listenMulticast({port}) is not supported under txflip: multicast ports are "
            "not handed over at a restart; serve multicast from a process flip does not run"
        )


def _clearStaleUNIXPath(path: str) -> None:
    """Remove a socket file nobody listens on; refuse anything else in the way."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise CannotListenError(None, path, OSError(errno.EEXIST, "exists and is not a socket"))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError as e:
            raise CannotListenError(None, path, e) from None
        return
    except OSError:
        return
    finally:
        probe.close()
    raise CannotListenError(None, path, OSError(errno.EADDRINUSE, "another process listens there"))


def bindUNIX(path: str, backlog: int, mode: int) -> socket.socket:
    """A new UNIX listening socket whose path never exists with looser permissions than C{mode}."""
    _clearStaleUNIXPath(path)
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    oldUmask = os.umask(0o777 & ~mode)
    try:
        skt.bind(path)
        os.chmod(path, mode)
        skt.listen(backlog)
        skt.setblocking(False)
    except OSError as e:
        skt.close()
        raise CannotListenError(None, path, e)
    finally:
        os.umask(oldUmask)
    return skt


@implementer(IReactorTCP, IReactorUNIX, IReactorSSL, IReactorUDP)
class ListeningReactor:
    """
    The reactor's listen methods as a generation offers them: each asks
    C{registry} for the listener of the address it is given, adopts the socket
    handed down for it or makes a new one, and gives the port to the registry.

    Its C{connect} methods are the reactor's own. It refuses C{listenMulticast}
    (L{MulticastNotHandedOver}) rather than providing it.

    @param reactor: the reactor to adopt sockets into.
    @param registry: where every listener is kept.
    @param factoryHook: applied to every factory before it serves (connection
        tracking for the drain).
    """

    def __init__(
        self, reactor, registry: ListenerRegistry, factoryHook: FactoryHook = lambda f: f
    ) -> None:
        self._reactor = reactor
        self._registry = registry
        self._factoryHook = factoryHook

    def track(self, factory):
        """C{factory}, as the listeners' factories are made to serve (tracked for the drain)."""
        return self._factoryHook(factory)

    def install(self) -> None:
        """Take the place of the reactor's listen methods (C{listenMulticast} included)."""
        self._reactor.listenTCP = self.listenTCP
        self._reactor.listenUNIX = self.listenUNIX
        self._reactor.listenSSL = self.listenSSL
        self._reactor.listenUDP = self.listenUDP
        self._reactor.listenMulticast = self.listenMulticast

    def listenTCP(self, port: int, factory, backlog: int = 50, interface: str = ""):
        return self._adoptTCP(port, self._factoryHook(factory), backlog, interface)

    def listenSSL(self, port: int, factory, contextFactory, backlog: int = 50, interface: str = ""):
        from twisted.protocols.tls import TLSMemoryBIOFactory

        tlsFactory = TLSMemoryBIOFactory(contextFactory, False, self._factoryHook(factory))
        adopted = self._adoptTCP(port, tlsFactory, backlog, interface)
        nameTLS(adopted)
        return adopted

    def _adoptTCP(self, port: int, factory, backlog: int, interface: str):
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        listener = self._registry.ask(tcpKey(port, interface), family)
        inherited = listener.takeHandedDown()
        if inherited is not None:
            adopted = self._reactor.adoptStreamPort(inherited, family, factory)
            os.close(inherited)
        else:
            skt = bindTCP(port, interface, backlog)
            try:
                adopted = self._reactor.adoptStreamPort(skt.fileno(), family, factory)
            finally:
                skt.close()
        return self._registry.add(listener, adopted)

    def listenUDP(self, port: int, protocol, interface: str = "", maxPacketSize: int = 8192):
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        listener = self._registry.ask(udpKey(port, interface), family)
        fd = listener.takeHandedDown()
        if fd is None:
            skt = bindUDP(port, interface)
            fd = os.dup(skt.fileno())
            skt.close()
        try:
            adopted = self._reactor.adoptDatagramPort(fd, family, protocol, maxPacketSize)
        finally:
            os.close(fd)
        return self._registry.add(listener, adopted)

    def listenMulticast(self, port: int, protocol, interface: str = "", *args, **kwargs):
        raise MulticastNotHandedOver(port)

    def listenUNIX(self, address, factory, backlog: int = 50, mode: int = 0o666, wantPID: int = 0):
        path = os.path.abspath(os.fsdecode(address))
        listener = self._registry.ask(unixKey(path), socket.AF_UNIX)
        fd = listener.takeHandedDown()
        if fd is None:
            skt = bindUNIX(path, backlog, mode)
            listener.noteCreatedPath(path)
            fd = os.dup(skt.fileno())
            skt.close()
            os.set_inheritable(fd, False)
        try:
            adopted = adoptUNIXPort(HandoffUNIXPort, self._reactor, fd, self._factoryHook(factory))
            adopted.mode = mode
            adopted.backlog = backlog
            adopted.startListening()
        finally:
            os.close(fd)
        return self._registry.add(listener, adopted)

    # Connecting is the reactor's.

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        return self._reactor.connectTCP(host, port, factory, timeout, bindAddress)

    def connectSSL(self, host, port, factory, contextFactory, timeout=30, bindAddress=None):
        return self._reactor.connectSSL(host, port, factory, contextFactory, timeout, bindAddress)

    def connectUNIX(self, address, factory, timeout=30, checkPID=0):
        return self._reactor.connectUNIX(address, factory, timeout, checkPID)
