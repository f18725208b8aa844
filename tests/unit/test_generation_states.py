"""
One generation's restart state, in process: readiness, refusals, the handover,
taking traffic back from a successor that dies, and the final stop.
"""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ExitCalled, ScriptedGeneration, clockReactor
from txflip.core.generation import Generation
from txflip.core.handoff import HandoffState, InheritedListener
from txflip.core.log import generation as currentGeneration
from txflip.core.log import setGeneration
from txflip.core.state import State


def openConnection(generation: Generation) -> Protocol:
    """A connection of the app's, tracked for the drain."""
    factory = generation.tracker.track(Factory.forProtocol(Protocol))
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol


class ReadinessTests(TestCase):
    def test_firstGenerationServesOnceItListens(self) -> None:
        """A first generation that listens late (after set-up of its own) is ready then."""
        generation = ScriptedGeneration(self, clockReactor())
        generation.start()
        self.assertIs(generation.state, State.STARTING)
        self.assertEqual(generation.waitingFor(), ["the app to listen"])
        self.assertFalse(os.path.exists(generation.pidFile), "no PID file before ready")
        generation.registry.standIn.listenTCP(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.assertIs(generation.state, State.SERVING)
        with open(generation.pidFile) as f:
            self.assertEqual(int(f.read()), os.getpid())
        self.assertEqual(generation.seen, ["serving"])

    def test_appThatNeverListensIsTakenAsReadyAtTheTimeout(self) -> None:
        generation = ScriptedGeneration(self, clockReactor(), readyTimeout=5)
        generation.start()
        generation.clock.advance(5)
        self.assertIs(generation.state, State.SERVING)

    def test_expectReadyWaitsForTheCall(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        generation.expectReady()
        generation.start()
        self.assertIs(generation.state, State.STARTING)
        self.assertEqual(generation.waitingFor(), ["the app to call ready()"])
        generation.ready()
        self.assertIs(generation.state, State.SERVING)

    def test_startServiceDeferredIsReadiness(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        started = Deferred()
        generation.waitFor(started, "the app's startService Deferred")
        generation.start()
        self.assertEqual(generation.waitingFor(), ["the app's startService Deferred"])
        started.callback(None)
        self.assertIs(generation.state, State.SERVING)

    def test_failedStartServiceDeferredFailsTheStart(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        started = Deferred()
        generation.waitFor(started, "the app's startService Deferred")
        generation.start()
        started.errback(RuntimeError("no database"))
        self.failureResultOf(started, ExitCalled)

    def test_unclaimedInheritedSocketHoldsReadiness(self) -> None:
        """Without a signal of its own, the app is ready once it listens on every socket again."""
        skt = socket.socket()
        skt.bind(("127.0.0.1", 0))
        port = skt.getsockname()[1]
        fd = os.dup(skt.fileno())
        skt.close()
        key = f"tcp:127.0.0.1:{port}"
        generation = ScriptedGeneration(
            self, clockReactor(), listeners=[InheritedListener(fd, key, "AF_INET")]
        )
        generation.start()
        self.assertEqual(generation.waitingFor(), [f"listening again on {key}"])
        self.assertIs(generation.state, State.STARTING)
        generation.registry.standIn.listenTCP(
            port, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.assertIs(generation.state, State.SERVING)

    def test_explicitReadinessClosesUnclaimedSockets(self) -> None:
        skt = socket.socket()
        skt.bind(("127.0.0.1", 0))
        fd = os.dup(skt.fileno())
        skt.close()
        generation = ScriptedGeneration(
            self, clockReactor(), listeners=[InheritedListener(fd, "tcp:127.0.0.1:1", "AF_INET")]
        )
        generation.expectReady()
        generation.start()
        generation.ready()
        self.assertIs(generation.state, State.SERVING)
        self.assertRaises(OSError, os.fstat, fd)

    def test_abortWhileAlreadyStoppingIsHarmless(self) -> None:
        """A predecessor's abort that crosses this generation's own SIGTERM changes nothing."""
        self.addCleanup(setGeneration, currentGeneration())
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reactor = clockReactor()
        generation = ScriptedGeneration(
            self,
            reactor,
            inherited=HandoffState(generation=2, parentPid=99, controlFd=os.dup(theirs.fileno())),
        )
        generation.expectReady()
        generation.start()
        # The channel to the predecessor, adopted into the (memory) reactor.
        [(_, _, channelFactory)] = reactor.adoptedStreamConnections
        generation.stop()
        channel = channelFactory.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"abort\n")
        self.assertIs(generation.state, State.STOPPING)

    def test_firstGenerationNotReadyInTimeExits(self) -> None:
        generation = ScriptedGeneration(self, clockReactor(), readyTimeout=5)
        generation.expectReady()
        generation.start()
        generation.clock.advance(4.9)
        self.assertRaises(ExitCalled, generation.clock.advance, 0.1)


class UpgradeTests(TestCase):
    def setUp(self) -> None:
        self.generation = ScriptedGeneration(self, clockReactor())
        self.generation.ready()

    def upgrade(self):
        outcomes = []
        self.generation.upgrade("test").addCallback(outcomes.append)
        return self.generation.attempts[-1], outcomes

    def test_askedWhileStartingStartsOnceServing(self) -> None:
        """
        A SIGHUP that reaches a generation before it serves (sent to the PID
        the PID file names the moment it names it) is queued, never dropped.
        """
        generation = ScriptedGeneration(self, clockReactor())
        generation.expectReady()
        generation.start()
        outcomes = []
        generation.upgrade("SIGHUP").addCallback(outcomes.append)
        generation.upgrade("control socket").addCallback(outcomes.append)
        self.assertIsNone(generation.refusal())
        self.assertEqual((outcomes, generation.state), ([], State.STARTING))
        generation.ready()
        self.assertIs(generation.state, State.SERVING)
        generation.clock.advance(0)
        self.assertIs(generation.state, State.UPGRADING, "one attempt for both requests")
        [attempt] = generation.attempts
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.assertEqual([o.succeeded for o in outcomes], [True, True])
        self.assertIs(generation.state, State.HANDED_OVER)

    def test_queuedUpgradeEndsWithAStopBeforeServing(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        generation.expectReady()
        generation.start()
        outcomes = []
        generation.upgrade("SIGHUP").addCallback(outcomes.append)
        generation.stop()
        self.assertEqual(outcomes[0].reason, "refused: this generation is shutting down")
        self.assertIs(generation.state, State.STOPPING)

    def test_refusedInSimpleMode(self) -> None:
        generation = ScriptedGeneration(self, clockReactor())
        generation.simpleModeReason = "running as PID 1"
        generation.ready()
        self.assertIn("simple mode (running as PID 1)", generation.refusal())

    def test_oneUpgradeAtATime(self) -> None:
        self.upgrade()
        self.assertIs(self.generation.state, State.UPGRADING)
        self.assertEqual(self.generation.refusal(), "an upgrade is already in progress")

    def test_failedUpgradeKeepsServing(self) -> None:
        attempt, outcomes = self.upgrade()
        attempt.childExits("exited with code 1")
        self.assertFalse(outcomes[0].succeeded)
        self.assertIs(self.generation.state, State.SERVING)
        self.assertIs(self.generation.lastOutcome, outcomes[0])
        self.assertIsNone(self.generation.refusal())

    def liveFor(self, attempt, seconds: float) -> None:
        """Let C{seconds} pass with the successor saying it is alive, as a real one does."""
        for _ in range(round(seconds / 0.1)):
            self.generation.clock.advance(0.1)
            attempt.childSays("alive")

    def test_handoverDrainsThenExits(self) -> None:
        connection = openConnection(self.generation)
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.assertIs(self.generation.state, State.HANDED_OVER)
        self.assertEqual(
            self.generation.refusal(), "this generation has handed over and is draining"
        )
        self.assertFalse(self.generation.exiting.called, "a connection is still open")
        connection.transport.disconnected = True
        self.liveFor(attempt, 0.5)
        self.assertFalse(self.generation.exiting.called, "it watches its successor a while")
        self.liveFor(attempt, Generation.successorWatch)
        self.assertEqual(self.successResultOf(self.generation.exiting), "handed over")
        self.assertIs(self.generation.state, State.STOPPING)

    def test_successorDyingWhileWeDrainIsTakenBack(self) -> None:
        """The successor dies while this generation still holds the sockets: serve again."""
        connection = openConnection(self.generation)  # keeps the drain going
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.assertTrue(self.generation.registry.paused)
        with open(self.generation.pidFile, "w") as f:
            f.write(str(CHILD_PID))
        attempt.childExits("was killed by signal 9")
        self.assertIs(self.generation.state, State.SERVING)
        self.assertFalse(self.generation.registry.paused, "accepting again")
        self.assertIn("successor-died", self.generation.seen)
        self.assertIn(
            f"PID {CHILD_PID}) was killed by signal 9", self.generation.lastOutcome.reason
        )
        with open(self.generation.pidFile) as f:
            self.assertEqual(int(f.read()), os.getpid())
        self.assertFalse(self.generation.exiting.called)
        self.generation.clock.advance(60)
        self.assertFalse(self.generation.exiting.called, "the cancelled drain never ends it")
        self.assertIsNone(self.generation.refusal(), "a later upgrade works as usual")
        self.assertFalse(connection.transport.disconnecting)

    def test_successorEndingAfterOurExitChangesNothing(self) -> None:
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.liveFor(attempt, Generation.successorWatch + 0.5)
        self.assertTrue(self.generation.exiting.called)
        attempt.childExits("exited with code 0")
        self.assertIs(self.generation.state, State.STOPPING)

    def test_successorDyingRightAfterTakingOverIsTakenBack(self) -> None:
        """Even with nothing to drain, the sockets are kept long enough to take them back."""
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.liveFor(attempt, 0.25)
        attempt.childExits("was killed by signal 9")
        self.assertIs(self.generation.state, State.SERVING)
        self.assertFalse(self.generation.registry.paused)

    def test_hungSuccessorGetsCompany(self) -> None:
        """A successor silent for a second: accept beside it, stay, and leave once it answers."""
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.assertTrue(self.generation.registry.paused)
        self.generation.clock.advance(0.6)
        self.assertFalse(self.generation.registry.paused, "accepting beside a silent successor")
        self.assertIn("successor-silent", self.generation.seen)
        self.generation.clock.advance(30)
        self.assertFalse(self.generation.exiting.called, "never leaves a hung successor alone")
        self.assertEqual(attempt.signalsSent, [], "not killed before the ready timeout")
        attempt.childSays("alive")
        self.assertTrue(self.generation.registry.paused)
        self.assertEqual(self.successResultOf(self.generation.exiting), "handed over")

    def test_successorHungPastTheReadyTimeoutIsKilledAndTakenBack(self) -> None:
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.generation.clock.advance(0.6)
        self.generation.clock.advance(self.generation.readyTimeout)
        self.assertEqual(attempt.signalsSent, [signal.SIGKILL])
        attempt.childExits("was killed by signal 9")
        self.assertIs(self.generation.state, State.SERVING)

    def test_retiredSuccessorsExitIsNoCrash(self) -> None:
        """A successor that handed over in turn says so: its exit is not taken back from."""
        connection = openConnection(self.generation)  # noqa: F841 (keeps the drain going)
        attempt, outcomes = self.upgrade()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        attempt.childSays("retired handed over")
        attempt.childExits("exited with code 0")
        self.assertIs(self.generation.state, State.HANDED_OVER)

    def test_stopDrainsAndRemovesThePIDFile(self) -> None:
        stopped = self.generation.stop()
        self.successResultOf(stopped)
        self.assertIs(self.generation.state, State.STOPPING)
        self.assertFalse(os.path.exists(self.generation.pidFile))
        self.assertEqual(self.successResultOf(self.generation.exiting), "shut down")
        self.assertEqual(self.generation.refusal(), "this generation is shutting down")

    def test_stopDuringAnUpgradeAbandonsIt(self) -> None:
        attempt, outcomes = self.upgrade()
        stopped = self.generation.stop()
        self.assertNoResult(stopped)
        attempt.childExits("was killed by signal 15")
        self.successResultOf(stopped)
        self.assertEqual(outcomes[0].reason, "this generation is shutting down")
        self.assertIs(self.generation.state, State.STOPPING)
