"""
Reconnects per restart for WebSocket clients: txflip moving them (the echo's
protocol provides IMovable) against closing them with 1012, as before.

N WebSocket clients (the websockets library) talk to an Autobahn echo server
(tests/support/movablews.py) through a proxy that delays each direction by
20 ms, each sending a message every 0.5-1.5 s and reconnecting whenever its
connection closes, while twistd flip is restarted R times, S seconds apart.

    python benchmarks/websocket_restarts.py [--clients 200] [--restarts 3] [--seconds-between 2.5]

Prints one row per server: messages answered, close frames received,
messages lost (sent, never answered), and reconnects per restart. Loopback
only; run by hand, not a test. Every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.support.delayproxy import DelayProxy  # noqa: E402
from tests.support.procs import Flip, freePort, waitFor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAPS = (0.5, 1.5)


class Talker(threading.Thread):
    """Says a message every 0.5-1.5 s; reconnects whenever its connection closes."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = stop
        self.counts: Counter = Counter()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with connect(self.url, open_timeout=10, close_timeout=5) as ws:
                    self.counts["connections"] += 1
                    while not self.stopping.is_set():
                        time.sleep(random.uniform(*GAPS))
                        ws.send("m")
                        self.counts["sent"] += 1
                        ws.recv(timeout=10)
                        self.counts["answered"] += 1
            except ConnectionClosed as e:
                if e.rcvd is not None:
                    self.counts["closeFrames"] += 1
            except Exception:
                self.counts["errors"] += 1
                time.sleep(0.1)


class Cleanups:
    """Stands in for a test case: runs what Flip registers, at the end."""

    def __init__(self) -> None:
        self.calls = []

    def addCleanup(self, function, *args) -> None:
        self.calls.append((function, args))

    def run(self) -> None:
        for function, args in reversed(self.calls):
            function(*args)


def run(app: str, clients: int, restarts: int, between: float) -> Counter:
    port = freePort()
    cleanups = Cleanups()
    flip = Flip(
        cleanups,
        ["--app", f"tests.support.movablews.{app}", "--listen", f"tcp:{port}:interface=127.0.0.1"],
        workdir=tempfile.mkdtemp(prefix="txflip-bench-"),
        env={"PYTHONPATH": ROOT},
    )
    stop = threading.Event()
    talkers = []
    try:
        flip.start()
        with DelayProxy(("127.0.0.1", port), 0.02) as proxy:
            talkers = [Talker(f"ws://127.0.0.1:{proxy.port}/", stop) for _ in range(clients)]
            for talker in talkers:
                talker.start()
            waitFor(lambda: all(t.counts["answered"] for t in talkers), "every client talking", 120)
            for _ in range(restarts):
                started = time.monotonic()
                flip.restart(deadline=120)
                time.sleep(max(0.0, between - (time.monotonic() - started)))
            time.sleep(between)
            stop.set()
            for talker in talkers:
                talker.join(timeout=30)
    finally:
        stop.set()
        cleanups.run()
    total = Counter()
    for talker in talkers:
        total.update(talker.counts)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--seconds-between", type=float, default=2.5)
    args = parser.parse_args()
    rows = []
    for name, app in (("txflip, IMovable", "factory"), ("1012 (no IMovable)", "unmovable")):
        counts = run(app, args.clients, args.restarts, args.seconds_between)
        reconnects = counts["connections"] - args.clients
        rows.append(
            (
                name,
                counts["answered"],
                counts["closeFrames"],
                counts["sent"] - counts["answered"],
                f"{reconnects / args.restarts:.1f}",
            )
        )
    header = ("server", "answered", "close frames", "lost", "reconnects/restart")
    print(f"{args.clients} WebSocket clients, {args.restarts} restarts, 20 ms each way")
    for row in (header, *rows):
        print(" | ".join(f"{cell!s:>18}" for cell in row))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
