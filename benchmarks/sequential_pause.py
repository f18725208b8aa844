"""
The pause of a sequential handover, against an overlapping one, for an app
that must never run twice (the single-writer SQLite app of the tests).

    PYTHONPATH=. python benchmarks/sequential_pause.py [--restarts 5] [--clients 4]

Each mode: the app under `twistd -n flip --handover MODE`, CLIENTS threads each
POSTing on one keep-alive connection, RESTARTS restarts with `txflip reload`.
Prints, per mode: requests, failed (500 from an id collision, or a connection
error), the pause txflip reload reported (sequential only), and the latency of
all requests and of those that waited at a restart (p50, p99, max).

Loopback only; every loop is bounded; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.apps import appEnv, writeApp  # noqa: E402
from tests.support.procs import Flip, freePort, txflip  # noqa: E402
from tests.support.singlewriter import SINGLE_WRITER_APP, Poster  # noqa: E402


class _NoTestCase:
    def __init__(self) -> None:
        self.cleanups = []

    def addCleanup(self, f, *args) -> None:
        self.cleanups.append((f, args))

    def cleanUp(self) -> None:
        for f, args in reversed(self.cleanups):
            f(*args)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(mode: str, restarts: int, clients: int) -> dict:
    workdir = tempfile.mkdtemp(prefix="txflip-bench-")
    port = freePort()
    writeApp(
        workdir,
        "writer",
        SINGLE_WRITER_APP,
        db=os.path.join(workdir, "rows.sqlite3"),
        port=port,
        broken="",
        spared=0,
        release=1,
    )
    case = _NoTestCase()
    flip = Flip(case, ["--app", "writer.makeService", "--handover", mode], workdir, appEnv(workdir))
    posters: list[Poster] = []
    pauses: list[int] = []
    windows: list[tuple[float, float]] = []
    try:
        flip.start()
        posters = [Poster(port, f"c{i}", seconds=30 + 10 * restarts) for i in range(clients)]
        for poster in posters:
            poster.start()
        time.sleep(1.0)
        for _ in range(restarts):
            began = time.monotonic()
            result = txflip("reload", "--pid-file", flip.pidFile, timeout=120)
            windows.append((began, time.monotonic()))
            found = re.search(r"waited at most (\d+) ms", result.stdout)
            if found:
                pauses.append(int(found.group(1)))
            time.sleep(1.0)
    finally:
        for poster in posters:
            poster.stop()
        case.cleanUp()
    latencies = [seconds for p in posters for _, seconds in p.latencies]
    waited = [
        seconds
        for p in posters
        for start, seconds in p.latencies
        if any(a <= start + seconds and start <= b for a, b in windows)
    ]
    return {
        "mode": mode,
        "requests": len(latencies),
        "failed": sum(len(p.failures) + p.refused for p in posters),
        "pause": f"{statistics.median(pauses):.0f} ms (max {max(pauses)})" if pauses else "-",
        "all": latencies,
        "waited": waited,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    rows = [run(mode, args.restarts, args.clients) for mode in ("overlap", "sequential")]
    print(
        f"{'handover':<11} {'requests':>8} {'failed':>6} {'pause (median)':>20} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'waited p50':>10} {'waited p99':>10} {'max ms':>7}"
    )
    for row in rows:
        every, waited = row["all"], row["waited"]
        print(
            f"{row['mode']:<11} {row['requests']:>8} {row['failed']:>6} {row['pause']:>20} "
            f"{percentile(every, 0.5) * 1000:>7.1f} {percentile(every, 0.99) * 1000:>7.1f} "
            f"{percentile(waited, 0.5) * 1000:>10.1f} {percentile(waited, 0.99) * 1000:>10.1f} "
            f"{max(every, default=0) * 1000:>7.1f}"
        )


if __name__ == "__main__":
    main()
