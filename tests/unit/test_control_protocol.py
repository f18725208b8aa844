"""
The control socket's protocol in this process: commands, the phases of a
reload as a real L{Generation} goes through them, refusals, and status.

The generation runs on a clock reactor and its successor is played by the
test (L{ScriptedAttempt}: the one thing a unit test cannot do cheaply is
start a child). Each connection's peer credentials come from a real unix
socket, except where the test needs another user than this process's: the
kernel reports no other user without a process running as that user (the
process tests do that), so there the credentials are given.
"""

from __future__ import annotations

import json
import os
import socket
import struct

import twisted.internet
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ScriptedAttempt, ScriptedGeneration, clockReactor
from txflip.control.server import COMMAND_TIMEOUT, ControlServer
from txflip.core.handoff import HandoffState
from txflip.core.log import generation, setGeneration


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
        self.clock = clockReactor()
        # The idle timer is scheduled on the global reactor: the generation's
        # clock stands in for it during each (synchronous) test.
        self.patch(twisted.internet, "reactor", self.clock)
        self.generation = ScriptedGeneration(self, self.clock)
        self.generation.ready()
        self.server = ControlServer(self.generation, self.generation.pidFile + ".control")

    def connect(self, handle=None) -> tuple[object, PeerTransport]:
        if handle is None:
            ours, peer = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(peer.close)
            handle = ours
        protocol = self.generation.tracker.track(self.server).buildProtocol(None)
        transport = PeerTransport(handle)
        protocol.makeConnection(transport)
        return protocol, transport

    def messages(self, transport: StringTransport) -> list[dict]:
        return [json.loads(line) for line in transport.value().splitlines()]

    def reload(self) -> tuple[object, PeerTransport, ScriptedAttempt]:
        """Ask for a reload over a new connection; return it and the attempt it started."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\n")
        return protocol, transport, self.generation.attempts[-1]


class CommandTests(ControlTestCase):
    def test_status(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"status\n")
        [status] = self.messages(transport)
        self.assertEqual(status["phase"], "status")
        self.assertEqual((status["pid"], status["generation"]), (os.getpid(), 1))
        self.assertEqual(status["state"], "serving")
        self.assertEqual(status["pidFile"], self.generation.pidFile)
        self.assertIsNone(status["lastRestart"])
        self.assertTrue(transport.disconnecting)

    def test_unknownCommand(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"restart\n")
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "error")
        self.assertIn("unknown command 'restart': use reload, status or rollback", answer["reason"])
        self.assertTrue(transport.disconnecting)

    def test_commandTooLong(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"x" * 2000)
        self.assertEqual(self.messages(transport)[0]["reason"], "command too long")

    def test_oneCommandPerConnection(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"reload\nstatus\nreload\n")
        self.assertEqual([m["phase"] for m in self.messages(transport)], ["started"])
        self.assertEqual(str(self.generation.state), "upgrading")

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
        timers = set(self.clock.getDelayedCalls())
        protocol.dataReceived(b"status\n")
        self.assertEqual(len(timers - set(self.clock.getDelayedCalls())), 1)
        self.clock.advance(COMMAND_TIMEOUT * 2)
        self.assertEqual(len(self.messages(transport)), 1)


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
        self.assertEqual(str(self.generation.state), "serving")

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
        protocol, transport, attempt = self.reload()
        attempt.childSays(f"ready {CHILD_PID}")
        self.assertEqual(attempt.parentSaid(), ["go"])
        self.assertFalse(transport.disconnecting)
        attempt.childSays("serving")
        phases = self.messages(transport)
        self.assertEqual(
            [m["phase"] for m in phases], ["started", "ready", "serving", "draining", "done"]
        )
        started, ready, serving, draining, done = phases
        self.assertEqual((started["childPid"], started["childGeneration"]), (CHILD_PID, 2))
        self.assertEqual((started["pid"], started["generation"]), (os.getpid(), 1))
        self.assertEqual(ready["childPid"], CHILD_PID)
        self.assertEqual(serving["childGeneration"], 2)
        self.assertEqual(draining["generation"], 1)
        self.assertEqual(done, {"phase": "done", "childPid": CHILD_PID, "childGeneration": 2})
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.lastRestart["outcome"], "succeeded")

    def test_failedReload(self) -> None:
        protocol, transport, attempt = self.reload()
        attempt.childSays("failed release 2 cannot find its config")
        attempt.childExits("exited with code 1")
        started, failed = self.messages(transport)
        self.assertEqual(started["phase"], "started")
        self.assertEqual(failed["phase"], "failed")
        self.assertIn("release 2 cannot find its config", failed["reason"])
        self.assertEqual((failed["childPid"], failed["childGeneration"]), (CHILD_PID, 2))
        self.assertTrue(transport.disconnecting)
        last = self.server.status()["lastRestart"]
        self.assertEqual(last["outcome"], "failed")
        self.assertIn("release 2 cannot find its config", last["reason"])
        self.assertEqual(str(self.generation.state), "serving")

    def test_refusedWhileAnotherRuns(self) -> None:
        self.reload()
        protocol, transport, _ = self.reload()
        [answer] = self.messages(transport)
        self.assertEqual(answer["phase"], "failed")
        self.assertTrue(answer["refused"])
        self.assertEqual(answer["reason"], "refused: an upgrade is already in progress")
        self.assertEqual(self.server.lastRestart["outcome"], "refused")
        self.assertTrue(transport.disconnecting)

    def test_successorThatDiedIsWarnedAbout(self) -> None:
        """After a successor died and this generation took the traffic back, say so first."""
        _, _, attempt = self.reload()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        attempt.childExits("was killed by signal 9")
        self.assertEqual(self.server.lastRestart["outcome"], "successor-died")
        protocol, transport, _ = self.reload()
        warning, started = self.messages(transport)
        self.assertEqual(warning["phase"], "warning")
        self.assertIn("the last restart failed:", warning["reason"])
        self.assertIn("was killed by signal 9", warning["reason"])
        self.assertEqual(started["phase"], "started")

    def test_shutdownDuringAReloadIsNoHandover(self) -> None:
        """Stopping mid-reload drains without handing over: no draining/done, but failed."""
        protocol, transport, attempt = self.reload()
        self.generation.stop()
        attempt.childExits("was killed by signal 15")
        phases = self.messages(transport)
        self.assertEqual([m["phase"] for m in phases], ["started", "failed"])
        self.assertIn("shutting down", phases[-1]["reason"])

    def test_othersAreNotTold(self) -> None:
        """Only connections that asked for the reload hear its phases."""
        _, watcher = self.connect()
        self.reload()
        self.assertEqual(watcher.value(), b"")

    def test_handoverClosesConnectionsThatAskedNothing(self) -> None:
        """Once the generation drains, a connection that asked nothing must ask the next one."""
        _, idle = self.connect()
        _, _, attempt = self.reload()
        attempt.childSays(f"ready {CHILD_PID}")
        self.assertEqual(idle.value(), b"")
        attempt.childSays("serving")
        [answer] = self.messages(idle)
        self.assertEqual(answer["reason"], "this generation is draining; ask again")
        self.assertTrue(idle.disconnecting)


class StatusTests(ControlTestCase):
    def test_inheritedGenerationReportsItsTakeOver(self) -> None:
        self.addCleanup(setGeneration, generation())
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        state = HandoffState(generation=3, parentPid=99, controlFd=theirs.fileno())
        inherited = ScriptedGeneration(self, self.clock, inherited=state)
        server = ControlServer(inherited, inherited.pidFile + ".control")
        self.assertEqual(server.lastRestart["outcome"], "succeeded")
        self.assertEqual(server.lastRestart["generation"], 3)
        self.assertEqual(server.lastRestart["reason"], "took over from PID 99")

    def test_controlConnectionsAreNotCounted(self) -> None:
        app = self.generation.tracker.track(Factory.forProtocol(Protocol)).buildProtocol(None)
        app.makeConnection(StringTransport())
        self.connect()
        self.assertEqual(self.server.connectionsInFlight(), 1)
        self.assertEqual(len(self.generation.tracker.open()), 2)


class RealSocketTests(TestCase):
    def test_statusOverTheRealSocket(self) -> None:
        """
        Listening through the registry on the real reactor: a real unix client
        gets the status, which lists the app's listener but not the control
        socket (a 0600 socket file).
        """
        generation = ScriptedGeneration(self, reactor)
        registry = generation.registry
        self.addCleanup(registry.stopAll)
        registry.standIn.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        server = ControlServer(generation, generation.pidFile + ".control")
        server.listen(registry.standIn)
        self.assertEqual(os.stat(server.path).st_mode & 0o777, 0o600)
        [app, control] = registry.listeners
        self.assertEqual(registry.serving(), [app])
        self.assertTrue(registry.isInternal(control.key))

        answered: Deferred = Deferred()

        class Client(LineOnlyReceiver):
            delimiter = b"\n"

            def connectionMade(self) -> None:
                self.sendLine(b"status")

            def lineReceived(self, line: bytes) -> None:
                answered.callback(json.loads(line))

        def check(status: dict) -> None:
            self.assertEqual(status["phase"], "status")
            self.assertEqual(status["state"], "starting")
            self.assertEqual(status["listeners"], [app.key])

        def connected(client):
            self.addCleanup(client.transport.loseConnection)
            return answered

        endpoint = UNIXClientEndpoint(reactor, server.path)
        return connectProtocol(endpoint, Client()).addCallback(connected).addCallback(check)


class ReloadWithRollbackOnServerErrorsTests(ControlTestCase):
    """With --rollback-on-5xx, the outcome of a reload is known at the end of the window."""

    def setUp(self) -> None:
        self.clock = clockReactor()
        self.patch(twisted.internet, "reactor", self.clock)
        self.generation = ScriptedGeneration(self, self.clock, rollbackWindow=5, rollbackOn5xx=0.5)
        self.generation.ready()
        self.server = ControlServer(self.generation, self.generation.pidFile + ".control")

    def served(self):
        protocol, transport, attempt = self.reload()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        return transport, attempt

    def test_waitsThroughTheWindowThenSaysDone(self) -> None:
        transport, attempt = self.served()
        phases = [m["phase"] for m in self.messages(transport)]
        self.assertEqual(phases[-1], "watching")
        self.assertEqual(self.messages(transport)[-1]["seconds"], 5)
        self.assertFalse(transport.disconnecting)
        for _ in range(49):
            attempt.childSays("alive")
            self.clock.advance(0.1)
        self.assertFalse(transport.disconnecting, "not before the window ends")
        attempt.childSays("alive")
        self.clock.advance(0.2)
        self.assertEqual(self.messages(transport)[-1]["phase"], "done")
        self.assertTrue(transport.disconnecting)

    def test_aReleaseRolledBackFailsTheReload(self) -> None:
        transport, attempt = self.served()
        attempt.childSays("rollback --rollback-on-5xx: 20 of 20 responses were 5xx")
        last = self.messages(transport)[-1]
        self.assertEqual((last["phase"], last["rolledBack"]), ("failed", True))
        self.assertIn("--rollback-on-5xx: 20 of 20 responses were 5xx", last["reason"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.lastRestart["outcome"], "rolled-back")
