"""
Listening sockets that can be handed from one generation to the next.

txflip creates every listening socket itself (socket, bind, listen,
non-blocking, close-on-exec) and adopts it into the reactor, in every
generation, the first one included. A port made by C{listenTCP} would be shut
down when it stops, killing the listener the next generation shares; an
adopted one is only closed (docs/design.rst, "listenTCP shuts its socket down").

L{ListenerRegistry} also stands in for the reactor's C{listenTCP},
C{listenUNIX}, C{listenSSL} and C{listenUDP}, so that an app that listens by
itself (through C{strports}, endpoints or the reactor) adopts the socket its
predecessor handed down for the same address, without changing a line.

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
from dataclasses import dataclass

from twisted.internet import tcp, udp, unix
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory

from txflip.core.handoff import InheritedListener
from txflip.core.log import log
from txflip.core.twistedprivate import (
    adoptUNIXPort,
    boundPath,
    nameTLS,
    silenceCloseLog,
    skipShutdown,
)

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


@dataclass
class Listener:
    """One listening port of this generation and the key it is handed down by."""

    key: str
    family: int
    port: tcp.Port

    @property
    def familyName(self) -> str:
        return socket.AddressFamily(self.family).name

    @property
    def listening(self) -> bool:
        return not self.released and bool(getattr(self.port, "connected", False))

    def pause(self) -> None:
        """Leave new connections in the kernel's queue for now."""
        self.port.stopReading()

    def resume(self) -> None:
        """Accept again."""
        self.port.startReading()

    released = False

    def release(self):
        """Stop accepting for good; the socket lives on in the other generation."""
        # Twisted would log "(TCP Port 8080 Closed)" while the port goes on
        # serving in the other process: say what really happens instead.
        log.info("handed over {key}: it stays open in the other generation", key=self.key)
        if isinstance(self.port, HandoffUNIXPort):
            return self.port.release()
        if isinstance(self.port, udp.Port):
            # Stop reading, but keep writing answers until this process exits.
            self.released = True
            self.port.stopReading()
            return None
        silenceCloseLog(self.port)
        return self.port.stopListening()


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


