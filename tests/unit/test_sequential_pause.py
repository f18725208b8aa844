"""
The old generation's pause in a sequential handover, in simulated time: a real
twisted.web Site over in-memory transports, a L{Clock}, and an app whose stop
and start the test records.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.unit.test_drain import ClosingTransport, Slow, get
from txflip.core.drain import ConnectionTracker
from txflip.core.events import Events
from txflip.core.listeners import ListenerRegistry
from txflip.core.pause import AppLifecycle, Pause, PauseTimedOut
from txflip.core.service import startKeepingListeners, stopKeepingListeners

TIMEOUT = 5.0


class ReadingTransport(ClosingTransport):
    """A transport that says whether it is being read."""

    reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class FakeGeneration:
    """What a L{Pause} uses of its generation: reactor, tracker, registry and app."""

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.tracker = ConnectionTracker()
        self.registry = ListenerRegistry(clock)
        self.events = Events()
        self.calls: list[str] = []
        self.stopping: Deferred | None = None
        self.app = AppLifecycle(self._stop, lambda: self.calls.append("start"))

    def _stop(self):
        self.calls.append("stop")
        return self.stopping


class PauseCase(TestCase):
    """A generation with a Site's connections, to pause."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.generation = FakeGeneration(self.clock)
        self.resource = Slow()
        self.site = self.generation.tracker.track(Site(self.resource, reactor=self.clock))

    def connect(self):
        protocol = self.site.buildProtocol(None)
        transport = ReadingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def pause(self) -> tuple[Pause, list]:
        pause = Pause(self.generation, TIMEOUT)
        result: list = []
        pause.start().addBoth(result.append)
        return pause, result


class PauseTests(PauseCase):
    def test_idleConnectionIsParkedAndTheAppStops(self) -> None:
        """An idle keep-alive connection is no longer read; the app stops at once."""
        protocol, transport = self.connect()
        protocol.dataReceived(get())
        pause, result = self.pause()
        self.assertFalse(transport.reading, "parked: a new request waits in the kernel")
        self.assertEqual((self.generation.calls, result), (["stop"], [None]))
        self.assertTrue(self.generation.registry.paused)
        self.assertEqual(pause.parked, 1)

    def test_requestInFlightIsFinishedFirst(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(get("/slow"))
        pause, result = self.pause()
        self.clock.advance(1)
        self.assertEqual(self.generation.calls, [], "the app serves the request in flight")
        self.assertTrue(transport.reading)
        request = self.resource.pending.pop()
        request.write(b"done")
        request.finish()
        self.clock.advance(0.05)
        self.assertFalse(transport.reading)
        self.assertEqual(self.generation.calls, ["stop"])

    def test_pauseTimeoutGivesUp(self) -> None:
        """A request still in flight at the pause timeout: the pause fails, nothing stops."""
        protocol, _ = self.connect()
        protocol.dataReceived(get("/slow"))
        pause, result = self.pause()
        self.clock.advance(TIMEOUT)
        self.assertIsInstance(result[0].value, PauseTimedOut)
        self.assertIn("1 connection(s) still busy", str(result[0].value))
        self.assertEqual(self.generation.calls, [])

    def test_appStopIsWaitedFor(self) -> None:
        self.generation.stopping = Deferred()
        pause, result = self.pause()
        self.assertEqual(result, [])
        self.generation.stopping.callback(None)
        self.assertEqual(result, [None])

    def test_resumeStartsTheAppAgainAndReadsParkedConnections(self) -> None:
        protocol, transport = self.connect()
        pause, _ = self.pause()
        pause.resume("the new generation failed")
        self.assertEqual(self.generation.calls, ["stop", "start"])
        self.assertTrue(transport.reading)
        self.assertFalse(self.generation.registry.paused)

    def test_resumeBeforeTheAppStoppedDoesNotStartIt(self) -> None:
        """Given up while requests were still in flight: the app never stopped."""
        protocol, _ = self.connect()
        protocol.dataReceived(get("/slow"))
        pause, result = self.pause()
        self.clock.advance(TIMEOUT)
        pause.resume("paused too long")
        self.assertEqual(self.generation.calls, [])
        self.assertFalse(self.generation.registry.paused)


class OtherProtocolTests(PauseCase):
    """Connections that are not HTTP: only those told to close hold the pause."""

    def connectOther(self, protocolClass):
        factory = self.generation.tracker.track(Factory.forProtocol(protocolClass))
        protocol = factory.buildProtocol(None)
        transport = ReadingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_idleConnectionOfAnotherProtocolDoesNotHoldThePause(self) -> None:
        """A Buildbot worker's connection has no request to finish: the app's stop closes it."""
        self.connectOther(Protocol)
        _, result = self.pause()
        self.assertEqual((self.generation.calls, result), (["stop"], [None]))

    def test_connectionToldToCloseIsWaitedFor(self) -> None:
        """One that says how to end (drainStarted) is told, and the app stops once it closed."""
        told = []

        class Closes(Protocol):
            def drainStarted(self, deadline, handedOver):
                told.append(handedOver)

        _, transport = self.connectOther(Closes)
        _, result = self.pause()
        self.assertEqual((told, self.generation.calls, result), ([True], [], []))
        transport.loseConnection()
        self.clock.advance(0.05)
        self.assertEqual((self.generation.calls, result), (["stop"], [None]))


class StoppingTheAppTests(TestCase):
    """What a sequential handover stops of a service tree, and starts again."""

    def test_aServiceThatOverridesStopServiceIsStoppedAsItIs(self) -> None:
        """Buildbot's master does its own stopping: walking its children would skip it."""
        calls = []

        class Master(MultiService):
            def stopService(self):
                calls.append("stop")
                return MultiService.stopService(self)

            def startService(self):
                calls.append("start")
                return MultiService.startService(self)

        master = Master()
        Service().setServiceParent(master)
        master.startService()
        self.successResultOf(stopKeepingListeners(master))
        self.successResultOf(startKeepingListeners(master))
        self.assertEqual(calls, ["start", "stop", "start"])

    def test_listeningServicesStayRunning(self) -> None:
        """A plain MultiService is walked: its children stop, those that only listen stay."""
        top = MultiService()
        worker = Service()
        worker.setServiceParent(top)
        listening = StreamServerEndpointService(None, Factory())
        listening.setServiceParent(top)
        top.running = worker.running = listening.running = 1
        self.successResultOf(stopKeepingListeners(top))
        self.assertEqual((top.running, worker.running, listening.running), (0, 0, 1))
