"""
L{DelayProxy} against small real servers run in threads: bytes, EOF and
resets each arrive late and unchanged, and a server's close and a client's
next request can cross in flight, as on a real network.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.trial.unittest import TestCase

from tests.support.delayproxy import DelayProxy
from tests.support.procs import waitFor

DELAY = 0.02
DEADLINE = 2.0  # seconds any single wait may take before the test fails


def abort(sock: socket.socket) -> None:
    """Close C{sock} with a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def waitEvent(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE):
        raise AssertionError(f"gave up after {DEADLINE}s waiting for {what}")


def readToEnd(sock: socket.socket) -> tuple[bytes, float]:
    """Everything C{sock} receives until EOF, and when the EOF came."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def echo(conn: socket.socket) -> None:
    """Send back everything received; half-close when the client does."""
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


@dataclass
class IdleClose:
    """What one run of the idle-close race saw."""

    sendingAt: float = 0.0  # the client starts sending its second request
    checkedAt: float = 0.0  # the server's idle timer looked for it (and closed if absent)
    arrived: bool = False
    answer: bytes | ConnectionError | None = None
    answeredAt: float = 0.0  # the client got the answer, or gave up


class Server:
    """
    A real server in a thread, on 127.0.0.1 or a unix socket C{path}: runs
    C{handler(conn)} in a thread of its own for each connection accepted.
    """

    def __init__(
        self, testCase: TestCase, handler: Callable[[socket.socket], None], path: str | None = None
    ) -> None:
        self.handler = handler
        self.errors: list[BaseException] = []
        self.conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        if path is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.address: tuple[str, int] | str = self.sock.getsockname()
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.address = path
        self.sock.listen(16)
        self.sock.settimeout(0.01)
        self._acceptor = threading.Thread(target=self._serve, daemon=True)
        self._acceptor.start()
        testCase.addCleanup(self.stop)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(DEADLINE)
            self.conns.append(conn)
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except BaseException as e:
            self.errors.append(e)

    def stop(self) -> None:
        """Stop accepting, close every connection, and wait for the threads."""
        self._stopping.set()
        self._acceptor.join(DEADLINE)
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv
            conn.close()
        for thread in self._threads:
            thread.join(DEADLINE)
        assert not self._acceptor.is_alive(), "the server's accept thread did not end"


class DelayProxyTests(TestCase):
    def proxy(self, upstream: tuple[str, int] | str, delay: float = DELAY) -> DelayProxy:
        proxy = DelayProxy(upstream, delay).start()
        self.addCleanup(proxy.stop)
        return proxy

    def connect(self, address: tuple[str, int]) -> socket.socket:
        sock = socket.create_connection(address, timeout=DEADLINE)
        self.addCleanup(sock.close)
        return sock

    def roundTrip(self, sock: socket.socket) -> float:
        start = time.monotonic()
        sock.sendall(b"ping")
        self.assertEqual(sock.recv(4, socket.MSG_WAITALL), b"ping")
        return time.monotonic() - start

    def test_delaysEachWayKeepsOrder(self):
        """
        A round trip through the proxy takes at least twice the delay, and a
        stream of several MiB each way comes back whole and in order, far
        faster than a delay per chunk would allow.
        """
        server = Server(self, echo)
        proxy = self.proxy(server.address)
        direct = self.roundTrip(self.connect(server.address))
        client = self.connect(proxy.address)
        proxied = self.roundTrip(client)
        self.assertGreaterEqual(proxied, 2 * DELAY)
        self.assertLess(direct, proxied)

        payload = os.urandom(4 << 20)
        sendErrors: list[OSError] = []

        def send() -> None:
            try:
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
            except OSError as e:
                sendErrors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        start = time.monotonic()
        sender.start()
        self.addCleanup(sender.join, DEADLINE)
        received, endedAt = readToEnd(client)
        self.assertEqual(received, payload)
        # At least 64 recv chunks each way: a delay per chunk would take > 1.28s.
        self.assertLess(endedAt - start, 0.6)
        self.assertEqual((proxy.connections, server.errors, sendErrors), (1, [], []))

    def test_serverHalfClose(self):
        """
        The server's half-close reaches the client as EOF, a delay after it was
        made; the client can still send, and its own EOF reaches the server.
        """
        shutAt: list[float] = []
        heard: list[bytes] = []
        done = threading.Event()

        def handler(conn: socket.socket) -> None:
            conn.sendall(b"bye")
            shutAt.append(time.monotonic())
            conn.shutdown(socket.SHUT_WR)
            heard.append(readToEnd(conn)[0])
            done.set()

        server = Server(self, handler)
        client = self.connect(self.proxy(server.address).address)
        received, eofAt = readToEnd(client)
        self.assertEqual(received, b"bye")
        self.assertGreaterEqual(eofAt - shutAt[0], DELAY)
        client.sendall(b"still here")
        client.shutdown(socket.SHUT_WR)
        waitEvent(done, "the server to read to EOF")
        self.assertEqual((heard, server.errors), ([b"still here"], []))

    def test_serverResetReachesClient(self):
        """A server's RST reaches the client as a reset, not EOF, a delay later."""
        resetAt: list[float] = []

        def handler(conn: socket.socket) -> None:
            conn.recv(2)
            resetAt.append(time.monotonic())
            abort(conn)

        server = Server(self, handler)
        client = self.connect(self.proxy(server.address).address)
        client.sendall(b"go")
        self.assertRaises(ConnectionResetError, client.recv, 10)
        self.assertGreaterEqual(time.monotonic() - resetAt[0], DELAY)
        self.assertEqual(server.errors, [])

    def test_clientResetReachesServer(self):
        """A client's RST reaches the server as a reset, not EOF, a delay later."""
        got = threading.Event()
        seen: list[tuple[str, float]] = []
        done = threading.Event()

        def handler(conn: socket.socket) -> None:
            conn.recv(2)
            got.set()
            try:
                seen.append((repr(conn.recv(10)), time.monotonic()))
            except ConnectionResetError:
                seen.append(("reset", time.monotonic()))
            done.set()

        server = Server(self, handler)
        client = self.connect(self.proxy(server.address).address)
        client.sendall(b"hi")
        waitEvent(got, "the server to read the client's bytes")
        resetAt = time.monotonic()
        abort(client)
        waitEvent(done, "the server to see the reset")
        self.assertEqual(seen[0][0], "reset")
        self.assertGreaterEqual(seen[0][1] - resetAt, DELAY)

    def test_refusedUpstreamResetsClient(self):
        """
        An upstream that refuses gets the client a reset, after the delay for
        the connection to get there and the refusal to get back.
        """
        closed = socket.socket()  # bound, not listening: connections are refused
        self.addCleanup(closed.close)
        closed.bind(("127.0.0.1", 0))
        proxy = self.proxy(closed.getsockname())
        start = time.monotonic()
        client = self.connect(proxy.address)
        self.assertRaises(ConnectionResetError, client.recv, 10)
        self.assertGreaterEqual(time.monotonic() - start, 2 * DELAY)
        self.assertEqual(proxy.connections, 1)

    def test_unixUpstream(self):
        """A unix socket upstream is delayed the same, and its EOF passed on."""
        directory = tempfile.mkdtemp(prefix="txflip-proxy-")
        self.addCleanup(shutil.rmtree, directory)
        server = Server(self, echo, path=os.path.join(directory, "upstream.sock"))
        client = self.connect(self.proxy(server.address).address)
        self.assertGreaterEqual(self.roundTrip(client), 2 * DELAY)
        client.sendall(b"last")
        client.shutdown(socket.SHUT_WR)
        self.assertEqual(readToEnd(client)[0], b"last")
        self.assertEqual(server.errors, [])

    def idleCloseRace(self, target: Callable[[Server], tuple[str, int]]) -> IdleClose:
        """
        One kept-alive HTTP connection to a server whose idle timer fires 10 ms
        after the client starts sending its second request: the server answers
        that request if it has arrived, and closes the connection if not.
        """
        race = IdleClose()
        sent = threading.Event()
        done = threading.Event()

        def handler(conn: socket.socket) -> None:
            respond = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            self.assertTrue(conn.recv(4096).endswith(b"\r\n\r\n"))
            conn.sendall(respond)
            waitEvent(sent, "the client's second request")
            time.sleep(max(0.0, race.sendingAt + 0.010 - time.monotonic()))  # the idle timer
            race.arrived = bool(select.select([conn], [], [], 0)[0])
            race.checkedAt = time.monotonic()
            if race.arrived:
                conn.recv(4096)
                conn.sendall(respond)
            else:
                conn.close()
            done.set()

        server = Server(self, handler)
        client = http.client.HTTPConnection(*target(server), timeout=DEADLINE)
        self.addCleanup(client.close)
        client.request("GET", "/first")
        self.assertEqual(client.getresponse().read(), b"ok")
        race.sendingAt = time.monotonic()
        client.request("GET", "/second")
        sent.set()
        try:
            race.answer = client.getresponse().read()
        except ConnectionError as e:
            race.answer = e
        race.answeredAt = time.monotonic()
        waitEvent(done, "the server's idle timer")
        self.assertEqual(server.errors, [])
        return race

    def test_idleCloseCrossesNextRequest(self):
        """
        Through the proxy, the server's idle close, made after the client sent
        its next request but before that request arrived, is seen by the
        client only after it sent: it gets EOF and no answer.
        """
        # The request cannot reach the server before sendingAt + DELAY.  A
        # starved machine can fire the 10 ms timer later than that, which
        # shows nothing either way: run the race again, a bounded few times.
        for _ in range(5):
            race = self.idleCloseRace(lambda server: self.proxy(server.address).address)
            if race.checkedAt < race.sendingAt + DELAY:
                break
        else:
            self.fail("the idle timer never fired within the delay: the machine is too busy")
        self.assertFalse(race.arrived)
        self.assertIsInstance(race.answer, ConnectionError)
        self.assertGreaterEqual(race.answeredAt - race.checkedAt, DELAY)

    def test_loopbackAnswersNextRequest(self):
        """
        The same race on bare loopback: the request is already there when the
        idle timer fires, so the server answers it.
        """
        race = self.idleCloseRace(lambda server: server.address)
        self.assertEqual((race.arrived, race.answer), (True, b"ok"))

    def test_dataAfterCloseGetsReset(self):
        """
        Bytes that reach a server after it closed make its kernel answer with
        a RST; the client gets the FIN, then that reset, as it would directly.
        """
        closedAt: list[float] = []
        closed = threading.Event()

        def handler(conn: socket.socket) -> None:
            conn.recv(2)
            closedAt.append(time.monotonic())
            conn.close()
            closed.set()

        server = Server(self, handler)
        client = self.connect(self.proxy(server.address).address)
        client.sendall(b"hi")
        waitEvent(closed, "the server to close")
        client.sendall(b"late")  # the FIN is still on its way
        self.assertEqual(client.recv(10), b"")
        errors: list[int] = []

        def pendingError() -> int:
            errors.append(client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            return errors[-1]

        waitFor(pendingError, "the server's reset", DEADLINE)
        # A RST after the FIN, in CLOSE_WAIT: Linux reports EPIPE.
        self.assertIn(errors[-1], (errno.EPIPE, errno.ECONNRESET))
        self.assertGreaterEqual(time.monotonic() - closedAt[0], 2 * DELAY)

    def test_stopEndsEverything(self):
        """
        Leaving the context stops the thread promptly and closes the client
        connections; the counter saw each of them.
        """
        server = Server(self, echo)
        with DelayProxy(server.address, DELAY) as proxy:
            clients = [self.connect(proxy.address) for _ in range(3)]
            waitFor(lambda: proxy.connections == 3, "three connections", DEADLINE)
            start = time.monotonic()
        self.assertLess(time.monotonic() - start, 0.5)
        self.assertNotIn(f"DelayProxy:{proxy.port}", [t.name for t in threading.enumerate()])
        for client in clients:
            self.assertEqual(client.recv(10), b"")
        self.assertRaises(ConnectionRefusedError, socket.create_connection, proxy.address)
