"""
SIGUSR1 reopens the log files of every live generation: the serving one
passes the word to its predecessor and successor over the handoff channels,
each only away from where it came from, and a leader to its workers.
"""

from __future__ import annotations

import signal

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tests.support.inprocess import CHILD_PID, ScriptedGeneration, clockReactor
from txflip.core.channel import PredecessorChannel, SuccessorChannel
from txflip.core.reopen import REOPEN_SIGNAL, LogFiles, ReopenSignal
from txflip.workers.commands import COMMANDS, LeaderEnd


class Recorder:
    def __init__(self, name: str, calls: list[str], error: OSError | None = None) -> None:
        self.name, self.calls, self.error = name, calls, error

    def __call__(self) -> None:
        self.calls.append(self.name)
        if self.error is not None:
            raise self.error


class LogFilesTests(TestCase):
    def test_oneThatFailsLeavesTheOthersReopened(self) -> None:
        calls: list[str] = []
        files = LogFiles()
        files.add("the access log", Recorder("access", calls, PermissionError(13, "denied")))
        files.add("the log file", Recorder("log", calls))
        self.assertEqual(files.reopen(), ["the log file"])
        self.assertEqual(calls, ["access", "log"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class ServingGenerationTests(TestCase):
    def setUp(self) -> None:
        self.generation = ScriptedGeneration(self, clockReactor())
        self.generation.ready()
        self.calls: list[str] = []
        self.generation.logs.files.add("the access log", Recorder("access", self.calls))

    def startSuccessor(self):
        self.generation.upgrade("test")
        return self.generation.restarts.attempt

    def test_signalReopensHereAndTellsTheStartingSuccessor(self) -> None:
        attempt = self.startSuccessor()
        self.assertEqual(self.generation.logs.reopen(), ["the access log"])
        self.assertEqual(self.calls, ["access"])
        self.assertEqual(attempt.parentSaid(), ["reopen-logs"])

    def test_theSuccessorThatTookOverIsToldWhileThisOneDrains(self) -> None:
        attempt = self.startSuccessor()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        self.assertIsNotNone(self.generation.restarts.handover)
        self.generation.logs.reopen()
        self.assertEqual(attempt.parentSaid(), ["go", "reopen-logs"])

    def test_toldByTheSuccessorReopensWithoutAnsweringBack(self) -> None:
        """The word from the successor goes on to the predecessor only: no loop."""
        attempt = self.startSuccessor()
        attempt.childSays(f"ready {CHILD_PID}")
        attempt.childSays("serving")
        attempt.childSays("reopen-logs")
        self.assertEqual(self.calls, ["access"])
        self.assertEqual(attempt.parentSaid(), ["go"])

    def test_withoutASuccessorOnlyThisOneReopens(self) -> None:
        self.generation.logs.reopen()
        self.assertEqual(self.calls, ["access"])


class ChannelTests(TestCase):
    def test_parentSaysReopenToTheChild(self) -> None:
        told = []
        channel = PredecessorChannel(
            lambda why: None, lambda why: None, 1, onReopenLogs=lambda: told.append(1)
        )
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"reopen-logs\n")
        self.assertEqual(told, [1])
        channel.reopenLogs()
        self.assertEqual(transport.value(), b"reopen-logs\n")

    def test_childSaysReopenToTheParent(self) -> None:
        told = []
        nothing = lambda *a: None  # noqa: E731
        channel = SuccessorChannel(
            nothing, nothing, nothing, nothing, onReopenLogs=lambda: told.append(1)
        )
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"reopen-logs\n")
        self.assertEqual(told, [1])


class WorkerCommandTests(TestCase):
    def test_theLeaderMaySayReopen(self) -> None:
        self.assertIn("reopen-logs", COMMANDS)
        end = LeaderEnd(lambda stats: None, lambda aborted: None)
        transport = StringTransport()
        end.makeConnection(transport)
        end.send("reopen-logs")
        self.assertEqual(transport.value(), b"reopen-logs\n")


class ReopenSignalTests(TestCase):
    def setUp(self) -> None:
        previous = signal.getsignal(REOPEN_SIGNAL)
        self.addCleanup(signal.signal, REOPEN_SIGNAL, previous)
        signal.signal(REOPEN_SIGNAL, signal.SIG_DFL)

    def test_installedWhereNothingHandlesIt(self) -> None:
        self.assertTrue(ReopenSignal(None, lambda source: None).install())
        self.assertNotEqual(signal.getsignal(REOPEN_SIGNAL), signal.SIG_DFL)

    def test_anotherHandlerIsLeftAlone(self) -> None:
        def theirs(signum, frame):
            pass

        signal.signal(REOPEN_SIGNAL, theirs)
        self.assertFalse(ReopenSignal(None, lambda source: None).install())
        self.assertIs(signal.getsignal(REOPEN_SIGNAL), theirs)
