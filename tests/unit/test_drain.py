"""
The drain's rules, in this process and in simulated time: a real twisted.web
Site and real HTTP bytes over in-memory transports, a L{Clock} for the
reactor and the drain's clock alike.

The transports are L{StringTransport}s that, like a TCP connection, count as
disconnected once a close has gone through the reactor (a delayed call on the
clock). Where the drain asks the kernel whether unread bytes are waiting, the
transport carries one end of a real socketpair.
"""

from __future__ import annotations

import socket

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from txflip.core.drain import ConnectionTracker, Drain

GRACE = 1.0
TIMEOUT = 10.0
INTERVAL = 0.05


class ClosingTransport(StringTransport):
    """A L{StringTransport} whose closes reach the protocol, one reactor turn later."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.closedBy: str | None = None

    def loseConnection(self) -> None:
        self._close("loseConnection", ConnectionDone())

    def abortConnection(self) -> None:
        self._close("abortConnection", ConnectionAborted())

    def _close(self, how: str, reason: Exception) -> None:
        if self.disconnecting:
            return
        self.disconnecting = True
        self.closedBy = how
        self._clock.callLater(0, self._lost, reason)

    def _lost(self, reason: Exception) -> None:
        self.disconnected = True
        self.protocol.connectionLost(Failure(reason))


class Slow(Resource):
    """C{/slow} stays open until the test finishes it; anything else answers at once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list = []

    def render_GET(self, request):
        if request.path == b"/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        return b"quick"


def get(path: str = "/quick") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def responses(transport: StringTransport) -> list[bytes]:
    """The header blocks of every response written so far."""
    return [
        b"HTTP/1.1" + part.split(b"\r\n\r\n", 1)[0]
        for part in transport.value().split(b"HTTP/1.1")[1:]
    ]


