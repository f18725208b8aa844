"""
A generation's listening sockets: one L{Listener} for each, and the
L{ListenerRegistry} that keeps them.

A L{Listener} owns everything about its socket: the key it is handed down by,
what it is for (the app's traffic, or txflip's own control socket), where it
came from (handed down by the previous generation, offered back by systemd's
fd store, or bound here), whether another process keeps it too (the fd store),
and where it stands (handed down and not claimed yet, listening, paused,
muted, released). Code outside the core changes a listener only through its
methods and the registry's.

The registry is the one store; L{txflip.core.listening.ListeningReactor}
(C{registry.standIn}) is the stand-in for the reactor's listen methods that
fills it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterable

from twisted.internet import udp

from txflip.core.handoff import InheritedListener, handDown
from txflip.core.listening import FactoryHook, HandoffUNIXPort, ListeningReactor
from txflip.core.log import log
from txflip.core.twistedprivate import silenceCloseLog


class Listener:
    """
    One listening socket of this generation, from the moment it is handed down
    or asked for until it is released or closed.

    @ivar key: the name it is handed down by: the address asked for, not the
        one the kernel gave (L{txflip.core.listening.tcpKey}).
    @ivar port: the reactor's port, once something listens on it.
    @ivar handedDown: whether the previous generation (or systemd) handed it down.
    @ivar internal: txflip's own (the control socket): it serves no app traffic.
    @ivar offered: handed down as an offer, not a promise (systemd's fd store
        hands back what an earlier configuration had): not listening on it
        again keeps no one waiting.
    @ivar heldElsewhere: another process keeps the socket for the next start
        (systemd's fd store): a final shutdown lets go of it as at a handoff.
    @ivar muted: never accepts in this process (a workers' leader).
    @ivar paused: told to leave new connections in the kernel's queue.
    @ivar released: let go of for good (L{release}): no longer active here,
        from that moment on.
    """

    def __init__(self, key: str, family: int, handedDownFd: int | None = None) -> None:
        self.key = key
        self.family = family
        self.port = None
        self.handedDown = handedDownFd is not None
        self._handedDownFd = handedDownFd
        self.askedAs: str | None = None
        """The key the app asked for (without the C{#n} of a repeated address), once asked."""
        self.internal = False
        self.offered = False
        self.heldElsewhere = False
        self.muted = False
        self.paused = False
        self.released = False
        self._createdPath: tuple[str, int, int] | None = None

    @classmethod
    def fromHandoff(cls, item: InheritedListener) -> Listener:
        """A listener handed down at C{item.fd}: made close-on-exec, waiting to be claimed."""
        os.set_inheritable(item.fd, False)
        return cls(item.key, getattr(socket.AddressFamily, item.family, socket.AF_UNSPEC), item.fd)

    # What it is for, and who else holds it: said by the code that knows.

    def markInternal(self) -> None:
        """txflip's own listener (the control socket): it serves no app traffic."""
        self.internal = True

    def markOffered(self) -> None:
        """Handed down as an offer: this generation need not listen on it again."""
        self.offered = True

    def markHeldElsewhere(self) -> None:
        """Another process keeps this socket for the next start: never close it for good."""
        self.heldElsewhere = True

    # Where it stands.

    @property
    def familyName(self) -> str:
        return socket.AddressFamily(self.family).name

    @property
    def unclaimed(self) -> bool:
        """Handed down, and nothing in this generation has asked for it yet."""
        return self._handedDownFd is not None and self.askedAs is None

    @property
    def listening(self) -> bool:
        return not self.released and bool(getattr(self.port, "connected", False))

    def takeHandedDown(self) -> int | None:
        """The descriptor handed down for it, now the caller's to adopt and close (or L{None})."""
        fd, self._handedDownFd = self._handedDownFd, None
        return fd

    def noteCreatedPath(self, path: str) -> None:
        """This generation bound the unix socket at C{path} itself (see L{removeCreatedPath})."""
        created = os.lstat(path)
        self._createdPath = (path, created.st_dev, created.st_ino)

    def listenOn(self, port, paused: bool) -> None:
        """Something listens on it now, through C{port}."""
        self.port = port
        if paused:
            self.pause()

    def keepForAgain(self) -> None:
        """
        The app stops listening here during a sequential handover's pause: keep
        a copy of the socket, unclaimed, for the app to listen on again if it
        starts again (its key stays known for the port it had).
        """
        self._handedDownFd = os.dup(self.port.fileno())
        os.set_inheritable(self._handedDownFd, False)
        self.askedAs = None
        self.handedDown = True
        log.info("keeping {key} while the app is stopped", key=self.key)

    def keptDescriptor(self) -> int | None:
        """The descriptor kept for it while nothing listens (handed down or kept), if any."""
        return self._handedDownFd

    def description(self, fd: int) -> InheritedListener:
        """What a child that gets this socket at C{fd} is told about it."""
        return InheritedListener(fd, self.key, self.familyName)

    # Accepting.

    def pause(self) -> None:
        """Leave new connections in the kernel's queue for now."""
        self.paused = True
        self.port.stopReading()

    def resume(self) -> None:
        """Accept again (never, if muted)."""
        self.paused = False
        if not self.muted:
            self.port.startReading()

    def mute(self) -> None:
        """Never accept in this process from now on; the socket stays open for others."""
        self.muted = True
        self.pause()

    # Letting go.

    def release(self):
        """Stop accepting for good; the socket lives on in the other generation."""
        # Twisted would log "(TCP Port 8080 Closed)" while the port goes on
        # serving in the other process: say what really happens instead.
        log.info("handed over {key}: it stays open in the other generation", key=self.key)
        self.released = True
        if isinstance(self.port, HandoffUNIXPort):
            return self.port.release()
        if isinstance(self.port, udp.Port):
            # Stop reading, but keep writing answers until this process exits.
            self.port.stopReading()
            return None
        silenceCloseLog(self.port)
        return self.port.stopListening()

    def stop(self):
        """Close for good (a unix path is removed), or let go if another process keeps it."""
        if self.heldElsewhere:
            return self.release()
        return self.port.stopListening()

    def closeUnclaimed(self) -> None:
        """Close the descriptor handed down for it: this generation does not listen there."""
        fd = self.takeHandedDown()
        if fd is None:
            return
        log.warn("closing inherited listener {key}: nothing listens there any more", key=self.key)
        try:
            os.close(fd)
        except OSError:
            pass

    def removeCreatedPath(self) -> None:
        """
        Remove the unix socket file this generation bound itself, if it is still
        the socket it made (never one handed down).
        """
        if self._createdPath is None:
            return
        path, dev, ino = self._createdPath
        self._createdPath = None
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (dev, ino):
                os.unlink(path)
        except OSError:
            pass


class ListenerRegistry:
    """
    Every listener of this generation, and those its parent handed down.

    @param reactor: the reactor to adopt sockets into.
    @param inherited: the descriptors the parent handed down.
    @param factoryHook: applied to every factory before it serves (connection
        tracking for the drain).
    @param paused: whether new ports start without accepting (a child
        generation accepts only once its parent says go).
    @param onClaimed: called with the key of each inherited socket once
        this generation listens on it again.
    @param onListening: called with the key of every listener, inherited or new.

    @ivar standIn: the stand-in for the reactor's listen methods, which fills
        this registry (L{install} puts it in the reactor's place).
    """

    def __init__(
        self,
        reactor,
        inherited: Iterable[InheritedListener] = (),
        factoryHook: FactoryHook = lambda f: f,
        paused: bool = False,
        onClaimed: Callable[[str], None] = lambda key: None,
        onListening: Callable[[str], None] = lambda key: None,
    ) -> None:
        self._listeners: list[Listener] = [Listener.fromHandoff(item) for item in inherited]
        self._paused = paused
        self._onClaimed = onClaimed
        self._onListening = onListening
        self.standIn = ListeningReactor(reactor, self, factoryHook)
        self.keepWhenStopped = False
        """While true (a sequential handover's pause), a port the app stops keeps
        its socket here, paused, for the app to listen on again if it restarts."""

    def install(self) -> None:
        """Stand in for the reactor's C{listenTCP}, C{listenUNIX}, C{listenSSL} and C{listenUDP}."""
        self.standIn.install()

    # Filled by the stand-in.

    def ask(self, key: str, family: int) -> Listener:
        """
        The listener for this generation's next request to listen on C{key}:
        the one handed down under the same name, or a new one.
        """
        unique = self._uniqueKey(key)
        for listener in self._listeners:
            if listener.key == unique and listener.unclaimed:
                break
        else:
            listener = Listener(unique, family)
            self._listeners.append(listener)
        listener.family = family
        listener.askedAs = key
        return listener

    def _uniqueKey(self, key: str) -> str:
        """C{key}, or C{key#n} when the app has asked for the same address n times before."""
        count = sum(1 for listener in self._listeners if listener.askedAs == key)
        return key if count == 0 else f"{key}#{count}"

    def add(self, listener: Listener, port):
        """C{listener} listens through C{port} now; return the port."""
        self._listeners.remove(listener)
        self._listeners.append(listener)
        listener.listenOn(port, self._paused)
        stopListening = port.stopListening

        def stopListeningOrKeep():
            if self.keepWhenStopped and listener.listening and listener.port is port:
                listener.keepForAgain()
            return stopListening()

        port.stopListening = stopListeningOrKeep
        log.info(
            "{how} {key}",
            how="adopted inherited listener" if listener.handedDown else "listening on",
            key=listener.key,
        )
        if listener.handedDown:
            self._onClaimed(listener.key)
        self._onListening(listener.key)
        return port

    # What it holds.

    @property
    def listeners(self) -> list[Listener]:
        """Every listener something has listened on, in the order they started."""
        return [listener for listener in self._listeners if listener.port is not None]

    def find(self, key: str) -> Listener | None:
        """The listener C{key} names, listened on or still handed down."""
        for listener in self._listeners:
            if listener.key == key:
                return listener
        return None

    def listeningDescriptors(self) -> list[int]:
        """The descriptor of every socket this generation listens on or keeps."""
        return [listener.port.fileno() for listener in self.active()] + [
            fd for listener in self._listeners if (fd := listener.keptDescriptor()) is not None
        ]

    def active(self) -> list[Listener]:
        return [listener for listener in self.listeners if listener.listening]

    def serving(self) -> list[Listener]:
        """The active listeners that carry the app's traffic."""
        return [listener for listener in self.active() if not listener.internal]

    def keyOf(self, port) -> str | None:
        """The key of the listener whose port is C{port}."""
        for listener in self.listeners:
            if listener.port is port:
                return listener.key
        return None

    def track(self, factory):
        """
        C{factory}, as this registry's listeners' factories are made to serve:
        for a factory that serves connections that did not arrive on a port
        here (a WebSocket moved from a C{Site}'s resource).
        """
        return self.standIn.track(factory)

    def appFactory(self, key: str):
        """The protocol factory of the app's listener C{key} here, or L{None}."""
        for listener in self.listeners:
            if listener.key == key and not listener.internal:
                return getattr(listener.port, "factory", None)
        return None

    def isInternal(self, key: str | None) -> bool:
        """Whether C{key} names txflip's own listener (the control socket)."""
        listener = self.find(key) if key is not None else None
        return listener is not None and listener.internal

    # Told by the code that knows.

    def markInternal(self, key: str) -> None:
        """C{key} is txflip's own listener (the control socket), which serves no app traffic."""
        listener = self.find(key)
        if listener is not None:
            listener.markInternal()

    def offer(self, keys: Iterable[str]) -> None:
        """The handed-down sockets C{keys} are offers: nobody waits for them to be claimed."""
        for key in keys:
            listener = self.find(key)
            if listener is not None:
                listener.markOffered()

    # Handing over.

    def handoffDescriptors(
        self, firstFd: int = 3, listeners: list[Listener] | None = None
    ) -> tuple[dict[int, int], list[InheritedListener]]:
        """
        The C{childFDs} entries and descriptions for C{listeners} (by default
        every active listener).

        @return: a map from child descriptor to this process's descriptor, and
            what the child is told about each.
        """
        return handDown(self.active() if listeners is None else listeners, firstFd)

    def unclaimed(self) -> list[str]:
        """Keys of inherited sockets nobody has listened on again yet (offers aside)."""
        return sorted(
            listener.key
            for listener in self._listeners
            if listener.unclaimed and not listener.offered
        )

    def closeUnclaimed(self) -> None:
        """Close inherited sockets this generation's configuration no longer asks for."""
        unclaimed = sorted(
            (listener for listener in self._listeners if listener.unclaimed),
            key=lambda listener: listener.key,
        )
        for listener in unclaimed:
            listener.closeUnclaimed()
            self._listeners.remove(listener)

    @property
    def paused(self) -> bool:
        """Whether the generation has told its listeners to stop accepting."""
        return self._paused

    def pauseAll(self) -> None:
        self._paused = True
        for listener in self.active():
            listener.pause()

    def pauseApp(self) -> None:
        """Pause the app's listeners; txflip's own (the control socket) go on accepting."""
        self._paused = True
        for listener in self.serving():
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
        for listener in sorted(self._listeners, key=lambda listener: listener.key):
            listener.removeCreatedPath()

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
                maybeDeferred(listener.stop).addErrback(failed, listener.key)
                for listener in self.active()
            ]
        )
