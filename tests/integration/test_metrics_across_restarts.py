"""
C{--metrics}: /metrics answers throughout restarts, from whichever generation
serves, and its counters carry over from each generation to the next.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.support.apps import GOOD_RESOURCE, RAISES_AT_IMPORT, releaseFlip, writeApp
from tests.support.procs import freePort, waitFor


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Scraper(threading.Thread):
    """Scrapes until stopped: every scrape must answer, and no counter may go down."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.scrapes = 0
        self.errors: list[str] = []
        self.decreases: list[str] = []

    def run(self) -> None:
        last: dict = {}
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                samples = scrape(self.port)
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                continue
            self.scrapes += 1
            for key, value in samples.items():
                if key[0].startswith("txflip_") and value < last.get(key, 0):
                    self.decreases.append(f"{key}: {last[key]} -> {value}")
            last = samples
            time.sleep(0.02)


class MetricsAcrossRestartsTests(TestCase):
    def test_threeRestartsAndABrokenRelease(self):
        metricsPort = freePort()
        flip, port, workdir = releaseFlip(
            self, "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"
        )
        flip.start()
        first = scrape(metricsPort)
        self.assertEqual(first[("txflip_generation", ())], 1)
        self.assertEqual(first[("txflip_restarts_total", (("outcome", "served"),))], 0)
        self.assertIn(("process_open_fds", ()), first)
        scraper = Scraper(metricsPort)
        scraper.start()
        self.addCleanup(scraper.stopping.set)
        for release in ("2", "3"):
            writeApp(workdir, "myrelease", GOOD_RESOURCE, release=release)
            flip.restart()
        writeApp(workdir, "myrelease", RAISES_AT_IMPORT, release="4")
        serving = flip.pid()
        os.kill(serving, signal.SIGHUP)
        flip.waitLog("keeps serving")
        waitFor(lambda: flip.aliveGenerations() == [serving], "the broken child to be gone")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="5")
        last = flip.restart()
        # The last handover's drain is counted once the old generation has exited.
        waitFor(
            lambda: scrape(metricsPort)[("txflip_drain_seconds_count", ())] == 3,
            "the third drain to be carried over",
        )
        scraper.stopping.set()
        scraper.join(30)
        samples = scrape(metricsPort)
        self.assertEqual(scraper.errors, [])
        self.assertGreater(scraper.scrapes, 10)
        self.assertEqual(scraper.decreases, [])
        restarts = {
            outcome: samples[("txflip_restarts_total", (("outcome", outcome),))]
            for outcome in ("served", "failed", "rolled_back")
        }
        self.assertEqual(restarts, {"served": 3, "failed": 1, "rolled_back": 0})
        self.assertEqual(samples[("txflip_generation", ())], 4)
        self.assertEqual(samples[("txflip_handoff_seconds_count", ())], 3)
        self.assertGreater(samples[("txflip_handoff_seconds_sum", ())], 0)
        self.assertEqual(samples[("txflip_handoff_seconds_bucket", (("le", "+Inf"),))], 3)
        self.assertIn(("txflip_connections_moved_total", ()), samples)
        self.assertEqual(samples[("process_start_time_seconds", ())], processStart(last))


def processStart(pid: int) -> float:
    """When C{pid} started, as prometheus_client's process collector reads it."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().split(")")[-1].split()[19])
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class MetricsWithWorkersTests(TestCase):
    def test_theLeaderServesOneEndpoint(self):
        """With --workers, the leader answers /metrics for its generation, across a restart."""
        metricsPort = freePort()
        flip, port, workdir = releaseFlip(
            self, "--workers", "2", "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"
        )
        first = flip.start()
        before = scrape(metricsPort)
        self.assertEqual(before[("process_start_time_seconds", ())], processStart(first))
        second = flip.restart()
        after = scrape(metricsPort)
        self.assertEqual(after[("process_start_time_seconds", ())], processStart(second))
        self.assertEqual(after[("txflip_generation", ())], 2)
        self.assertEqual(after[("txflip_restarts_total", (("outcome", "served"),))], 1)