def connectionHeader(head: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            return value.strip().lower()
    return None


class DrainTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tracker = ConnectionTracker()
        self.resource = Slow()
        self.site = self.tracker.track(Site(self.resource, reactor=self.clock))
        self.logs: list[str] = []
        observer = lambda event: self.logs.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def connect(self, factory=None) -> tuple[object, ClosingTransport]:
        protocol = (factory or self.site).buildProtocol(None)
        transport = ClosingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def drain(self) -> list:
        """Start a drain; return a list that receives its result."""
        drain = Drain(
            self.clock,
            self.tracker,
            TIMEOUT,
            idleGrace=GRACE,
            interval=INTERVAL,
            seconds=self.clock.seconds,
        )
        result: list = []
        drain.start().addCallback(result.append)
        return result

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass in steps no longer than the drain's interval."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(INTERVAL, end - self.clock.seconds()))
        self.clock.advance(0)


class IdleCloseTests(DrainTestCase):
    def test_idleKeepAliveClosedAfterQuietPeriod(self) -> None:
        """A kept-alive connection with nothing in progress is closed once quiet for the grace."""
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        self.assertEqual(len(responses(transport)), 1)
        done = self.drain()
        self.advance(GRACE - 0.1)
        self.assertIsNone(transport.closedBy)
        self.advance(0.2)
        self.assertEqual(transport.closedBy, "loseConnection")
        self.assertEqual(done, [0])

    def test_quietPeriodStartsAtTheLastRequestByte(self) -> None:
        """Bytes from the client (an empty line, which HTTP ignores) restart the quiet period."""
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        self.drain()
        self.advance(GRACE - 0.2)
        protocol.dataReceived(b"\r\n")
        self.advance(GRACE - 0.1)
        self.assertIsNone(transport.closedBy)
        self.advance(0.2)
        self.assertEqual(transport.closedBy, "loseConnection")

    def test_requestInProgressIsNeverIdle(self) -> None:
        """A request in progress keeps the connection past the grace, however long it takes."""
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        done = self.drain()
        self.advance(GRACE * 3)
        self.assertIsNone(transport.closedBy)
        self.resource.pending.pop().finish()
        self.advance(0)
        self.assertEqual(len(responses(transport)), 1)
        self.advance(GRACE - 0.1)
        # Connection: close was on that response, so the channel closes it
        # itself at once: the drain's idle rule is not what closed it.
        self.assertEqual(transport.closedBy, "loseConnection")
        self.assertEqual(done, [0])

    def test_responseEndRestartsQuietPeriodOnKeptAliveConnection(self) -> None:
        """
        A response whose headers were out before the drain ends during it: the
        connection stays kept alive, and its quiet period starts at that end.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        request = self.resource.pending.pop()
        request.write(b"started")
        self.drain()
        self.advance(GRACE * 2)
        request.finish()
        self.advance(GRACE - 0.1)
        self.assertIsNone(transport.closedBy)
        self.advance(0.2)
        self.assertEqual(transport.closedBy, "loseConnection")

    def test_bufferedBytesKeepTheConnection(self) -> None:
        """Half a request line, buffered by the channel, keeps it open until the deadline."""
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        protocol.dataReceived(b"GET /quick HT")
        done = self.drain()
        self.advance(TIMEOUT - 0.1)
        self.assertIsNone(transport.closedBy)
        self.advance(0.2)
        self.assertEqual(transport.closedBy, "abortConnection")
        self.assertEqual(done, [1])

    def test_unreadKernelBytesKeepTheConnection(self) -> None:
        """Bytes the kernel holds for the connection keep it open; once read, it may close."""
        protocol, transport = self.connect()
        ours, peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        transport.socket = ours
        protocol.dataReceived(get())
        peer.sendall(b"GET /quick HTTP/1.1\r\n")
        self.drain()
        self.advance(GRACE * 3)
        self.assertIsNone(transport.closedBy)
        ours.recv(65536)
        self.advance(INTERVAL * 2)
        self.assertEqual(transport.closedBy, "loseConnection")


class ConnectionCloseTests(DrainTestCase):
    def test_responseInProgressSaysClose(self) -> None:
        """A response whose headers are not out yet carries Connection: close."""
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        self.drain()
        self.resource.pending.pop().finish()
        self.advance(0)
        [head] = responses(transport)
        self.assertEqual(connectionHeader(head), b"close")
        self.assertEqual(transport.closedBy, "loseConnection")

    def test_responseAlreadyStartedThenNextRequestSaysClose(self) -> None:
        """Headers already out: that response is left as it is, the next request's says close."""
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        request = self.resource.pending.pop()
        request.write(b"started")
        self.drain()
        request.finish()
        self.advance(0.2)
        protocol.dataReceived(get())
        self.advance(0)
        first, second = responses(transport)
        self.assertIsNone(connectionHeader(first))
        self.assertEqual(connectionHeader(second), b"close")
        self.assertEqual(transport.closedBy, "loseConnection")

    def test_connectionsBeforeTheDrainStayKeptAlive(self) -> None:
        """Without a drain the same exchange stays kept alive: the tests above can fail."""
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        self.resource.pending.pop().finish()
        protocol.dataReceived(get())
        self.advance(GRACE * 3)
        first, second = responses(transport)
        self.assertIsNone(connectionHeader(first))
        self.assertIsNone(connectionHeader(second))
        self.assertIsNone(transport.closedBy)

    def test_pipelinedRequestsAllAnswered(self) -> None:
        """A request pipelined behind one in progress is answered too, and says close."""
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow") + get())
        done = self.drain()
        self.resource.pending.pop().finish()
        self.advance(0)
        first, second = responses(transport)
        self.assertIsNone(connectionHeader(first))
        self.assertEqual(connectionHeader(second), b"close")
        self.assertEqual(transport.closedBy, "loseConnection")
        self.advance(INTERVAL)
        self.assertEqual(done, [0])

    def test_threePipelinedRequestsAllAnswered(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow") + get("/slow") + get())
        self.drain()
        self.resource.pending.pop().finish()
        self.advance(INTERVAL)
        self.resource.pending.pop().finish()
        self.advance(INTERVAL)
        heads = responses(transport)
        self.assertEqual(len(heads), 3, transport.value())
        self.assertEqual(connectionHeader(heads[-1]), b"close")


class OtherProtocolTests(DrainTestCase):
    def test_nonHTTPConnectionWaitedFor(self) -> None:
        """A connection of another protocol is left alone until it closes by itself."""
        protocol, transport = self.connect(self.tracker.track(Factory.forProtocol(Protocol)))
        done = self.drain()
        self.advance(TIMEOUT / 2)
        self.assertIsNone(transport.closedBy)
        self.assertEqual(done, [])
        transport.loseConnection()
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])


