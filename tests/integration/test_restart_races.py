"""
Restarts that follow each other closely: a second restart while idle
connections are still moving to the first one's generation, a SIGHUP to a
PID the moment the PID file names it, and C{txflip reload} with a request in
flight that outlasts its timeout.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
from collections import Counter

from twisted.trial.unittest import TestCase

from tests.support.apps import HOLDS_UNTIL_RELEASED, appEnv, releaseFlip, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.idleconnections import IdleConnections, allowOpenFiles
from tests.support.pidwatch import PidFileWatch
from tests.support.procs import Flip, freePort, pidAlive, servedBy, txflip, waitFor


def answeredBy(connection: http.client.HTTPConnection, path: str | None = None) -> str:
    """
    Who answers (C{X-Served-By}) C{path} on C{connection}, or the request
    sent already; or how that failed. The connection stays open.
    """
    try:
        if path is not None:
            connection.request("GET", path)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    if response.will_close:
        return "Connection: close"
    return response.getheader("X-Served-By", "?")


class MovingConnectionsTests(TestCase):
    def restartTwiceWhileMoving(self, count: int, proxied: bool) -> None:
        """
        C{count} idle keep-alive connections and one busy with a request held
        until the test releases it; SIGHUP, then restart the new generation
        0.3 s after the PID file names it (SIGHUP, or txflip reload behind the
        proxy): generation 3 serves while generation 1 still moves connections
        to generation 2 (the busy one, at least, once answered). Once both old
        generations have exited, every connection's next request is answered
        by generation 3.
        """
        allowOpenFiles(3 * count + 200)  # clients, and the proxy's two ends of each
        port = freePort()
        listen = ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        # Moving thousands of connections on a loaded machine may take long: not the point here.
        flip = Flip(self, ["--app", "holding.app", *listen, "--drain-timeout", "120"])
        writeApp(flip.workdir, "holding", HOLDS_UNTIL_RELEASED)
        flip.env.update(appEnv(flip.workdir))
        first = flip.start()
        watch = PidFileWatch(self, flip)
        address = ("127.0.0.1", port)
        if proxied:
            proxy = DelayProxy(address, delay=0.02).start()
            self.addCleanup(proxy.stop)
            address = proxy.address
        idle = IdleConnections(address, count)
        self.addCleanup(idle.close)
        self.assertEqual(idle.open(), Counter({str(first): count}))
        busy = http.client.HTTPConnection(*address, timeout=60)
        busy.connect()
        busy.auto_open = False  # never a second connection
        self.addCleanup(busy.close)
        busy.request("GET", "/hold")
        flip.waitLog(f"holding a request (PID {first})")

        os.kill(first, signal.SIGHUP)
        second = watch.nextPid(first)
        time.sleep(0.3)  # the scenario: a second restart right after the first
        if proxied:  # the second restart by txflip reload, which must not claim it is over
            result = txflip("reload", "--pid-file", flip.pidFile)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("connections still arriving from generation 1 move on", result.stdout)
        else:
            os.kill(second, signal.SIGHUP)
        third = watch.nextPid(second)
        flip.waitServing(third)
        # Generation 1 answers the busy connection only now: it cannot have finished moving.
        open(os.path.join(flip.workdir, "released"), "w").close()
        busyAnswer = answeredBy(busy)
        waitFor(lambda: not (pidAlive(first) or pidAlive(second)), "both old generations to exit")

        answers = idle.askAll()
        answers[answeredBy(busy, "/")] += 1
        self.assertEqual(answers, Counter({str(third): count + 1}))
        self.assertEqual(busyAnswer, str(first))
        log = flip.log()
        self.assertEqual(re.findall(r"gave up moving.*", log), [])
        # Generation 2 counts every connection it moved on, however late it came.
        drained = re.findall(rf"pid {second}\] drained in .*: (\d+) connection\(s\) moved", log)
        self.assertEqual(drained, [str(count + 1)])

    def test_secondRestartWhileConnectionsMove(self):
        """2,000 idle connections on loopback."""
        self.restartTwiceWhileMoving(2000, proxied=False)

    def test_secondRestartWhileConnectionsMoveBehindDelay(self):
        """300 idle connections through a proxy delaying each direction by 20 ms."""
        self.restartTwiceWhileMoving(300, proxied=True)


class SighupAtOnceTests(TestCase):
    def test_sighupTheMomentThePidFileNamesIt(self):
        """
        Twenty times over, SIGHUP the PID the moment the PID file names it
        (before that generation may say it serves): twenty restarts, none refused.
        """
        flip = releaseFlip(self)[0]
        watch = PidFileWatch(self, flip)
        flip.start(waitReady=False)
        pid = None
        for _ in range(20):
            pid = watch.nextPid(pid)
            os.kill(pid, signal.SIGHUP)
        last = watch.nextPid(pid)
        flip.waitServing(last)
        self.assertEqual(re.findall(r"SIGHUP refused.*", flip.log()), [])
        self.assertEqual(re.findall(rf"gen (\d+) pid {last}\] serving", flip.log()), ["21"])
        waitFor(lambda: flip.aliveGenerations() == [last], "only generation 21 to be left")


class ReloadWithRequestInFlightTests(TestCase):
    def test_reloadEndsWhenTheNewReleaseServes(self):
        """
        C{txflip reload --timeout 5} with a 12 s request in flight on a
        keep-alive connection (and a 60 s drain timeout) exits 0 within 5 s,
        once generation 2 serves; the request is still answered, by generation 1.
        """
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1", "--drain-timeout", "60"])
        old = flip.start()
        slow = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.addCleanup(slow.close)
        slow.request("GET", "/sleep?seconds=12")
        flip.waitLog(f"sleeping 12.0s for a request (PID {old})")

        started = time.monotonic()
        result = txflip("reload", "--pid-file", flip.pidFile, "--timeout", "5")
        took = time.monotonic() - started
        new = flip.pid()
        self.assertEqual(
            (result.returncode, result.stdout.splitlines()[-1:]),
            (0, [f"done: generation 2 (PID {new}) serves"]),
            result.stdout + result.stderr,
        )
        self.assertLess(took, 5)
        self.assertIn(
            "1 busy connection(s) move or close once their request is answered", result.stdout
        )
        self.assertEqual(servedBy(port), new)
        self.assertEqual(answeredBy(slow), str(old))
