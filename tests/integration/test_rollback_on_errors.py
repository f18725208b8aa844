"""
C{--rollback-on-5xx}: a release whose every response is 500, under load, is
rolled back by itself within the window: the site answers 200 from the
previous PID again within two seconds of the handover, C{txflip reload}
exits non-zero saying so, and the metrics count the rollback.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time

from twisted.python.log import msg
from twisted.trial.unittest import TestCase

from tests.integration.test_metrics_across_restarts import scrape
from tests.support.apps import GOOD_RESOURCE, releaseFlip, writeApp
from tests.support.load import Load
from tests.support.procs import freePort, pidAlive, txflip, waitFor

ALWAYS_500 = """
import os
from twisted.web.resource import Resource

class Broken(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setResponseCode(500)
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"release %(release)s is broken"

resource = Broken()
"""


def answeredAfterErrors(seen: list[tuple[float, int, int]]) -> bool:
    """Whether a 200 came after the first 500."""
    errors = [at for at, status, _ in seen if status == 500]
    return bool(errors) and any(at > errors[0] and status == 200 for at, status, _ in seen)


class Prober(threading.Thread):
    """GET / every few milliseconds: (time, status, PID that answered), until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.seen: list[tuple[float, int, int]] = []

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                pid = int(response.getheader("x-served-by", "0"))
                self.seen.append((time.monotonic(), response.status, pid))
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.005)


class RollbackOnServerErrorsTests(TestCase):
    def test_aReleaseThatAnswers500IsRolledBack(self):
        metricsPort = freePort()
        flip, port, workdir = releaseFlip(
            self,
            "--rollback-window",
            "20",
            "--rollback-on-5xx",
            "0.5",
            "--metrics",
            f"tcp:{metricsPort}:interface=127.0.0.1",
        )
        first = flip.start()
        writeApp(workdir, "myrelease", ALWAYS_500, release="2")
        prober = Prober(port)
        prober.start()
        self.addCleanup(prober.stopping.set)
        with Load("127.0.0.1", port, kinds=("newConnection",), path="/"):
            waitFor(lambda: len(prober.seen) > 10, "the prober to get going")
            reload = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from txflip.control.client import main; sys.exit(main())",
                    "reload",
                    "--pid-file",
                    flip.pidFile,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            msg(f"txflip reload: {reload.returncode}\n{reload.stdout}{reload.stderr}")
            waitFor(lambda: answeredAfterErrors(prober.seen), "a 200 after the 500s")
            prober.stopping.set()
            prober.join(30)
        self.assertEqual(reload.returncode, 1, reload.stdout + reload.stderr)
        self.assertIn("--rollback-on-5xx", reload.stdout)
        self.assertIn(f"generation 1 (PID {first}) serves again", reload.stdout)
        self.assertEqual(flip.pid(), first)

        errors = [(at, pid) for at, status, pid in prober.seen if status == 500]
        self.assertTrue(errors, "the broken release answered nothing")
        broken = errors[0][1]
        handover = errors[0][0]
        backAt = next(at for at, status, pid in prober.seen if at > handover and status == 200)
        msg(f"200 from PID {first} again {backAt - handover:.3f}s after the first 500")
        self.assertLess(backAt - handover, 2.0)
        self.assertEqual(
            {pid for at, status, pid in prober.seen if status == 200 and at >= backAt}, {first}
        )
        waitFor(lambda: not pidAlive(broken), "the rolled-back release to exit")
        self.assertRegex(
            flip.log(),
            rf"release PID {broken} \(generation 2\): \d+ of \d+ responses were 5xx",
        )
        samples = scrape(metricsPort)
        self.assertEqual(samples[("txflip_restarts_total", (("outcome", "rolled_back"),))], 1)
        self.assertEqual(samples[("txflip_generation", ())], 1)

    def test_aGoodReleaseIsWatchedThroughTheWindow(self):
        """C{txflip reload} waits for the end of the window, then says done and exits 0."""
        flip, port, workdir = releaseFlip(
            self, "--rollback-window", "2", "--rollback-on-5xx", "0.5"
        )
        first = flip.start()
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="2")
        started = time.monotonic()
        reload = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(reload.returncode, 0, reload.stdout + reload.stderr)
        self.assertGreaterEqual(time.monotonic() - started, 2.0)
        self.assertIn("watching: generation 2", reload.stdout)
        self.assertTrue(reload.stdout.splitlines()[-1].startswith("done: generation 2"))
        self.assertNotEqual(flip.pid(), first)
        waitFor(lambda: not pidAlive(first), "the previous generation to exit")
