"""
Moving idle connections between the workers of two generations, in one
process: the two leaders' parts talk over a real transfer socketpair, each
worker's links are a real socketpair, the workers' listener registries share
a real listening socket (as the workers of two generations do), and real
clients connect. What a client sees is read from its own socket.
"""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.unit.test_connection_transfer import Who, nothingArrived, readResponse
from txflip.core.drain import ConnectionTracker
from txflip.core.events import Events
from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.state import State
from txflip.core.transfer import PacketChannel, closeDescriptors, transferPair
from txflip.workers.leader import LeaderDrain
from txflip.workers.moving import ChannelHandout, IncomingChannels, WorkerLinks, _Shares


class LinkedProcess:
    """A worker process as a leader sees it: only its links, a real socketpair."""

    def __init__(self, testCase) -> None:
        self.ours, self.theirs = transferPair()
        self.links = PacketChannel(reactor, self.ours, self._packet, lambda why: None)
        testCase.addCleanup(self.links.close)
        testCase.addCleanup(self.theirs.close)

    def _packet(self, header, payload, fds) -> None:
        closeDescriptors(fds)

    def hand(self, header: dict, fd: int, onSent=None) -> bool:
        self.links.send(header, fds=[fd], onSent=onSent)
        return True


def worker(testCase, index: int) -> SimpleNamespace:
    return SimpleNamespace(
        index=index, toldGo=True, state="serving", process=LinkedProcess(testCase)
    )


class Pool:
    """What the leaders' parts read of a pool: its slots and live workers."""

    def __init__(self, workers: list) -> None:
        self.count = len(workers)
        self.slots = [SimpleNamespace(worker=w) for w in workers]

    def live(self) -> list:
        return [slot.worker for slot in self.slots if slot.worker is not None]


def until(predicate, what: str, seconds: float = 5.0):
    """A Deferred firing once C{predicate()} holds, polled on the reactor."""

    @inlineCallbacks
    def poll():
        for _ in range(int(seconds / 0.01)):
            if predicate():
                return
            yield deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"timed out waiting for {what}")

    return poll()


def received(testCase, process: LinkedProcess) -> list[tuple[dict, socket.socket]]:
    """Every packet waiting on a worker's end of its links, descriptors as sockets."""
    packets = []
    process.theirs.setblocking(False)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(process.theirs, 65536, 4)
        except BlockingIOError:
            return packets
        header = json.loads(data.partition(b"\n")[0])
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fds[0])
        testCase.addCleanup(skt.close)
        packets.append((header, skt))


def endOfFile(skt: socket.socket) -> bool:
    """Whether a non-blocking socket's peer has closed (and nothing is left to read)."""
    try:
        return skt.recv(10) == b""
    except BlockingIOError:
        return False


