"""
Moving idle keep-alive connections from the workers of one generation to the
workers of the next.

Each worker of the old generation gets one transfer channel
(L{txflip.core.transfer}) to each worker of the new one, and moves its idle
HTTP/1.x connections over them exactly as a single process moves its own
(L{txflip.core.connmove} on one end, L{txflip.core.connadopt} on the other),
sharing them out in turn, so that every new worker gets its part. The old
leader makes the channels; the two leaders only pass their ends along:

    new leader -> old leader     workers <M>            sent as it starts serving
    old leader -> old worker x   move-to <y> + end      once for each new worker y
    old leader -> new leader     channel <y> <x> + end  the other end of each
    new leader -> new worker y   move-from <x> + end
    old leader -> old worker x   drain (command channel), once its ends are sent

A leader talks to each of its workers over the worker's I{links}, a
C{SOCK_SEQPACKET} channel made with the worker. An old generation that gets
no C{workers} line (its successor is one process) drains its workers'
connections without moving them; a new leader refuses the offers of an old
generation that is one process.
"""

from __future__ import annotations

import socket
import weakref
from collections import Counter

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from txflip.core.connadopt import ConnectionReceiver
from txflip.core.connmove import ConnectionMover
from txflip.core.events import Events
from txflip.core.log import log
from txflip.core.state import State
from txflip.core.transfer import PacketChannel, closeDescriptors

HANDOUT_SECONDS = 1.0
"""
The longest the old leader waits for the new one's count of workers, and for
the channels to reach its workers, before its workers drain anyway. The count
is sent before the new generation says it serves, so it is normally there at once.
"""

WORKERS = "workers"
CHANNEL = "channel"
MOVE_TO = "move-to"
MOVE_FROM = "move-from"


def _index(header: dict, name: str) -> int | None:
    value = header.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def combineReports(reports: list[dict]) -> dict:
    """
    One C{connections-moved} report (L{txflip.core.events}) out of several:
    each mover's in a worker, or each worker's in a leader.
    """
    stayed: Counter = Counter()
    for report in reports:
        stayed.update(report.get("stayed") or {})
    failures = [report["failure"] for report in reports if report.get("failure")]
    return {
        "moved": sum(int(report.get("moved") or 0) for report in reports),
        "stayed": dict(stayed),
        "failure": failures[0] if failures else None,
        "ms": max((int(report.get("ms") or 0) for report in reports), default=0),
        "final": all(report.get("final", True) for report in reports),
        "waiting": sum(int(report.get("waiting") or 0) for report in reports),
        "arriving": any(report.get("arriving") for report in reports),
        "movedKinds": _addedUp(report.get("movedKinds") or {} for report in reports),
    }


def _addedUp(counts) -> dict:
    total: Counter = Counter()
    for count in counts:
        total.update(count)
    return dict(total)


def reportMoves(events: Events, reports: list[dict]) -> None:
    """Emit C{reports} as one C{connections-moved} event."""
    report = combineReports(reports)
    events.emit(
        "connections-moved",
        moved=report["moved"],
        movedKinds=report["movedKinds"],
        stayed=report["stayed"],
        failure=report["failure"],
        ms=report["ms"],
        final=report["final"],
        waiting=report["waiting"],
        arriving=report["arriving"],
    )


def readNow(channel: PacketChannel) -> None:
    """Take what is already queued on C{channel}, without waiting for the reactor."""
    lost = channel.doRead()
    if lost is not None:
        channel.connectionLost(Failure(lost))


class IncomingChannels:
    """
    The new leader's end of its predecessor's transfer channel: it says how
    many workers this generation has, and hands each channel that arrives to
    the worker it is for.

    @ivar handed: channels handed to each worker slot, by index.
    """

    def __init__(self, reactor, pool, skt: socket.socket, fromGeneration: int) -> None:
        self._pool = pool
        self._fromGeneration = fromGeneration
        self.handed = [0] * pool.count
        self.channel = PacketChannel(reactor, skt, self._packet, self._closed)
        try:
            self.channel.send({"op": WORKERS, "count": pool.count})
        except OSError:
            pass  # the channel is gone: nothing will move

    @property
    def receiving(self) -> bool:
        """Whether the previous generation may still send channels here."""
        return not self.channel.closed

    def _packet(self, header: dict, payload: bytes, fds: list[int]) -> None:
        op = header["op"]
        if op == "offer" and isinstance(header.get("id"), int):
            # The previous generation is one process: its connections cannot
            # move to a leader, which never serves.
            closeDescriptors(fds)
            self._answer(
                {
                    "op": "refused",
                    "id": header["id"],
                    "reason": "the new generation serves through workers",
                }
            )
            return
        target = _index(header, "worker")
        source = _index(header, "from")
        if op != CHANNEL or len(fds) != 1 or target is None or source is None:
            closeDescriptors(fds)
            return
        slots = self._pool.slots
        worker = slots[target].worker if target < len(slots) else None
        if worker is None or not worker.toldGo:
            closeDescriptors(fds)  # the old worker sees the channel close, and drains
            return
        if worker.process.hand({"op": MOVE_FROM, "worker": source}, fds[0]):
            self.handed[target] += 1

    def _answer(self, header: dict) -> None:
        try:
            self.channel.send(header)
        except OSError:
            pass

    def _closed(self, why: str) -> None:
        if any(self.handed):
            log.info(
                "handed {count} channel(s) from the workers of generation {previous} "
                "to this generation's workers",
                count=sum(self.handed),
                previous=self._fromGeneration,
            )

    def close(self) -> None:
        self.channel.close("this generation stops")


