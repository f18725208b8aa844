"""
A successor that misbehaves right after it took over, or right after it said
ready, never costs the site a connection: the old generation keeps its sockets
while it drains, takes the traffic back from a successor that dies, and accepts
until the successor demonstrably serves.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time

from twisted.trial.unittest import TestCase

from tests.support.apps import SERVED_BY_RELEASE, appEnv, writeApp
from tests.support.load import Load
from tests.support.procs import Flip, freePort, pidAlive, readPidFile, servedBy, waitFor

RELEASE = (
    SERVED_BY_RELEASE
    + """
import signal


if %(stopsAfterReady)s:
    # Ready, then frozen before it can take over: SIGSTOP, as a reactor
    # blocked by a slow disk or by the app would look from outside.
    generation = txflip.current()
    generation.expectReady()

    def ready():
        # Called from a timed call: "ready" goes out in this reactor turn's
        # I/O, and the stop comes first thing in the next, before "go" is read.
        generation.ready()
        reactor.callLater(0, os.kill, os.getpid(), signal.SIGSTOP)

    reactor.callWhenRunning(reactor.callLater, 0.2, ready)
"""
)


def slowest(load: Load) -> float:
    return max((seconds for r in load.results() for _, seconds in r.latencies), default=0.0)


class TakingTrafficBackTests(TestCase):
    def startRelease(self, *extra: str) -> tuple[Flip, int, str]:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "release", RELEASE, release="1", stopsAfterReady=False)
        flip = Flip(
            self,
            ["--app", "release.resource", "--listen", f"tcp:{port}:interface=127.0.0.1", *extra],
            workdir=workdir,
            env=appEnv(workdir),
        )
        return flip, port, workdir

    def test_successorKilledRightAfterTakeover(self) -> None:
        """
        SIGKILL to the new generation 0.3 s after it took over, under new-connection
        load: nothing refused, every probe answered within 2 s (but those the
        killed process had accepted, which die with it), and the PID file names
        a live process again within 1.5 s.
        """
        flip, port, _ = self.startRelease()
        old = flip.start()
        with Load("127.0.0.1", port, kinds=("newConnection",) * 4, path="/") as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            os.kill(old, signal.SIGHUP)
            new = waitFor(lambda: (p := flip.pid()) != old and p, "the new generation")
            flip.waitServing(new)
            time.sleep(0.3)  # the fault under test: a crash 0.3 s into its service
            os.kill(new, signal.SIGKILL)
            killedAt = time.monotonic()
            waitFor(
                lambda: readPidFile(flip.pidFile) == old,
                "the PID file to name the old PID again",
                longestPause=0.01,  # timed: seen as soon as it is so
            )
            self.assertLess(time.monotonic() - killedAt, 1.5)
            flip.waitLog(f"(PID {new}) was killed by signal 9 after taking over")
            before = load.totalRequests()
            waitFor(lambda: load.totalRequests() > before + 50, "requests after the crash")
        # The killed process's own accepted connections are reset; nothing is refused.
        failures = load.failures()
        self.assertNotIn("ConnectionRefusedError", failures, load.failureReport())
        self.assertLessEqual(sum(failures.values()), 4, load.failureReport())
        self.assertLess(slowest(load), 2.0)
        self.assertIn(f"[txflip gen 1 pid {old}] generation 2 (PID {new}) was killed", flip.log())
        self.assertEqual(servedBy(port, path="/"), old)
        # A later SIGHUP works as usual.
        third = flip.restart()
        self.assertEqual(flip.aliveGenerations(), [third])

    def test_successorFrozenAfterReady(self) -> None:
        """
        A successor SIGSTOPped right after it says ready, before it can take
        over: no failure, no probe over 1 s; at the ready timeout it is killed.
        """
        flip, port, workdir = self.startRelease("--ready-timeout", "8")
        old = flip.start()
        writeApp(workdir, "release", RELEASE, release="2", stopsAfterReady=True)
        kinds = ("newConnection", "newConnection", "keepAliveGet")
        with Load("127.0.0.1", port, kinds=kinds, path="/") as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            os.kill(old, signal.SIGHUP)
            flip.waitLog("is ready after")
            flip.waitLog("was not serving within the ready timeout of 8s")
            before = load.totalRequests()
            waitFor(lambda: load.totalRequests() > before + 50, "requests after the timeout")
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertLess(slowest(load), 1.0)
        self.assertEqual(readPidFile(flip.pidFile), old)
        self.assertTrue(pidAlive(old))
        waitFor(lambda: flip.aliveGenerations() == [old], "the frozen release to be killed")
