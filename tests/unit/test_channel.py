"""
The line protocol between a generation and its successor: what each end
sends, how it reads the other's lines, that the child decides once, and what
end of file means. Over in-memory transports, and once over a real
socketpair through the reactor.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from txflip.core.channel import (
    MAX_LINE,
    PredecessorChannel,
    SuccessorChannel,
    adoptChannel,
    reportFailureSynchronously,
)


class Heard:
    """What the parent's end was told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def channel(self) -> SuccessorChannel:
        return SuccessorChannel(
            onReady=lambda pid: self.calls.append(("ready", pid)),
            onServing=lambda: self.calls.append(("serving",)),
            onFailed=lambda reason: self.calls.append(("failed", reason)),
            onLost=lambda: self.calls.append(("lost",)),
            onWaiting=lambda what: self.calls.append(("waiting", what)),
            onRetired=lambda why: self.calls.append(("retired", why)),
            onHeard=lambda: self.calls.append(("heard",)),
        )

    def said(self) -> list[tuple]:
        """What was heard, without the C{heard} marks every line gives."""
        return [call for call in self.calls if call != ("heard",)]


def childEnd(decisions: list, parentPid: int) -> PredecessorChannel:
    return PredecessorChannel(
        onGo=lambda why: decisions.append(("go", why)),
        onAbort=lambda why: decisions.append(("abort", why)),
        parentPid=parentPid,
    )


def connected(protocol) -> StringTransport:
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport


class ParentEndTests(TestCase):
    def setUp(self) -> None:
        self.heard = Heard()
        self.channel = self.heard.channel()
        self.transport = connected(self.channel)

    def test_readyServingFailed(self) -> None:
        self.channel.dataReceived(b"ready 4242\nserving\nfailed no database\n")
        self.assertEqual(
            self.heard.said(), [("ready", 4242), ("serving",), ("failed", "no database")]
        )

    def test_waitingAndRetired(self) -> None:
        self.channel.dataReceived(b"waiting the database \nretired handed over\n")
        self.assertEqual(
            self.heard.said(), [("waiting", "the database"), ("retired", "handed over")]
        )

    def test_everyLineIsHeard(self) -> None:
        """Any line, understood or not, counts as a sign of life (alive is nothing else)."""
        self.channel.dataReceived(b"alive\nalive\nhello\n")
        self.assertEqual(self.heard.calls, [("heard",)] * 3)

    def test_linesSplitAcrossReads(self) -> None:
        for piece in (b"rea", b"dy 7", b"\nserv", b"ing\n"):
            self.channel.dataReceived(piece)
        self.assertEqual(self.heard.said(), [("ready", 7), ("serving",)])

    def test_whatIsNotUnderstoodIsIgnored(self) -> None:
        """A ready without a PID, unknown words and bad UTF-8 call nothing."""
        self.channel.dataReceived(b"ready\nready soon\nhello\n\xff\xfe\n\n")
        self.assertEqual(self.heard.said(), [])

    def test_failedWithoutReason(self) -> None:
        self.channel.dataReceived(b"failed\nfailed   \n")
        self.assertEqual(self.heard.said(), [("failed", "no reason given")] * 2)

    def test_goAndAbort(self) -> None:
        self.channel.go()
        self.channel.abort()
        self.assertEqual(self.transport.value(), b"go\nabort\n")

    def test_lineTooLongDropsTheChannel(self) -> None:
        self.channel.dataReceived(b"failed " + b"x" * MAX_LINE + b"\n")
        self.assertEqual(self.heard.calls, [])
        self.assertTrue(self.transport.disconnecting)

    def test_lost(self) -> None:
        self.channel.connectionLost(None)
        self.assertEqual(self.heard.said(), [("lost",)])


