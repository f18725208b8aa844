"""
How long ACME takes against a local pebble: first issuance per challenge type,
and a restart that serves the stored certificate. Prints a table.

    PYTHONPATH=. python benchmarks/acme_issue.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from tests.support.acmehelpers import Pebble, fetchTLS
from tests.support.procs import Flip, freePort, waitFor

ISSUED = "ACME: now serving the newly issued certificate"


class Cleanups:
    def __init__(self) -> None:
        self.calls = []

    def addCleanup(self, f, *args) -> None:
        self.calls.append((f, args))

    def run(self) -> None:
        for f, args in reversed(self.calls):
            f(*args)
        self.calls.clear()


def oneRound(challenge: str) -> tuple[float, float]:
    """Seconds from flip's start to the issued certificate, and for a restart."""
    c = Cleanups()
    try:
        httpPort, tlsPort = freePort(), freePort()
        pebble = Pebble(c, httpPort, tlsPort).start()
        flip = Flip(
            c,
            [
                "--listen", f"tcp:{httpPort}:interface=127.0.0.1",
                "--acme-listen", f"tcp:{tlsPort}:interface=127.0.0.1",
                "--acme-domain", "a.test,b.test",
                "--acme-dir", tempfile.mkdtemp(prefix="txflip-bench-"),
                "--acme-directory", pebble.directory,
                "--acme-ca-bundle", pebble.caBundle,
                "--acme-challenge", challenge,
            ],
        )  # fmt: skip
        start = time.monotonic()
        flip.start(waitReady=False)
        flip.waitLog(ISSUED, deadline=120)
        issued = time.monotonic() - start
        serial = fetchTLS(tlsPort, "a.test")[2].serial_number
        start = time.monotonic()
        flip.restart()
        waitFor(lambda: fetchTLS(tlsPort, "a.test")[2].serial_number == serial, "same cert")
        restarted = time.monotonic() - start
        assert pebble.log().count("POST /order-plz") == 1
        return issued, restarted
    finally:
        c.run()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"{'challenge':<12} {'rounds':>6} {'issue median s':>15} {'restart median s':>17}")
    for challenge in ("http-01", "tls-alpn-01"):
        results = [oneRound(challenge) for _ in range(rounds)]
        print(
            f"{challenge:<12} {rounds:>6} "
            f"{statistics.median(r[0] for r in results):>15.2f} "
            f"{statistics.median(r[1] for r in results):>17.2f}"
        )


if __name__ == "__main__":
    main()
