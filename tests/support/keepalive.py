"""
Keep-alive POST clients that never retry, for restart tests and the benchmark.

Each client holds one urllib3 pool of one connection with retries off, POSTs
a unique message to the demo guestbook, then stays idle for a while (gaps
around the drain's one-second idle grace), until told to stop. A request
that fails is recorded, never repeated; the pool counts every connection it
opens, so a client that had to reconnect shows it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

import urllib3


@dataclass
class ClientResult:
    acknowledged: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    servedBy: list[str] = field(default_factory=list)
    connections: int = 0


class KeepAlivePoster(threading.Thread):
    """
    POSTs C{name-N} messages to C{/guestbook} at C{host:port}, idle
    C{gaps} seconds (a uniform range) between requests.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        stop: threading.Event,
        gaps: tuple[float, float] = (0.3, 1.8),
        seed: int = 0,
        maxRequests: int = 1000,
        timeout: float = 20.0,
    ) -> None:
        super().__init__(name=f"poster-{name}", daemon=True)
        self.result = ClientResult()
        self._label = name
        self._stopEvent = stop
        self._gaps = gaps
        self._random = random.Random(seed)
        self._maxRequests = maxRequests
        self._pool = urllib3.HTTPConnectionPool(
            host, port, maxsize=1, block=True, retries=False, timeout=timeout
        )

    def run(self) -> None:
        try:
            for sequence in range(self._maxRequests):
                if self._stopEvent.is_set():
                    break
                self._post(f"{self._label}-{sequence}")
                self._stopEvent.wait(self._random.uniform(*self._gaps))
        finally:
            self.result.connections = self._pool.num_connections
            self._pool.close()

    def _post(self, message: str) -> None:
        try:
            response = self._pool.request(
                "POST",
                "/guestbook",
                body=json.dumps({"message": message}).encode(),
                headers={"Content-Type": "application/json"},
                retries=False,
            )
        except Exception as e:
            self.result.failures.append(f"{time.monotonic():.3f} {message}: {e!r}")
            return
        if response.status == 201:
            self.result.acknowledged.append(message)
            self.result.servedBy.append(response.headers.get("X-Served-By", "?"))
        else:
            self.result.failures.append(f"{message}: HTTP {response.status}")


def startPosters(host: str, port: int, count: int, **kw) -> tuple[threading.Event, list]:
    stop = threading.Event()
    posters = [KeepAlivePoster(str(i), host, port, stop, seed=i, **kw) for i in range(count)]
    for poster in posters:
        poster.start()
    return stop, posters


def acknowledgedSoFar(posters: list[KeepAlivePoster]) -> int:
    return sum(len(p.result.acknowledged) for p in posters)


def stopPosters(stop: threading.Event, posters: list[KeepAlivePoster], timeout=30.0) -> None:
    stop.set()
    for poster in posters:
        poster.join(timeout)
        assert not poster.is_alive(), f"{poster.name} did not stop"
