"""
C{txflip rollback}: within C{--rollback-window} after a restart, the previous
generation takes the traffic back (it accepts again and the PID file names it
again; the newer one drains and exits) without a failed request; outside the
window the command says why not, in one line.
"""

from __future__ import annotations

import os
import re
import signal

from twisted.trial.unittest import TestCase

from tests.integration.test_metrics_across_restarts import scrape
from tests.support.keepalive import acknowledgedSoFar, startPosters, stopPosters
from tests.support.load import Load
from tests.support.procs import Flip, freePort, pidAlive, servedBy, txflip, waitFor

POSTERS = 6


class RollbackByHandTests(TestCase):
    def flip(self, window: str, *extra: str) -> tuple[Flip, int]:
        port = freePort()
        flip = Flip(
            self,
            ["--listen", f"tcp:{port}:interface=127.0.0.1", "--rollback-window", window, *extra],
        )
        return flip, port

    def test_rollbackUnderLoad(self):
        metricsPort = freePort()
        flip, port = self.flip("30", "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1")
        first = flip.start()
        kinds = ("newConnection", "keepAliveGet", "keepAlivePost")
        # Keep-alive clients idle between requests: they move to generation 2
        # and back, and none has to reconnect.
        stop, posters = startPosters("127.0.0.1", port, POSTERS)
        self.addCleanup(stop.set)
        with Load("127.0.0.1", port, kinds=kinds) as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            waitFor(lambda: acknowledgedSoFar(posters) >= POSTERS, "every poster's first POST")
            os.kill(first, signal.SIGHUP)
            second = waitFor(lambda: (p := flip.pid()) not in (None, first) and p, "a new PID")
            flip.waitServing(second)
            before, posted = load.totalRequests(), acknowledgedSoFar(posters)
            waitFor(lambda: load.totalRequests() > before + 20, "requests to the new PID")
            waitFor(lambda: acknowledgedSoFar(posters) >= posted + POSTERS, "POSTs to the new PID")
            self.assertTrue(pidAlive(first), "the previous generation waits out its window")
            result = txflip("rollback", "--pid-file", flip.pidFile)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(
                result.stdout.strip(),
                f"rolled back: generation 1 (PID {first}) serves again; "
                f"generation 2 (PID {second}) drains and exits",
            )
            self.assertEqual(flip.pid(), first)
            waitFor(lambda: not pidAlive(second), "the rolled-back generation to exit")
            before = load.totalRequests()
            waitFor(lambda: load.totalRequests() > before + 20, "requests after the rollback")
            posted = acknowledgedSoFar(posters)
            waitFor(lambda: acknowledgedSoFar(posters) >= posted + POSTERS, "POSTs after it")
        stopPosters(stop, posters)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual([f for p in posters for f in p.result.failures], [])
        self.assertEqual([p.result.connections for p in posters], [1] * POSTERS)
        self.assertEqual(
            {pid for p in posters for pid in p.result.servedBy},
            {str(first), str(second)},
        )
        self.assertEqual(servedBy(port), first)
        self.assertEqual(flip.aliveGenerations(), [first])
        self.assertIn("rolled back from generation 2", flip.log())
        movedBack = rf"pid {first}\] adopted [1-9]\d* connection\(s\) from generation 2"
        self.assertTrue(re.search(movedBack, flip.log()), "no connection moved back")
        samples = scrape(metricsPort)
        self.assertEqual(samples[("txflip_restarts_total", (("outcome", "rolled_back"),))], 1)
        self.assertEqual(samples[("txflip_restarts_total", (("outcome", "served"),))], 1)
        self.assertEqual(samples[("txflip_generation", ())], 1)

    def test_outsideTheWindowSaysWhyNot(self):
        flip, port = self.flip("0")
        first = flip.start()
        second = flip.restart()
        result = txflip("rollback", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            "txflip rollback: no previous generation is left to take the traffic back: it "
            "has exited (its rollback window, --rollback-window, is over or was not set)\n",
        )
        self.assertEqual(flip.pid(), second)
        self.assertFalse(pidAlive(first))
        self.assertEqual(servedBy(port), second)
