"""
The private line protocol between a generation and its successor.

It runs over one end of a socketpair that the parent hands the child as an
inherited descriptor. The exchange is a three-way handshake, so that there is
never a moment when nobody will accept a queued connection:

    child  -> parent   waiting <what>  not ready yet: what it still waits for (repeated)
    child  -> parent   ready <pid>     the app is ready; not accepting yet
    parent -> child    go              take over (the parent still accepts)
    child  -> parent   serving         the PID file is written and the child accepts;
                                       the parent stops accepting and drains
    child  -> parent   alive           every HEARTBEAT_SECONDS once it serves, so the
                                       parent can tell a hung successor from a busy one
    child  -> parent   retired <why>   the child handed over in turn, or is stopping:
                                       its exit is no reason to take the sockets back

In a sequential handover (C{--handover sequential}) the child builds its app
and waits before starting it:

    child  -> parent   prepared        the app is built; waiting for the parent's to stop
    parent -> child    start           the parent's app has stopped: start yours

Either side, at any time while the channel is open:

    reopen-logs      reopen your log files (SIGUSR1, L{txflip.core.reopen}) and
                     pass it on away from me

and from the parent, before C{go}, once the child serves, and just before it exits:

    carry <json>     what this generation hands on (L{txflip.core.carry})

and a rollback (C{txflip rollback}, within C{--rollback-window}):

    child  -> parent   rollback <why>       take the traffic back
    parent -> child    rolled-back          done: I accept again; drain and exit
    parent -> child    rollback-refused <why>
    child  -> parent   return-channel       with a descriptor (SCM_RIGHTS): a transfer
                                            channel over which the child's idle
                                            keep-alive connections move back

and, from a child that cannot start, C{failed <reason>}; from a parent that
gives up on its child (a timeout, its own shutdown), C{abort}. The channel
stays open while the parent drains, so the parent hears C{retired}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

MAX_LINE = 4096
REOPEN_LOGS = "reopen-logs"
CARRY = b"carry"
HEARTBEAT_SECONDS = 0.1


@implementer(IFileDescriptorReceiver)
class SuccessorChannel(LineOnlyReceiver):
    """The parent's end: hears what the child reports."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        onReady: Callable[[int], None],
        onServing: Callable[[], None],
        onFailed: Callable[[str], None],
        onLost: Callable[[], None],
        onWaiting: Callable[[str], None] = lambda what: None,
        onRetired: Callable[[str], None] = lambda why: None,
        onHeard: Callable[[], None] = lambda: None,
        onPrepared: Callable[[], None] = lambda: None,
        onReopenLogs: Callable[[], None] = lambda: None,
        onRollback: Callable[[str], None] = lambda why: None,
        onReturnChannel: Callable[[int], None] = os.close,
    ) -> None:
        self._onReturnChannel = onReturnChannel
        self._descriptors: list[int] = []
        self._onReopenLogs = onReopenLogs
        self._onRollback = onRollback
        self._onReady = onReady
        self._onPrepared = onPrepared
        self._onServing = onServing
        self._onFailed = onFailed
        self._onLost = onLost
        self._onWaiting = onWaiting
        self._onRetired = onRetired
        self._onHeard = onHeard

    def lineReceived(self, line: bytes) -> None:
        self._onHeard()
        word, _, rest = line.decode("utf-8", "replace").partition(" ")
        if word == "ready" and rest.strip().isdigit():
            self._onReady(int(rest))
        elif word == "serving":
            self._onServing()
        elif word == "prepared":
            self._onPrepared()
        elif word == "failed":
            self._onFailed(rest.strip() or "no reason given")
        elif word == "waiting":
            self._onWaiting(rest.strip())
        elif word == "retired":
            self._onRetired(rest.strip())
        elif word == REOPEN_LOGS:
            self._onReopenLogs()
        elif word == "rollback":
            self._onRollback(rest.strip() or "asked by the next generation")
        elif word == "return-channel" and self._descriptors:
            self._onReturnChannel(self._descriptors.pop(0))

    def go(self) -> None:
        self.sendLine(b"go")

    def start(self) -> None:
        self.sendLine(b"start")

    def abort(self) -> None:
        self.sendLine(b"abort")

    def reopenLogs(self) -> None:
        self.sendLine(REOPEN_LOGS.encode())

    def carry(self, text: str) -> None:
        self.sendLine(carryLine(text))

    def rollbackAnswer(self, refusal: str | None) -> None:
        if refusal is None:
            self.sendLine(b"rolled-back")
        else:
            self.sendLine(encodeLine("rollback-refused " + refusal))

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """A descriptor for the C{return-channel} line that follows (close-on-exec)."""
        os.set_inheritable(descriptor, False)
        if len(self._descriptors) >= 1:
            os.close(self._descriptors.pop(0))  # one at a time: an earlier one had no line
        self._descriptors.append(descriptor)

    def connectionLost(self, reason=None) -> None:
        for descriptor in self._descriptors:
            os.close(descriptor)
        self._descriptors.clear()
        self._onLost()


