"""
The control socket's protocol in this process: commands, the phases of a
reload as the generation's events arrive, refusals, and status.

The upgrader is a stand-in (the real one starts processes): it has the
generation's real L{Events} hub, a state, and an C{upgrade} whose outcome the
test decides. Each connection's peer credentials come from a real unix
socket, except where the test needs another user than this process's: the
kernel reports no other user without a process running as that user (the
process tests do that), so there the credentials are given.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass

import twisted.internet
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase

from txflip.control.server import COMMAND_TIMEOUT, ControlServer
from txflip.core.drain import ConnectionTracker
from txflip.core.events import Events
from txflip.core.handoff import HandoffState
from txflip.core.listeners import ListenerRegistry


@dataclass(frozen=True)
class Ended:
    """How an upgrade ended, with the fields the control server reads."""

    succeeded: bool
    childPid: int | None
    reason: str
    seconds: float


class StandInUpgrader:
    def __init__(self) -> None:
        self.events = Events()
        self.state = "ready"
        self.simpleModeReason: str | None = None
        self.asked: list[str] = []
        self.outcome: Deferred = Deferred()

    def upgrade(self, source: str) -> Deferred:
        self.asked.append(source)
        return self.outcome


class PeerTransport(StringTransport):
    """A L{StringTransport} whose handle is a real unix socket, for its peer credentials."""

    def __init__(self, handle) -> None:
        super().__init__()
        self.handle = handle

    def getHandle(self):
        return self.handle


class GivenCredentials:
    """A handle whose peer credentials are given: another user's, which no real socket reports."""

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.raw = struct.pack("3i", pid, uid, gid)

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_PEERCRED)
        return self.raw


class ControlTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        # The idle timer is scheduled on the global reactor: a Clock stands in
        # for it during each (synchronous) test.
        self.patch(twisted.internet, "reactor", self.clock)
        self.upgrader = StandInUpgrader()
        self.registry = ListenerRegistry(reactor)
        self.tracker = ConnectionTracker()
        self.server = self.makeServer()

    def makeServer(self, inherited=None) -> ControlServer:
        return ControlServer(
            self.upgrader,
            self.registry,
            self.tracker,
            path="/run/test/flip.pid.control",
            pidFile="/run/test/flip.pid",
            inherited=inherited,
        )

    def connect(self, handle=None) -> tuple[object, PeerTransport]:
        if handle is None:
            ours, peer = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(peer.close)
            handle = ours
        protocol = self.tracker.track(self.server).buildProtocol(None)
        transport = PeerTransport(handle)
        protocol.makeConnection(transport)
        return protocol, transport

    def messages(self, transport: StringTransport) -> list[dict]:
        return [json.loads(line) for line in transport.value().splitlines()]