class LeadersTests(TestCase):
    """The two leaders' parts: a channel for each pair of old and new worker."""

    timeout = 20

    def setUp(self) -> None:
        self.ours, self.theirs = transferPair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)

    def incoming(self, pool: Pool) -> IncomingChannels:
        channels = IncomingChannels(reactor, pool, self.theirs, 1)
        self.addCleanup(channels.close)
        return channels

    @inlineCallbacks
    def test_eachOldWorkerGetsAChannelToEachNewWorker(self):
        """
        The new leader says it has two workers; each of the two old workers
        gets a channel to each of them, and each channel's other end reaches
        the new worker it names, marked with the old worker it comes from.
        """
        old = Pool([worker(self, 0), worker(self, 1)])
        new = Pool([worker(self, 0), worker(self, 1)])
        incoming = self.incoming(new)
        newWorkers = yield ChannelHandout(reactor, old, self.ours).start()
        self.assertEqual(newWorkers, 2)
        yield until(lambda: not incoming.receiving, "the old leader to close the channel")
        self.assertEqual(incoming.handed, [2, 2])
        outgoing = {w.index: received(self, w.process) for w in old.live()}
        arriving = {w.index: received(self, w.process) for w in new.live()}
        for x, packets in outgoing.items():
            self.assertEqual(sorted(h["worker"] for h, _ in packets), [0, 1])
            for header, skt in packets:
                self.assertEqual(header["op"], "move-to")
                skt.send(f"from {x} to {header['worker']}".encode())
        for y, packets in arriving.items():
            self.assertEqual(sorted(h["worker"] for h, _ in packets), [0, 1])
            for header, skt in packets:
                self.assertEqual(header["op"], "move-from")
                self.assertEqual(skt.recv(100), f"from {header['worker']} to {y}".encode())

    @inlineCallbacks
    def test_aOneProcessSuccessorMeansNoChannels(self):
        """
        A successor that never says how many workers it has (one process):
        the old workers may drain after the wait, with no channel.
        """
        old = Pool([worker(self, 0)])
        handout = ChannelHandout(reactor, old, self.ours, wait=0.05)
        newWorkers = yield handout.start()
        self.assertEqual(newWorkers, 0)
        self.assertEqual(received(self, old.live()[0].process), [])

    @inlineCallbacks
    def test_aSuccessorThatIsGoneMeansNoChannelsAtOnce(self):
        """The successor's end closed: no wait at all."""
        self.theirs.close()
        old = Pool([worker(self, 0)])
        newWorkers = yield ChannelHandout(reactor, old, self.ours, wait=30).start()
        self.assertEqual(newWorkers, 0)

    @inlineCallbacks
    def test_aChannelForAnEmptySlotIsClosed(self):
        """A new worker slot without a worker: the old worker's channel closes, nothing hangs."""
        old = Pool([worker(self, 0)])
        new = Pool([worker(self, 0), None])
        new.slots[1].worker = None
        incoming = self.incoming(new)
        yield ChannelHandout(reactor, old, self.ours).start()
        yield until(lambda: not incoming.receiving, "the old leader to close the channel")
        self.assertEqual(incoming.handed, [1, 0])
        toSecond = [skt for h, skt in received(self, old.live()[0].process) if h["worker"] == 1]
        self.assertEqual(len(toSecond), 1)
        toSecond[0].setblocking(False)
        yield until(lambda: endOfFile(toSecond[0]), "end of file")

    @inlineCallbacks
    def test_offersOfAOneProcessPredecessorAreRefused(self):
        """An old generation of one process offers a connection: refused, its copy closed."""
        self.incoming(Pool([worker(self, 0)]))
        count = socket.recv_fds(self.ours, 65536, 4)[0]
        self.assertIn(b'"op":"workers","count":1', count)
        spare, other = socket.socketpair()
        self.addCleanup(other.close)
        offer = b'{"op":"offer","id":7,"key":"k","family":"AF_INET"}\n'
        socket.send_fds(self.ours, [offer], [spare.fileno()])
        spare.close()  # the copy in flight is the new leader's now
        answers = []

        def answered() -> bool:
            try:
                answers.append(socket.recv_fds(self.ours, 65536, 4))
            except BlockingIOError:
                return False
            return True

        yield until(answered, "an answer")
        self.assertIn(b'"op":"refused","id":7', answers[0][0])
        self.assertEqual(answers[0][1], [])
        other.setblocking(False)
        yield until(lambda: endOfFile(other), "the offered copy closed")