class PredecessorChannel(LineOnlyReceiver):
    """The child's end: tells the parent how its start went, waits for C{go}."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        onGo: Callable[[str], None],
        onAbort: Callable[[str], None],
        parentPid: int,
        onStart: Callable[[], None] = lambda: None,
        onReopenLogs: Callable[[], None] = lambda: None,
        onCarry: Callable[[str], None] = lambda text: None,
        onRollbackAnswer: Callable[[str | None], None] = lambda refusal: None,
    ) -> None:
        self._onReopenLogs = onReopenLogs
        self._onCarry = onCarry
        self._onRollbackAnswer = onRollbackAnswer
        self._onGo = onGo
        self._onAbort = onAbort
        self._onStart = onStart
        self._parentPid = parentPid
        self._decided = False
        self.closed = False

    def ready(self) -> None:
        self.sendLine(f"ready {os.getpid()}".encode())

    def prepared(self) -> None:
        self.sendLine(b"prepared")

    def serving(self) -> None:
        self.sendLine(b"serving")

    def waiting(self, what: str) -> None:
        self.sendLine(encodeLine("waiting " + what))

    def alive(self) -> None:
        self.sendLine(b"alive")

    def retired(self, why: str) -> None:
        self.sendLine(encodeLine("retired " + why))

    def failed(self, reason: str) -> None:
        self.sendLine(encodeLine("failed " + reason))

    def reopenLogs(self) -> None:
        self.sendLine(REOPEN_LOGS.encode())

    def rollback(self, why: str) -> None:
        self.sendLine(encodeLine("rollback " + why))

    def returnChannel(self, descriptor: int) -> None:
        """Send C{descriptor} (kept open by the caller until this process exits)."""
        self.transport.sendFileDescriptor(descriptor)
        self.sendLine(b"return-channel")

    def lineReceived(self, line: bytes) -> None:
        word = line.strip()
        if word == b"start":
            self._onStart()
        elif word == b"go":
            self._decide(self._onGo, "the previous generation said go")
        elif word == b"abort":
            self._decide(self._onAbort, "it said abort")
        elif word == REOPEN_LOGS.encode():
            self._onReopenLogs()
        elif word == b"rolled-back":
            self._onRollbackAnswer(None)
        elif word.startswith(b"rollback-refused"):
            why = word[len(b"rollback-refused") :].decode("utf-8", "replace").strip()
            self._onRollbackAnswer(why or "no reason given")
        elif word.startswith(CARRY + b" "):
            self._onCarry(word[len(CARRY) + 1 :].decode("utf-8", "replace"))

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        # End of file means go only if the parent really died; a parent that is
        # alive and closed the channel has given up on this generation.
        if os.getppid() == self._parentPid:
            self._decide(self._onAbort, "it closed the channel")
        else:
            self._decide(self._onGo, "parent went away before saying go")

    def _decide(self, then: Callable[[str], None], why: str) -> None:
        if not self._decided:
            self._decided = True
            then(why)


def adoptChannel(reactor, skt: socket.socket, protocol):
    """Run C{protocol} over a connected socketpair end; C{skt} is closed here."""
    skt.setblocking(False)
    try:
        reactor.adoptStreamConnection(
            skt.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: protocol)
        )
    finally:
        skt.close()
    return protocol


def encodeLine(text: str) -> bytes:
    """
    One protocol line: white space folded, UTF-8, at most C{MAX_LINE - 1}
    bytes (cut between characters, never inside one), without its newline.
    """
    data = " ".join(text.split()).encode("utf-8", "replace")[: MAX_LINE - 1]
    return data.decode("utf-8", "ignore").encode("utf-8")


def carryLine(text: str) -> bytes:
    """
    A C{carry} line, without its newline.

    @raise ValueError: it would not fit in a line (the receiver would drop the channel).
    """
    line = CARRY + b" " + text.encode("utf-8")
    if len(line) >= MAX_LINE or b"\n" in line:
        raise ValueError(f"carried state of {len(line)} bytes does not fit in a channel line")
    return line


def writeLine(fd: int, line: str) -> None:
    """Write one protocol line to the channel at C{fd} now, bypassing the reactor."""
    try:
        os.write(fd, encodeLine(line) + b"\n")
    except OSError:
        pass


def reportFailureSynchronously(fd: int, reason: str) -> None:
    """Tell the parent why this child is about to exit, before any reactor runs."""
    writeLine(fd, "failed " + reason)