class ChannelHandout:
    """
    The old leader's part, as its generation drains: learn how many workers
    the new generation has, make a channel for each pair of old and new
    worker, and send each end on its way.

    @ivar sent: fires once every old worker has its channels (or after
        L{HANDOUT_SECONDS}): its workers may drain now.
    """

    def __init__(self, reactor, pool, transfer: socket.socket, wait: float = HANDOUT_SECONDS):
        self._reactor = reactor
        self._pool = pool
        self._transfer = transfer
        self._wait = wait
        self._channel: PacketChannel | None = None
        self._timer = None
        self._pending = 0
        self.newWorkers: int | None = None
        self.handedTo: list = []
        """The old workers that got channels (their C{WorkerState}s)."""
        self.sent: Deferred = Deferred()

    def start(self) -> Deferred:
        self._channel = PacketChannel(self._reactor, self._transfer, self._packet, self._closed)
        self._timer = self._reactor.callLater(self._wait, self._done)
        # The count was queued before the successor said it serves.
        readNow(self._channel)
        return self.sent

    def cancel(self) -> None:
        """The successor died: nothing more is handed out."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._channel is not None:
            self._channel.close("the successor is gone")

    def _packet(self, header: dict, payload: bytes, fds: list[int]) -> None:
        closeDescriptors(fds)
        count = _index(header, "count")
        if header["op"] == WORKERS and count and self.newWorkers is None and not self.sent.called:
            self.newWorkers = count
            self._handOut(count)

    def _closed(self, why: str) -> None:
        if self.newWorkers is None:
            self._done()

    def _handOut(self, count: int) -> None:
        workers = [w for w in self._pool.live() if w.toldGo and w.state == "serving"]
        self._pending = 1  # until every channel is on its way (onSent may come at once)
        for worker in workers:
            for target in range(count):
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self._pending += 1
                if not worker.process.hand(
                    {"op": MOVE_TO, "worker": target}, ours.detach(), onSent=self._handed
                ):
                    self._pending -= 1
                    closeDescriptors([theirs.detach()])
                    continue
                if worker not in self.handedTo:
                    self.handedTo.append(worker)
                try:
                    self._channel.send(
                        {"op": CHANNEL, "worker": target, "from": worker.index},
                        fds=[theirs.detach()],
                    )
                except OSError:
                    pass  # the successor is gone: the old worker sees the channel close
        log.info(
            "moving idle connections from {old} worker(s) to the {new} of the next generation",
            old=len(workers),
            new=count,
        )
        self._channel.closeWhenSent("every channel handed out")
        self._handed()

    def _handed(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._done()

    def _done(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.newWorkers is None and self._channel is not None:
            self._channel.close("the next generation has no workers")
        if not self.sent.called:
            self.sent.callback(self.newWorkers or 0)


class _Share:
    """The part of a tracker's connections that one mover moves."""

    def __init__(self, shares: _Shares, index: int) -> None:
        self._shares = shares
        self._index = index

    def open(self) -> list:
        return [p for p in self._shares.tracker.open() if self._shares.shareOf(p) == self._index]


class _Shares:
    """
    Deals every connection to one of C{count} shares, in turn, as first seen,
    beginning with share C{first} (each old worker begins with another new
    worker, so that the odd ones out do not all go to the first).
    """

    def __init__(self, tracker, count: int, first: int = 0) -> None:
        self.tracker = tracker
        self._count = count
        self._next = first % count
        self._dealt: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def shareOf(self, protocol) -> int:
        share = self._dealt.get(protocol)
        if share is None:
            share = self._dealt[protocol] = self._next
            self._next = (self._next + 1) % self._count
        return share

    def share(self, index: int) -> _Share:
        return _Share(self, index)


