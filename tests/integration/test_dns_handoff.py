"""
twisted.names' own `dns` plugin under flip, UDP and TCP on one port, through
restarts while a real DNS client (twisted.names.client) queries both: no query
is lost, since the UDP socket is handed over like the TCP one and datagrams
that arrive during the handoff wait in its buffer for the new generation.
"""

from __future__ import annotations

import tempfile

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.anyapps import ZONE, writeFile
from tests.support.dnsqueries import DNSQueries
from tests.support.procs import Flip, freePort, waitUntil

RESTARTS = 5


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