class WorkersMoveTests(TestCase):
    """One old worker moves its idle connections to two new workers, in turn."""

    timeout = 20

    def setUp(self) -> None:
        self.tracker = ConnectionTracker()
        self.old = ListenerRegistry(reactor, factoryHook=self.tracker.track)
        port = self.old.standIn.listenTCP(0, Site(Who("old"), timeout=None), interface="127.0.0.1")
        self.address = port.getHost()
        self.addCleanup(self.old.stopAll)
        self.key = self.old.listeners[0].key

    def generation(self, registry, tracker, number: int) -> SimpleNamespace:
        return SimpleNamespace(
            registry=registry,
            tracker=tracker,
            number=number,
            events=Events(),
            drainTimeout=10.0,
            state=State.SERVING,
        )

    def newWorker(self, name: str):
        """A registry on the same socket, not accepting, and its worker's links."""
        tracker = ConnectionTracker()
        inherited = InheritedListener(
            os.dup(self.old.listeners[0].port.fileno()), self.key, "AF_INET"
        )
        registry = ListenerRegistry(reactor, [inherited], factoryHook=tracker.track, paused=True)
        registry.standIn.listenTCP(0, Site(Who(name), timeout=None), interface="127.0.0.1")
        self.addCleanup(registry.releaseAll)
        process = LinkedProcess(self)
        links = WorkerLinks(reactor, self.generation(registry, tracker, 2), process.theirs)
        self.addCleanup(links.channel.close)
        return SimpleNamespace(index=int(name[-1]), toldGo=True, process=process, links=links)

    def client(self) -> socket.socket:
        skt = socket.create_connection((self.address.host, self.address.port), timeout=10)
        self.addCleanup(skt.close)
        return skt

    @inlineCallbacks
    def ask(self, skt: socket.socket) -> bytes:
        skt.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _, body = yield deferToThread(readResponse, skt)
        return body

    @inlineCallbacks
    def test_idleConnectionsAreDealtToEveryNewWorker(self):
        """
        Four idle keep-alive connections of one old worker: two move to each
        new worker, the clients see nothing, and each next request is
        answered by the new worker that holds the connection.
        """
        clients = [self.client() for _ in range(4)]
        for skt in clients:
            self.assertEqual((yield self.ask(skt)), b"old /")
        new = [self.newWorker("new0"), self.newWorker("new1")]
        oldWorker = worker(self, 0)
        oldLinks = WorkerLinks(
            reactor, self.generation(self.old, self.tracker, 1), oldWorker.process.theirs
        )
        self.addCleanup(oldLinks.channel.close)
        ours, theirs = transferPair()
        incoming = IncomingChannels(reactor, Pool(new), theirs, 1)
        self.addCleanup(incoming.close)
        yield ChannelHandout(reactor, Pool([oldWorker]), ours).start()

        moves = oldLinks.moves()
        moved = yield moves.start()
        self.assertEqual(moved, 4)
        self.assertEqual(self.tracker.open(), [])
        yield until(
            lambda: sum(r.adopted for w in new for r in w.links.receivers) == 4, "adoptions"
        )
        self.assertEqual([sum(r.adopted for r in w.links.receivers) for w in new], [2, 2])
        self.assertFalse(any(w.links.arriving() for w in new))
        answers = []
        for skt in clients:
            self.assertTrue(nothingArrived(skt))
            answers.append((yield self.ask(skt)))
        self.assertEqual(sorted(answers), [b"new0 /", b"new0 /", b"new1 /", b"new1 /"])

    @inlineCallbacks
    def test_aStoppingWorkerTakesNoConnection(self):
        """
        A new worker on its way out closes the channel it is handed: the old
        worker's mover gives up and its connection stays there, served.
        """
        skt = self.client()
        yield self.ask(skt)
        new = self.newWorker("new0")
        new.links._generation.state = State.STOPPING
        oldWorker = worker(self, 0)
        oldLinks = WorkerLinks(
            reactor, self.generation(self.old, self.tracker, 1), oldWorker.process.theirs
        )
        self.addCleanup(oldLinks.channel.close)
        ours, theirs = transferPair()
        incoming = IncomingChannels(reactor, Pool([new]), theirs, 1)
        self.addCleanup(incoming.close)
        yield ChannelHandout(reactor, Pool([oldWorker]), ours).start()
        moved = yield oldLinks.moves().start()
        self.assertEqual((moved, new.links.receivers), (0, []))
        self.assertEqual((yield self.ask(skt)), b"old /")

    @inlineCallbacks
    def test_withoutChannelsNothingMovesAndNothingIsClaimed(self):
        """An old worker handed no channel: its drain has everything, at once."""
        skt = self.client()
        yield self.ask(skt)
        oldWorker = worker(self, 0)
        oldLinks = WorkerLinks(
            reactor, self.generation(self.old, self.tracker, 1), oldWorker.process.theirs
        )
        self.addCleanup(oldLinks.channel.close)
        moves = oldLinks.moves()
        self.assertFalse(any(moves.claimed(p) for p in self.tracker.open()))
        self.assertEqual((yield moves.start()), 0)


class DrainingPool(Pool):
    """A pool as the old leader's drain drives it: drain, undrain, and the moves reported."""

    def __init__(self, testCase, workers: list) -> None:
        super().__init__(workers)
        self._testCase = testCase
        self.channelsAtDrain: list[int] = []
        self.phase = "serving"
        self.drains: list[Deferred] = []
        self.undrained = 0
        self.onMoved = lambda worker: None
        for w in workers:
            w.moveReport = None
            w.drained = False

    def drain(self) -> Deferred:
        self.channelsAtDrain = [len(received(self._testCase, w.process)) for w in self.live()]
        self.drains.append(Deferred())
        return self.drains[-1]

    def undrain(self) -> None:
        self.undrained += 1

    def moved(self, worker, moved: int, **fields) -> None:
        worker.moveReport = {"moved": moved, "stayed": {}, "ms": 3, "final": True, **fields}
        self.onMoved(worker)