class OutgoingMoves:
    """
    An old worker's moves: one L{ConnectionMover} per new worker, each over
    the channel the leader handed for it, and each with its share of the
    connections. Given to the L{txflip.core.drain.Drain} as its claims.

    Once every mover has reported (L{ConnectionMover} reports when every idle
    connection has moved, and when it finishes), their reports go out as one
    C{connections-moved} event of C{generation}, and again at each new report.

    @ivar done: fires once every mover has finished.
    """

    def __init__(self, reactor, generation, channels: dict[int, socket.socket], arriving) -> None:
        self._generation = generation
        self._targets = sorted(channels)
        self._shares = shares = _Shares(
            generation.tracker, max(1, len(channels)), getattr(generation, "workerIndex", 0) or 0
        )
        self._reports: dict[int, dict] = {}
        self._movers = [
            ConnectionMover(
                reactor,
                shares.share(i),
                generation.registry,
                channels[target],
                self._eventsOf(i),
                generation.drainTimeout,
                arriving=arriving,
            )
            for i, target in enumerate(self._targets)
        ]
        self.done: Deferred = Deferred()

    def _eventsOf(self, index: int) -> Events:
        events = Events()
        events.subscribe(lambda name, fields: self._reported(index, fields))
        return events

    def _reported(self, index: int, fields: dict) -> None:
        self._reports[index] = fields
        if len(self._reports) == len(self._movers):
            reportMoves(self._generation.events, list(self._reports.values()))

    @property
    def moved(self) -> int:
        return sum(mover.moved for mover in self._movers)

    def claimed(self, protocol) -> bool:
        """Whether the mover of C{protocol}'s share still claims it."""
        if not self._movers:
            return False
        return self._movers[self._shares.shareOf(protocol)].claimed(protocol)

    def start(self) -> Deferred:
        if not self._movers:
            self.done.callback(0)
            return self.done
        finished = DeferredList([mover.start() for mover in self._movers], consumeErrors=True)
        finished.addCallback(self._finished)
        return self.done

    def abandon(self, why: str) -> None:
        for mover in self._movers:
            mover.abandon(why)

    def _finished(self, _) -> None:
        each = ", ".join(
            f"{mover.moved} to worker {target}"
            for mover, target in zip(self._movers, self._targets, strict=True)
        )
        log.info(
            "moved {moved} connection(s) to the workers of generation {next} ({each})",
            moved=self.moved,
            next=self._generation.number + 1,
            each=each,
        )
        self.done.callback(self.moved)


class WorkerLinks:
    """
    A worker's end of its links to the leader: channels to move connections
    to the next generation's workers (kept until the worker drains), and
    channels from the previous generation's (taken at once).
    """

    def __init__(self, reactor, generation, skt: socket.socket) -> None:
        self._reactor = reactor
        self._generation = generation
        self._outgoing: dict[int, socket.socket] = {}
        self.receivers: list[ConnectionReceiver] = []
        self.channel = PacketChannel(reactor, skt, self._packet, lambda why: None)

    def arriving(self) -> bool:
        """Whether connections may still arrive from the previous generation's workers."""
        return any(receiver.receiving for receiver in self.receivers)

    def _packet(self, header: dict, payload: bytes, fds: list[int]) -> None:
        op = header["op"]
        index = _index(header, "worker")
        if len(fds) != 1 or index is None or op not in (MOVE_TO, MOVE_FROM):
            closeDescriptors(fds)
            return
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fds[0])
        if self._generation.state not in (State.STARTING, State.SERVING):
            skt.close()  # this worker is on its way out: the other end keeps its connections
            return
        if op == MOVE_TO:
            previous = self._outgoing.pop(index, None)
            if previous is not None:
                previous.close()
            self._outgoing[index] = skt
        else:
            self.receivers.append(
                ConnectionReceiver(
                    self._reactor, self._generation.registry, skt, self._generation.number - 1
                )
            )

    def moves(self) -> OutgoingMoves:
        """Moves over the channels handed so far (the drain command follows them)."""
        readNow(self.channel)  # the channels were queued before the drain command
        channels, self._outgoing = self._outgoing, {}
        return OutgoingMoves(self._reactor, self._generation, channels, self.arriving)

    def dropOutgoing(self) -> None:
        """Channels handed for a drain that did not come (or was called off)."""
        channels, self._outgoing = self._outgoing, {}
        for skt in channels.values():
            skt.close()