class ListenerRegistry:
    """
    Every listening port of this generation, and those its parent handed down.

    @param reactor: the reactor to adopt sockets into.
    @param inherited: the descriptors the parent handed down.
    @param factoryHook: applied to every factory before it serves (connection
        tracking for the drain).
    @param paused: whether new ports start without accepting (a child
        generation accepts only once its parent says go).
    @param onClaimed: called with the key of each inherited socket once
        this generation listens on it again.
    @param onListening: called with the key of every listener, inherited or new.
    """

    def __init__(
        self,
        reactor,
        inherited: list[InheritedListener] = (),
        factoryHook: FactoryHook = lambda f: f,
        paused: bool = False,
        onClaimed: Callable[[str], None] = lambda key: None,
        onListening: Callable[[str], None] = lambda key: None,
    ) -> None:
        self._reactor = reactor
        self._inherited: dict[str, InheritedListener] = {i.key: i for i in inherited}
        for item in inherited:
            os.set_inheritable(item.fd, False)
        self._factoryHook = factoryHook
        self._paused = paused
        self._onClaimed = onClaimed
        self._onListening = onListening
        self._keysAsked: dict[str, int] = {}
        self._createdPaths: dict[str, tuple[int, int]] = {}
        self.listeners: list[Listener] = []
        self.internal: set[str] = set()
        """Keys of txflip's own listeners (the control socket), which serve no app traffic."""
        self.offered: set[str] = set()
        """Keys of inherited sockets that are offered, not promised (systemd's fd store
        hands back what an earlier configuration had): not listening on one again
        keeps no one waiting; it is closed once this generation is ready."""
        self.heldElsewhere: set[str] = set()
        """Keys of listeners whose socket another process keeps for the next start
        (systemd's fd store): a final shutdown lets go of them as at a handoff."""

    # The reactor's listen methods, as this generation offers them.

    def install(self) -> None:
        """Stand in for the reactor's C{listenTCP}, C{listenUNIX}, C{listenSSL} and C{listenUDP}."""
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
        key = self._uniqueKey(tcpKey(port, interface))
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        inherited = self._inherited.pop(key, None)
        if inherited is not None:
            adopted = self._reactor.adoptStreamPort(inherited.fd, family, factory)
            os.close(inherited.fd)
        else:
            skt = bindTCP(port, interface, backlog)
            try:
                adopted = self._reactor.adoptStreamPort(skt.fileno(), family, factory)
            finally:
                skt.close()
        return self._register(key, family, adopted, inherited is not None)

    def listenUDP(self, port: int, protocol, interface: str = "", maxPacketSize: int = 8192):
        key = self._uniqueKey(udpKey(port, interface))
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        inherited = self._inherited.pop(key, None)
        if inherited is not None:
            fd = inherited.fd
        else:
            skt = bindUDP(port, interface)
            fd = os.dup(skt.fileno())
            skt.close()
        try:
            adopted = self._reactor.adoptDatagramPort(fd, family, protocol, maxPacketSize)
        finally:
            os.close(fd)
        return self._register(key, family, adopted, inherited is not None)

    def listenMulticast(self, port: int, protocol, interface: str = "", *args, **kwargs):
        raise MulticastNotHandedOver(port)

    def listenUNIX(self, address, factory, backlog: int = 50, mode: int = 0o666, wantPID: int = 0):
        path = os.path.abspath(os.fsdecode(address))
        key = self._uniqueKey(unixKey(path))
        inherited = self._inherited.pop(key, None)
        if inherited is not None:
            fd = inherited.fd
        else:
            skt = bindUNIX(path, backlog, mode)
            created = os.lstat(path)
            self._createdPaths[path] = (created.st_dev, created.st_ino)
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
        return self._register(key, socket.AF_UNIX, adopted, inherited is not None)

    # Handing over.

    def _uniqueKey(self, key: str) -> str:
        count = self._keysAsked.get(key, 0)
        self._keysAsked[key] = count + 1
        return key if count == 0 else f"{key}#{count}"

    def _register(self, key: str, family: int, port, wasInherited: bool):
        listener = Listener(key, family, port)
        self.listeners.append(listener)
        if self._paused:
            listener.pause()
        log.info(
            "{how} {key}",
            how="adopted inherited listener" if wasInherited else "listening on",
            key=key,
        )
        if wasInherited:
            self._onClaimed(key)
        self._onListening(key)
        return port

    def active(self) -> list[Listener]:
        return [listener for listener in self.listeners if listener.listening]

    def serving(self) -> list[Listener]:
        """The active listeners that carry the app's traffic."""
        return [listener for listener in self.active() if listener.key not in self.internal]

    def handoffDescriptors(
        self, firstFd: int = 3, listeners: list[Listener] | None = None
    ) -> tuple[dict[int, int], list[InheritedListener]]:
        """
        The C{childFDs} entries and descriptions for C{listeners} (by default
        every active listener).

        @return: a map from child descriptor to this process's descriptor, and
            what the child is told about each.
        """
        childFDs: dict[int, int] = {}
        described: list[InheritedListener] = []
        chosen = self.active() if listeners is None else listeners
        for offset, listener in enumerate(chosen):
            fd = firstFd + offset
            childFDs[fd] = listener.port.fileno()
            described.append(InheritedListener(fd, listener.key, listener.familyName))
        return childFDs, described

    def unclaimed(self) -> list[str]:
        """Keys of inherited sockets nobody has listened on again yet (offers aside)."""
        return sorted(key for key in self._inherited if key not in self.offered)

    def closeUnclaimed(self) -> None:
        """Close inherited sockets this generation's configuration no longer asks for."""
        for key, item in sorted(self._inherited.items()):
            log.warn("closing inherited listener {key}: nothing listens there any more", key=key)
            try:
                os.close(item.fd)
            except OSError:
                pass
        self._inherited.clear()

    @property
    def paused(self) -> bool:
        """Whether the generation has told its listeners to stop accepting."""
        return self._paused

    def pauseAll(self) -> None:
        self._paused = True
        for listener in self.active():
            listener.pause()

    def resumeAll(self) -> None:
        self._paused = False
        for listener in self.active():
            listener.resume()

    def releaseAll(self) -> None:
        """Stop accepting on every listener without harming the shared sockets."""
        for listener in self.active():
            listener.release()

    def removeCreatedPaths(self) -> None:
        """
        Remove the unix socket files this generation bound itself (never inherited
        ones), if they are still the sockets it made: for a generation that exits
        without ever serving, whose own sockets no other process holds.
        """
        for path, identity in sorted(self._createdPaths.items()):
            try:
                st = os.lstat(path)
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == identity:
                    os.unlink(path)
            except OSError:
                pass
        self._createdPaths.clear()

    def stopAll(self):
        """
        Close every listener for good (a final shutdown: UNIX paths are removed).

        One that fails to close is logged and the others go on: the shutdown
        (its drain, its exit) never depends on closing a socket. One held
        elsewhere is released instead: its path and socket stay usable.
        """
        from twisted.internet.defer import gatherResults, maybeDeferred

        def failed(failure, key: str) -> None:
            log.error(
                "closing listener {key} failed: {error}; shutting down anyway",
                key=key,
                error=failure.getErrorMessage(),
            )

        return gatherResults(
            [
                maybeDeferred(
                    listener.release
                    if listener.key in self.heldElsewhere
                    else listener.port.stopListening
                ).addErrback(failed, listener.key)
                for listener in self.active()
            ]
        )