class CommandTests(ControlTestCase):
    def test_status(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"status\n")
        [status] = self.messages(transport)
        self.assertEqual(status["phase"], "status")
        self.assertEqual(status["pid"], os.getpid())
        self.assertEqual(status["state"], "ready")
        self.assertEqual(status["pidFile"], "/run/test/flip.pid")
        self.assertIsNone(status["lastRestart"])
        self.assertTrue(transport.disconnecting)

    def test_unknownCommand(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"restart\n")
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "error")
        self.assertIn("unknown command 'restart': use reload or status", answer["reason"])
        self.assertTrue(transport.disconnecting)

    def test_commandTooLong(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"x" * 2000)
        self.assertEqual(self.messages(transport)[0]["reason"], "command too long")

    def test_oneCommandPerConnection(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\nstatus\nreload\n")
        self.assertEqual(self.upgrader.asked, [f"control socket (PID {os.getpid()})"])
        self.assertEqual(transport.value(), b"")

    def test_noCommandInTime(self) -> None:
        protocol, transport = self.connect()
        self.clock.advance(COMMAND_TIMEOUT - 0.1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.2)
        [answer] = self.messages(transport)
        self.assertEqual(answer, {"phase": "error", "reason": "no command within 10s"})
        self.assertTrue(transport.disconnecting)

    def test_commandCancelsTheTimer(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.dataReceived(b"reload\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PeerTests(ControlTestCase):
    def test_otherUserRefusedAtOnceAndClosedAfterItsLine(self) -> None:
        """
        Another user hears why at once; the connection closes once its command
        is read (closing earlier would reset it before the answer is read).
        """
        other = os.geteuid() + 1000
        protocol, transport = self.connect(GivenCredentials(4242, other, other))
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "refused")
        self.assertIn(f"uid {other} may not control this server", answer["reason"])
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"reload\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.upgrader.asked, [])

    def test_rootMayControlAnyServer(self) -> None:
        self.server.uid = 1234
        protocol, transport = self.connect(GivenCredentials(4242, 0, 0))
        protocol.dataReceived(b"status\n")
        self.assertEqual(self.messages(transport)[0]["phase"], "status")

    def test_sameUserMay(self) -> None:
        """The real credentials of this process's own socketpair: the server's own user."""
        self.server.uid = os.geteuid()
        protocol, transport = self.connect()
        protocol.dataReceived(b"status\n")
        self.assertEqual(self.messages(transport)[0]["phase"], "status")

    def test_unreadableCredentials(self) -> None:
        closed = socket.socket(socket.AF_UNIX)
        closed.close()
        protocol, transport = self.connect(closed)
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "refused")
        self.assertIn("cannot read peer credentials", answer["reason"])
        self.assertTrue(transport.disconnecting)


class ReloadPhaseTests(ControlTestCase):
    def test_successfulReload(self) -> None:
        """Every phase goes to the asking client, which is closed after done."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\n")
        events = self.upgrader.events
        events.emit("upgrade-started", source="x", childPid=77, nextGeneration=2)
        events.emit("child-ready", childPid=77, ms=120)
        events.emit("upgrade-succeeded", childPid=77, ms=150)
        self.upgrader.outcome.callback(Ended(True, 77, "serving", 0.15))
        self.assertFalse(transport.disconnecting)
        events.emit("draining", handedOver=True, connections=0)
        phases = self.messages(transport)
        self.assertEqual(
            [m["phase"] for m in phases], ["started", "ready", "serving", "draining", "done"]
        )
        self.assertEqual(phases[0]["childPid"], 77)
        self.assertEqual(phases[0]["childGeneration"], 2)
        self.assertEqual(phases[1]["ms"], 120)
        self.assertEqual(phases[4], {"phase": "done", "childPid": 77, "childGeneration": 2})
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.lastRestart["outcome"], "succeeded")

    def test_failedReload(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\n")
        self.upgrader.events.emit("upgrade-started", source="x", childPid=77, nextGeneration=2)
        self.upgrader.events.emit("upgrade-failed", childPid=77, reason="no config", ms=40)
        self.upgrader.outcome.callback(Ended(False, 77, "no config", 0.04))
        started, failed = self.messages(transport)
        self.assertEqual(started["phase"], "started")
        self.assertEqual(failed["phase"], "failed")
        self.assertEqual(
            (failed["reason"], failed["childPid"], failed["ms"]), ("no config", 77, 40)
        )
        self.assertEqual(failed["childGeneration"], 2)
        self.assertTrue(transport.disconnecting)
        status = self.server.status()["lastRestart"]
        self.assertEqual((status["outcome"], status["reason"]), ("failed", "no config"))

    def test_refusedReload(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\n")
        self.upgrader.events.emit("upgrade-refused", source="x", reason="already upgrading")
        self.upgrader.outcome.callback(Ended(False, None, "refused: already upgrading", 0.0))
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "failed")
        self.assertTrue(answer["refused"])
        self.assertEqual(self.server.lastRestart["outcome"], "refused")

    def test_shutdownDuringAReloadIsNotDone(self) -> None:
        """A drain that is not a handover (SIGTERM mid-reload) tells the client nothing yet."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\n")
        self.upgrader.events.emit("upgrade-started", source="x", childPid=77, nextGeneration=2)
        self.upgrader.events.emit("draining", handedOver=False, connections=0)
        self.assertEqual([m["phase"] for m in self.messages(transport)], ["started"])
        self.upgrader.outcome.callback(Ended(False, 77, "this generation is shutting down", 1))
        self.assertEqual(self.messages(transport)[-1]["phase"], "failed")

    def test_othersAreNotTold(self) -> None:
        """Only connections that asked for the reload hear its phases."""
        _, watcher = self.connect()
        asking, _ = self.connect()
        asking.dataReceived(b"reload\n")
        self.upgrader.events.emit("upgrade-started", source="x", childPid=77, nextGeneration=2)
        self.assertEqual(watcher.value(), b"")

    def test_drainingClosesConnectionsThatAskedNothing(self) -> None:
        _, idle = self.connect()
        self.upgrader.events.emit("draining", handedOver=False, connections=0)
        [answer] = self.messages(idle)
        self.assertEqual(answer["reason"], "this generation is draining; ask again")
        self.assertTrue(idle.disconnecting)


class StatusTests(ControlTestCase):
    def test_inheritedGenerationReportsItsTakeOver(self) -> None:
        state = HandoffState(generation=3, parentPid=99, controlFd=4)
        server = self.makeServer(inherited=state)
        self.assertEqual(server.lastRestart["outcome"], "succeeded")
        self.assertEqual(server.lastRestart["reason"], "took over from PID 99")

    def test_controlConnectionsAreNotCounted(self) -> None:
        app = self.tracker.track(Factory.forProtocol(Protocol)).buildProtocol(None)
        app.makeConnection(StringTransport())
        self.connect()
        self.assertEqual(self.server.connectionsInFlight(), 1)


class RealSocketTests(TestCase):
    def test_statusOverTheRealSocket(self) -> None:
        """
        Listening through the registry: a real unix client gets the status,
        which lists the app's listener but not the control socket.
        """
        directory = tempfile.mkdtemp(prefix="txflip-ctl-")
        registry = ListenerRegistry(reactor)
        self.addCleanup(registry.stopAll)
        registry.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        upgrader = StandInUpgrader()
        server = ControlServer(
            upgrader, registry, ConnectionTracker(), os.path.join(directory, "c"), None
        )
        server.listen(registry)
        self.assertEqual(os.stat(server.path).st_mode & 0o777, 0o600)
        [app, control] = registry.listeners
        self.assertEqual(registry.serving(), [app])
        self.assertIn(control.key, registry.internal)

        answered: Deferred = Deferred()

        class Client(LineOnlyReceiver):
            delimiter = b"\n"

            def connectionMade(self) -> None:
                self.sendLine(b"status")

            def lineReceived(self, line: bytes) -> None:
                answered.callback(json.loads(line))

        def check(status: dict) -> None:
            self.assertEqual(status["phase"], "status")
            self.assertEqual(status["listeners"], [app.key])

        def connected(client):
            self.addCleanup(client.transport.loseConnection)
            return answered

        endpoint = UNIXClientEndpoint(reactor, server.path)
        return connectProtocol(endpoint, Client()).addCallback(connected).addCallback(check)
