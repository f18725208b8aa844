"""
twisted.names' own `dns` plugin under flip, UDP and TCP on one port, through
restarts while a real DNS client (twisted.names.client) queries both: no query
is lost, since the UDP socket is handed over like the TCP one and datagrams
that arrive during the handoff wait in its buffer for the new generation.
"""

from __future__ import annotations

import tempfile

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.names import client, dns
from twisted.trial.unittest import TestCase

from tests.support.anyapps import ZONE, writeFile
from tests.support.procs import Flip, freePort

RESTARTS = 5
NAME = b"www.example.test"
ADDRESS = "10.0.0.80"


class DNSQueries:
    """
    Queries every C{interval} seconds, alternately over UDP (one try: a lost
    datagram is a failure) and over TCP (a new connection, closed after the
    answer, as stub resolvers do).
    """

    def __init__(self, port: int, interval: float = 0.02) -> None:
        self._server = ("127.0.0.1", port)
        self.answered = {"udp": 0, "tcp": 0}
        self.failures: list[str] = []
        self._outstanding: set[defer.Deferred] = set()
        self._tcpResolvers: list[client.Resolver] = []
        self._udp = client.Resolver(servers=[self._server])
        self._turn = 0
        self._loop = task.LoopingCall(self._query)
        self._loop.start(interval)

    def _query(self) -> None:
        self._turn += 1
        query = [dns.Query(NAME, dns.A)]
        if self._turn % 2:
            how, d = "udp", self._udp.queryUDP(query, timeout=(5,))
        else:
            resolver = client.Resolver(servers=[self._server])
            self._tcpResolvers.append(resolver)
            how, d = "tcp", resolver.queryTCP(query, timeout=5)
            d.addBoth(self._closeTCP, resolver)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(how,), errbackArgs=(how,))
        self._outstanding.add(d)
        d.addBoth(lambda _: self._outstanding.discard(d))

    def _closeTCP(self, result, resolver):
        for connection in resolver.connections:
            connection.transport.loseConnection()
        return result

    def _answered(self, message, how: str) -> None:
        addresses = [a.payload.dottedQuad() for a in message.answers if a.type == dns.A]
        if addresses != [ADDRESS]:
            self.failures.append(f"{how}: answer {addresses}")
        self.answered[how] += 1

    def _failed(self, failure, how: str) -> None:
        self.failures.append(f"{how}: {failure.value!r}")

    def total(self) -> int:
        return sum(self.answered.values())

    @defer.inlineCallbacks
    def stop(self):
        self._loop.stop()
        yield defer.DeferredList(list(self._outstanding))
        while any(r.connections for r in self._tcpResolvers):
            yield task.deferLater(reactor, 0.05, lambda: None)


def waitUntil(condition, what: str, deadline: float = 60.0) -> defer.Deferred:
    """Poll C{condition} in the reactor until it holds; fail after C{deadline} seconds."""

    @defer.inlineCallbacks
    def poll():
        end = reactor.seconds() + deadline
        while not condition():
            if reactor.seconds() > end:
                raise AssertionError(f"gave up after {deadline}s waiting for {what}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    return poll()


class DNSHandoffTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_udpAndTCPQueriesThroughRestarts(self):
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        zone = writeFile(workdir, "example.test.zone", ZONE)
        port = freePort()
        flip = Flip(
            self,
            ["dns", "--interface", "127.0.0.1", "--port", str(port), "--bindzone", zone],
            workdir=workdir,
        )
        yield deferToThread(flip.start)
        self.assertIn(f"listening on udp:127.0.0.1:{port}", flip.log())
        queries = DNSQueries(port)
        try:
            yield waitUntil(lambda: queries.total() > 20, "answers from the first generation")
            for _ in range(RESTARTS):
                before = dict(queries.answered)
                yield deferToThread(flip.restart)
                yield waitUntil(
                    lambda b=before: all(queries.answered[k] > b[k] + 5 for k in b),
                    "UDP and TCP answers from the new generation",
                )
        finally:
            yield queries.stop()
        self.assertEqual(queries.failures, [])
        self.assertEqual(
            flip.log().count(f"adopted inherited listener udp:127.0.0.1:{port}"), RESTARTS
        )