class ChildEndTests(TestCase):
    def setUp(self) -> None:
        self.decisions: list = []
        self.channel = childEnd(self.decisions, parentPid=os.getppid())
        self.transport = connected(self.channel)

    def test_readyNamesThisProcess(self) -> None:
        self.channel.ready()
        self.channel.serving()
        self.assertEqual(self.transport.value(), f"ready {os.getpid()}\nserving\n".encode())

    def test_waitingAliveRetiredAreOneLineEach(self) -> None:
        self.channel.waiting("the database\n  on db:5432")
        self.channel.alive()
        self.channel.retired("handed over\tto PID 7")
        self.assertEqual(
            self.transport.value(),
            b"waiting the database on db:5432\nalive\nretired handed over to PID 7\n",
        )
        self.channel.waiting("w" * MAX_LINE * 2)
        self.assertEqual(len(self.transport.value().splitlines()[-1]), MAX_LINE - 1)

    def test_closedOnceLost(self) -> None:
        self.assertFalse(self.channel.closed)
        self.channel.connectionLost(None)
        self.assertTrue(self.channel.closed)

    def test_goAndAbortLines(self) -> None:
        self.channel.dataReceived(b" go \n")
        self.assertEqual(self.decisions, [("go", "the previous generation said go")])
        other: list = []
        aborting = childEnd(other, os.getppid())
        connected(aborting)
        aborting.dataReceived(b"abort\n")
        self.assertEqual(other, [("abort", "it said abort")])

    def test_decidesOnce(self) -> None:
        """After go, neither abort nor the channel's end changes the decision."""
        self.channel.dataReceived(b"hello\ngo\nabort\ngo\n")
        self.channel.connectionLost(None)
        self.assertEqual(self.decisions, [("go", "the previous generation said go")])

    def test_endOfFileFromALiveParentIsAbort(self) -> None:
        """The parent that started this process is still its parent: it closed the channel."""
        self.channel.connectionLost(None)
        self.assertEqual(self.decisions, [("abort", "it closed the channel")])

    def test_endOfFileAfterTheParentDiedIsGo(self) -> None:
        """
        This process's parent is no longer the one that started it (it was
        re-parented, so that one died): go.
        """
        notOurParent = os.getppid() + 1
        channel = childEnd(self.decisions, parentPid=notOurParent)
        connected(channel)
        channel.connectionLost(None)
        self.assertEqual(self.decisions, [("go", "parent went away before saying go")])


class FailedReasonTests(TestCase):
    def sentBy(self, reason: str) -> tuple[bytes, list]:
        """The line the child sends for C{reason}, and what the parent makes of it."""
        child = childEnd([], os.getppid())
        wire = connected(child)
        child.failed(reason)
        heard = Heard()
        parent = heard.channel()
        connected(parent)
        parent.dataReceived(wire.value())
        return wire.value(), heard.calls

    def test_oneLine(self) -> None:
        line, heard = self.sentBy("Traceback:\n  File x\n\tValueError:  bad\n")
        self.assertEqual(line, b"failed Traceback: File x ValueError: bad\n")
        self.assertEqual(heard, [("heard",), ("failed", "Traceback: File x ValueError: bad")])

    def test_longReasonTruncatedToOneLine(self) -> None:
        line, heard = self.sentBy("x" * (MAX_LINE * 2))
        self.assertEqual(len(line), MAX_LINE)
        self.assertEqual(heard, [("heard",), ("failed", "x" * (MAX_LINE - 1 - len("failed ")))])

    def test_longNonASCIIReasonStillHeard(self) -> None:
        line, heard = self.sentBy("é" * MAX_LINE)
        self.assertLessEqual(len(line), MAX_LINE, "longer than the parent reads")
        self.assertEqual([word for word, *_ in heard], ["heard", "failed"])

    def test_reportedSynchronously(self) -> None:
        """Before any reactor runs, the child writes the same line to the descriptor."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reportFailureSynchronously(theirs.fileno(), "cannot\nimport   app")
        self.assertEqual(ours.recv(MAX_LINE * 2), b"failed cannot import app\n")
        reportFailureSynchronously(theirs.fileno(), "y" * (MAX_LINE * 2))
        self.assertEqual(len(ours.recv(MAX_LINE * 2)), MAX_LINE)


class SocketpairTests(TestCase):
    def test_handshakeOverARealSocketpair(self) -> None:
        """ready, go, serving between two adopted ends of a socketpair, through the reactor."""
        parentSide, childSide = socket.socketpair()
        heard: list = []
        wentAhead: Deferred = Deferred()
        servingHeard: Deferred = Deferred()
        parentLost: Deferred = Deferred()

        def onReady(pid: int) -> None:
            heard.append(("ready", pid))
            parent.go()

        parent = SuccessorChannel(
            onReady=onReady,
            onServing=lambda: servingHeard.callback(None),
            onFailed=lambda reason: heard.append(("failed", reason)),
            onLost=lambda: parentLost.callback(None),
        )
        child = PredecessorChannel(
            onGo=wentAhead.callback, onAbort=wentAhead.errback, parentPid=os.getppid()
        )
        adoptChannel(reactor, parentSide, parent)
        adoptChannel(reactor, childSide, child)
        self.assertEqual((parentSide.fileno(), childSide.fileno()), (-1, -1))

        def closed() -> Deferred:
            child.transport.loseConnection()
            parent.transport.loseConnection()
            return parentLost

        self.addCleanup(closed)
        child.ready()
        wentAhead.addCallback(lambda why: self.assertEqual(why, "the previous generation said go"))
        wentAhead.addCallback(lambda _: child.serving())
        wentAhead.addCallback(lambda _: servingHeard)
        wentAhead.addCallback(lambda _: self.assertEqual(heard, [("ready", os.getpid())]))
        return wentAhead
