"""
A TCP proxy that delays everything by a fixed time in each direction.

Loopback delivers a FIN or a RST before the sender's next instruction runs,
which hides the races of a real network: a client's next request and the
server's close crossing in flight.  L{DelayProxy} puts C{delay} seconds between
each side and the other.  Bytes, the connection's opening, a half-close (FIN)
and a reset (RST) are each passed on C{delay} seconds after the proxy saw them,
in order, and a FIN is never turned into a RST or the other way round.

One daemon thread runs a C{selectors} loop, so blocking clients and
Twisted-run tests can both use it.  The upstream may be a unix socket path;
unix sockets have no RST, so there a reset becomes a plain close.
"""

from __future__ import annotations

import enum
import errno
import selectors
import socket
import struct
import threading
import time
from collections import deque
from types import TracebackType
from typing import Literal

Upstream = tuple[str, int] | str

_CHUNK = 65536
_QUEUE_LIMIT = 1 << 20  # bytes waiting in one direction before reading pauses
_ACCEPTS_PER_WAKE = 64
# After sending to a socket whose peer had sent its FIN, the peer's kernel may
# answer with a RST; nothing reads that socket any more, so poll its error a while.
_PROBE_WINDOW = 0.05
_PROBE_INTERVAL = 0.001
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class _Signal(enum.Enum):
    EOF = "eof"
    RESET = "reset"


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _abort(sock: socket.socket) -> None:
    """Close C{sock} with a RST rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Direction:
    """One way through a link: what was read from C{src}, waiting to go to C{dst}."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, bytes | _Signal]] = deque()
        self.queued = 0  # bytes in the queue
        self.reading = True  # src may still send something
        self.blocked = False  # dst's send buffer was full
        self.ended = False  # the EOF has been delivered to dst
        self.resetting = False  # a RST is queued for dst
        self.probeUntil = 0.0  # until then, look for a RST from dst after its FIN


class _Link:
    """One accepted client connection and its connection to the upstream."""

    def __init__(self, client: socket.socket, upstream: socket.socket, connectAt: float) -> None:
        self.client = client
        self.upstream = upstream
        self.connectAt = connectAt
        self.state: Literal["waiting", "connecting", "open", "done"] = "waiting"
        self.up = _Direction(client, upstream)
        self.down = _Direction(upstream, client)

    def other(self, direction: _Direction) -> _Direction:
        return self.down if direction is self.up else self.up