class SummaryTests(DrainTestCase):
    def summary(self) -> str:
        lines = [line for line in self.logs if "drained in" in line]
        self.assertEqual(len(lines), 1, self.logs)
        return lines[0]

    def test_appsOwnIdleTimeoutIsNamed(self) -> None:
        """
        A connection closed by the app's own idle timeout (C{Site(timeout=)}),
        before the drain's quiet period, is counted as that, not as closed by
        its client.
        """
        self.site.timeOut = GRACE / 2
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        done = self.drain()
        self.advance(GRACE / 2 + 0.1)
        self.assertEqual(transport.closedBy, "loseConnection")
        self.assertTrue([line for line in self.logs if "Timing out client" in line])
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])
        self.assertIn(
            "1 closed here (0 idle, 0 HTTP/2 after GOAWAY, 1 by the app's idle timeout, "
            "0 aborted at the deadline, "
            "0 after their last response or by their client)",
            self.summary(),
        )

    def test_clientCloseIsNamed(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        done = self.drain()
        transport.loseConnection()
        self.advance(INTERVAL * 2)
        self.assertEqual(done, [0])
        self.assertIn(
            "1 closed here (0 idle, 0 HTTP/2 after GOAWAY, 0 by the app's idle timeout, "
            "0 aborted at the deadline, "
            "1 after their last response or by their client)",
            self.summary(),
        )


class DeadlineTests(DrainTestCase):
    def test_deadlineAbortsWhatIsLeft(self) -> None:
        """At the drain timeout, whatever is still open is aborted and counted."""
        _, slow = self.connect()
        slow.protocol.dataReceived(get("/slow"))
        _, other = self.connect(self.tracker.track(Factory.forProtocol(Protocol)))
        done = self.drain()
        self.advance(TIMEOUT - 0.1)
        self.assertEqual((slow.closedBy, other.closedBy), (None, None))
        self.advance(0.2)
        self.assertEqual((slow.closedBy, other.closedBy), ("abortConnection",) * 2)
        self.assertEqual(done, [2])
        self.assertEqual(len([line for line in self.logs if "aborted 2 connection(s)" in line]), 1)

    def test_deadCheckStillAbortsAtTheDeadline(self) -> None:
        """
        If the periodic check dies (here its clock raises), the deadline still
        aborts what is left, one second after the timeout at the latest.
        """
        _, transport = self.connect(self.tracker.track(Factory.forProtocol(Protocol)))
        calls = []

        def breakingClock() -> float:
            calls.append(None)
            if len(calls) > 1:
                raise RuntimeError("clock broke")
            return self.clock.seconds()

        drain = Drain(self.clock, self.tracker, TIMEOUT, GRACE, INTERVAL, seconds=breakingClock)
        done: list = []
        drain.start().addCallback(done.append)
        self.assertEqual(len([line for line in self.logs if "drain check failed" in line]), 1)
        self.advance(TIMEOUT + 0.9)
        self.assertIsNone(transport.closedBy)
        self.advance(0.2)
        self.assertEqual(transport.closedBy, "abortConnection")
        self.assertEqual(done, [1])
        self.flushLoggedErrors(RuntimeError)

    def test_cancelledDrainNeitherClosesNorAborts(self) -> None:
        """A generation that serves again cancels its drain: nothing closes, done never fires."""
        protocol, idle = self.connect()
        protocol.dataReceived(get())
        drain = Drain(
            self.clock, self.tracker, TIMEOUT, GRACE, INTERVAL, seconds=self.clock.seconds
        )
        done: list = []
        drain.start().addCallback(done.append)
        self.advance(GRACE / 2)
        drain.cancel()
        self.advance(TIMEOUT * 2)
        self.assertIsNone(idle.closedBy)
        self.assertEqual(done, [])

    def test_nothingOpenFinishesAtOnce(self) -> None:
        done = self.drain()
        self.assertEqual(done, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