class LeaderDrainTests(TestCase):
    """The old leader: its workers drain once they have their channels, and report as one."""

    timeout = 20

    def setUp(self) -> None:
        self.ours, self.theirs = transferPair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.events = Events()
        self.reports = []
        self.events.subscribe(
            lambda name, fields: self.reports.append(fields) if name == "connections-moved" else 0
        )
        self.generation = SimpleNamespace(
            tracker=ConnectionTracker(), drainTimeout=10.0, events=self.events
        )

    def drain(self, old: DrainingPool, newWorkers: int) -> LeaderDrain:
        incoming = IncomingChannels(
            reactor, Pool([worker(self, i) for i in range(newWorkers)]), self.theirs, 1
        )
        self.addCleanup(incoming.close)
        return LeaderDrain(reactor, self.generation, old, self.ours)

    @inlineCallbacks
    def test_workersDrainOnceTheirChannelsAreSentAndReportAsOne(self):
        """
        The workers are told to drain only once their channels are on their
        way; their moves are reported as one event, once both have reported.
        """
        old = DrainingPool(self, [worker(self, 0), worker(self, 1)])
        drain = self.drain(old, 2)
        self.assertTrue(drain.moving)
        done = drain.start()
        yield until(lambda: old.drains, "the workers told to drain")
        self.assertEqual(old.channelsAtDrain, [2, 2])
        first, second = old.live()
        old.moved(first, 5, stayed={"2 TLS": 1}, waiting=1, final=False)
        self.assertEqual(self.reports, [])
        old.moved(second, 4)
        self.assertEqual(
            self.reports,
            [
                {
                    "moved": 9,
                    "movedKinds": {},
                    "stayed": {"2 TLS": 1},
                    "failure": None,
                    "ms": 3,
                    "final": False,
                    "waiting": 1,
                    "arriving": False,
                }
            ],
        )
        old.moved(second, 6)
        old.drains[0].callback(0)
        self.assertEqual((yield done), 0)
        self.assertEqual(len(self.reports), 1)

    @inlineCallbacks
    def test_aWorkerThatEndsWithoutReportingDoesNotHoldTheReportBack(self):
        """One worker reports, the other drains (or dies) without a word: the report comes."""
        old = DrainingPool(self, [worker(self, 0), worker(self, 1)])
        done = self.drain(old, 1).start()
        yield until(lambda: old.drains, "the workers told to drain")
        old.moved(old.live()[0], 3)
        self.assertEqual(self.reports, [])
        old.drains[0].callback(0)
        yield done
        self.assertEqual([r["moved"] for r in self.reports], [3])

    @inlineCallbacks
    def test_aSuccessorWithoutWorkersStillGetsAReport(self):
        """Nothing can move (one process next): the workers drain, and zero moved is reported."""
        old = DrainingPool(self, [worker(self, 0)])
        self.theirs.close()
        done = LeaderDrain(reactor, self.generation, old, self.ours).start()
        yield until(lambda: old.drains, "the workers told to drain")
        self.assertEqual([r["moved"] for r in self.reports], [0])
        old.drains[0].callback(0)
        yield done

    @inlineCallbacks
    def test_calledOffBeforeTheChannelsAreOutTheWorkersNeverDrain(self):
        """The successor died during the handout: the workers are told to serve on, not to drain."""
        old = DrainingPool(self, [worker(self, 0)])
        drain = LeaderDrain(reactor, self.generation, old, self.ours)
        drain.start()  # the successor has not said how many workers it has yet
        drain.cancel()
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((old.drains, old.undrained, self.reports), ([], 1, []))


class DealingTests(TestCase):
    def test_eachOldWorkerBeginsWithAnotherNewWorker(self):
        """
        Three connections over two new workers: worker 0 of the old generation
        deals 2 and 1, worker 1 deals 1 and 2, so the odd ones out do not pile up.
        """

        class Tracker:
            def __init__(self) -> None:
                self.protocols = [Who(str(i)) for i in range(3)]

            def open(self) -> list:
                return self.protocols

        counts = []
        for first in (0, 1):
            shares = _Shares(Tracker(), 2, first)
            counts.append([len(shares.share(i).open()) for i in range(2)])
        self.assertEqual(counts, [[2, 1], [1, 2]])