class DelayProxy:
    """
    Listen on C{listenHost}, on a free port, and forward each connection to
    C{upstream}, C{("host", port)} or a unix socket path, C{delay} seconds late
    each way.

    @ivar address: the C{(host, port)} clients connect to.
    @ivar port: its port.
    @ivar connections: client connections accepted so far.
    """

    def __init__(
        self, upstream: Upstream, delay: float = 0.02, listenHost: str = "127.0.0.1"
    ) -> None:
        self.upstream = upstream
        self.delay = delay
        if isinstance(upstream, str):
            self._family = socket.AF_UNIX
        else:
            self._family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        listenFamily = socket.AF_INET6 if ":" in listenHost else socket.AF_INET
        self._listener = socket.socket(listenFamily, socket.SOCK_STREAM)
        self._listener.bind((listenHost, 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.port = self.address[1]
        self.connections = 0
        self._links: list[_Link] = []
        self._selector = selectors.DefaultSelector()
        self._wakeReader, self._wakeWriter = socket.socketpair()
        self._wakeReader.setblocking(False)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"DelayProxy:{self.port}", daemon=True
        )

    def start(self) -> DelayProxy:
        """Start forwarding, in a daemon thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every socket and wait, at most C{timeout} seconds, for the thread to end."""
        self._stopping = True
        if self._thread.is_alive():
            try:
                self._wakeWriter.send(b"x")
            except OSError:
                pass
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} did not stop within {timeout}s")
        else:
            self._closeAll()
        self._wakeWriter.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = self._deliver(time.monotonic())
                self._watch()
                events = self._selector.select(timeout)
                now = time.monotonic()
                for key, mask in events:
                    self._handle(key.fileobj, key.data, mask, now)
        finally:
            self._closeAll()

    def _closeAll(self) -> None:
        for link in self._links:
            link.client.close()
            link.upstream.close()
        self._links = []
        self._listener.close()
        self._wakeReader.close()
        self._selector.close()

    def _handle(self, sock: socket.socket, link: _Link | None, mask: int, now: float) -> None:
        """React to C{sock} being readable or writable."""
        if sock is self._listener:
            self._accept(now)
        elif link is None:
            self._wakeReader.recv(4096)
        elif sock is link.client:
            if mask & _WRITE:
                link.down.blocked = False
            if mask & _READ:
                self._read(link, link.up, now)
        elif link.state == "connecting":
            if link.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._refused(link, now)
            else:
                link.state = "open"
        else:
            if mask & _WRITE:
                link.up.blocked = False
            if mask & _READ:
                self._read(link, link.down, now)

    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream = socket.socket(self._family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            if self._family != socket.AF_UNIX:
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._links.append(_Link(client, upstream, now + self.delay))

    def _connect(self, link: _Link, now: float) -> None:
        """Open the upstream connection, C{delay} after the client's."""
        err = link.upstream.connect_ex(self.upstream)
        if err == 0:
            link.state = "open"
        elif err == errno.EINPROGRESS:
            link.state = "connecting"
        else:
            self._refused(link, now)

    def _refused(self, link: _Link, now: float) -> None:
        """The upstream refused: drop what the client sent, and reset it C{delay} later."""
        link.state = "open"
        link.up.queue.clear()
        link.up.queued = 0
        link.up.reading = False
        link.down.reading = False
        link.down.resetting = True
        link.down.queue.append((now + self.delay, _Signal.RESET))

    def _read(self, link: _Link, direction: _Direction, now: float) -> None:
        try:
            data = direction.src.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._peerReset(link, direction, now)
            return
        if data:
            direction.queue.append((now + self.delay, data))
            direction.queued += len(data)
        else:
            direction.reading = False
            direction.queue.append((now + self.delay, _Signal.EOF))

    def _peerReset(self, link: _Link, direction: _Direction, now: float) -> None:
        """C{direction.src} reset: nothing more goes to it, and its peer is reset C{delay} later."""
        back = link.other(direction)
        back.queue.clear()
        back.queued = 0
        back.reading = back.blocked = False
        back.probeUntil = 0.0
        direction.reading = False
        if not direction.resetting:
            direction.resetting = True
            direction.queue.append((now + self.delay, _Signal.RESET))

    def _deliver(self, now: float) -> float | None:
        """Send everything that is due; return the seconds until the next thing is."""
        nextDue: float | None = None
        for link in self._links:
            if link.state == "waiting" and link.connectAt <= now:
                self._connect(link, now)
            if link.state == "waiting":
                nextDue = _earliest(nextDue, link.connectAt)
            for direction in (link.up, link.down):
                if link.state != "open":
                    break
                self._flush(link, direction, now)
                if direction.probeUntil > now and link.state == "open":
                    if direction.dst.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._peerReset(link, link.other(direction), now)
                    else:
                        nextDue = _earliest(nextDue, now + _PROBE_INTERVAL)
            if link.state != "open":
                continue
            if link.up.ended and link.down.ended:
                self._finish(link, reset=False)
                continue
            for direction in (link.up, link.down):
                if direction.queue and not direction.blocked:
                    nextDue = _earliest(nextDue, direction.queue[0][0])
        self._links = [link for link in self._links if link.state != "done"]
        return None if nextDue is None else max(0.0, nextDue - now)

    def _flush(self, link: _Link, direction: _Direction, now: float) -> None:
        while direction.queue and not direction.blocked and direction.queue[0][0] <= now:
            due, item = direction.queue[0]
            if item is _Signal.RESET:
                self._finish(link, reset=True)
                return
            try:
                if item is _Signal.EOF:
                    direction.dst.shutdown(socket.SHUT_WR)
                    direction.ended = True
                    sent = 0
                else:
                    sent = direction.dst.send(item)
            except (BlockingIOError, InterruptedError):
                direction.blocked = True
                return
            except OSError:
                self._peerReset(link, link.other(direction), now)
                return
            if isinstance(item, bytes) and sent < len(item):
                direction.queue[0] = (due, item[sent:])
                direction.blocked = True
            else:
                direction.queue.popleft()
            direction.queued -= sent
            if sent and not link.other(direction).reading:
                direction.probeUntil = now + _PROBE_WINDOW

    def _finish(self, link: _Link, reset: bool) -> None:
        """Close both sockets: with a RST if C{reset}, else normally."""
        link.state = "done"
        for sock in (link.client, link.upstream):
            if sock in self._selector.get_map():
                self._selector.unregister(sock)
            if reset:
                _abort(sock)
            else:
                sock.close()

    def _watch(self) -> None:
        """Tell the selector what each socket is waited on for now."""
        wanted: dict[socket.socket, tuple[int, _Link | None]] = {
            self._listener: (_READ, None),
            self._wakeReader: (_READ, None),
        }
        for link in self._links:
            up, down = link.up, link.down
            wanted[link.client] = (
                (_READ if up.reading and up.queued < _QUEUE_LIMIT else 0)
                | (_WRITE if down.blocked else 0),
                link,
            )
            if link.state == "connecting":
                wanted[link.upstream] = (_WRITE, link)
            elif link.state == "open":
                wanted[link.upstream] = (
                    (_READ if down.reading and down.queued < _QUEUE_LIMIT else 0)
                    | (_WRITE if up.blocked else 0),
                    link,
                )
        registered = self._selector.get_map()
        for key in list(registered.values()):
            events = wanted[key.fileobj][0] if key.fileobj in wanted else 0
            if not events:
                self._selector.unregister(key.fileobj)
            elif events != key.events:
                self._selector.modify(key.fileobj, events, key.data)
        for sock, (events, link) in wanted.items():
            if events and sock not in registered:
                self._selector.register(sock, events, link)
