"""
A DNS client for restart tests: twisted.names queries, alternately over UDP and
TCP, counting answers and failures.
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.names import client, dns

NAME = b"www.example.test"
ADDRESS = "10.0.0.80"  # its address in L{tests.support.anyapps.ZONE}


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
