"""
Continuous HTTP load from threads, for restart tests and benchmarks.

Three kinds of client, as the restart tests need them:

  - C{newConnection}: a new connection per GET (C{Connection: close}).
  - C{keepAliveGet}: GETs over one kept-alive connection, reopened only when
    the server says C{Connection: close}.
  - C{keepAlivePost}: POSTs to the demo guestbook over a kept-alive
    connection; never retried, each acknowledged id recorded.

Every loop is bounded by a request count and a deadline.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Result:
    """What one client saw."""

    kind: str
    requests: int = 0
    failures: Counter = field(default_factory=Counter)
    failureSamples: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    acknowledged: list = field(default_factory=list)
    pids: Counter = field(default_factory=Counter)

    def fail(self, what: str, detail: str, at: float) -> None:
        self.failures[what] += 1
        if len(self.failureSamples) < 20:
            self.failureSamples.append((at, what, detail))


class Client(threading.Thread):
    """One client loop; stops on C{stop}, after C{maxRequests}, or at C{deadline}."""

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        stop: threading.Event,
        maxRequests: int = 100_000,
        deadline: float = 300.0,
        path: str = "/sleep?seconds=0",
        timeout: float = 30.0,
        numbered: bool = False,
    ) -> None:
        super().__init__(name=f"load-{kind}", daemon=True)
        self._numbered = numbered
        self.result = Result(kind)
        self._host = host
        self._port = port
        self._stopEvent = stop
        self._maxRequests = maxRequests
        self._deadline = time.monotonic() + deadline
        self._path = path
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self) -> None:
        sequence = 0
        while (
            not self._stopEvent.is_set()
            and self.result.requests < self._maxRequests
            and time.monotonic() < self._deadline
        ):
            sequence += 1
            started = time.monotonic()
            try:
                self._one(sequence)
            except Exception as e:
                self.result.fail(type(e).__name__, str(e), time.time())
                self._drop()
            else:
                self.result.latencies.append((time.time(), time.monotonic() - started))
            self.result.requests += 1
        self._drop()

    def requestPath(self, sequence: int) -> str:
        """The path of GET number C{sequence}: with C{numbered}, it names the request."""
        if not self._numbered:
            return self._path
        return f"{self._path}{'&' if '?' in self._path else '?'}n={self.result.kind}-{sequence}"

    def _one(self, sequence: int) -> None:
        kind = self.result.kind
        path = self.requestPath(sequence)
        if kind == "newConnection":
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                conn.request("GET", path, headers={"Connection": "close"})
                self._check(conn.getresponse(), 200)
            finally:
                conn.close()
        elif kind == "keepAliveGet":
            conn = self._connection()
            conn.request("GET", path)
            response = conn.getresponse()
            self._check(response, 200)
            if response.will_close:
                self._drop()
        elif kind == "keepAlivePost":
            conn = self._connection()
            message = f"{self.name}-{id(self)}-{sequence}"
            conn.request(
                "POST",
                "/guestbook",
                body=json.dumps({"message": message}),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            body = self._check(response, 201)
            self.result.acknowledged.append((message, json.loads(body)["id"]))
            if response.will_close:
                self._drop()
        else:
            raise ValueError(kind)

    def _check(self, response, expected: int) -> bytes:
        body = response.read()
        if response.status != expected:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        served = response.getheader("X-Served-By")
        if served:
            self.result.pids[int(served)] += 1
        return body


class Load:
    """A set of clients started and stopped together."""

    KINDS = ("newConnection", "keepAliveGet", "keepAlivePost")

    def __init__(self, host: str, port: int, kinds=KINDS, deadline: float = 300.0, **kw) -> None:
        self.stopEvent = threading.Event()
        self.clients = [
            Client(k, host, port, self.stopEvent, deadline=deadline, **kw) for k in kinds
        ]

    def __enter__(self) -> Load:
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopEvent.set()
        for client in self.clients:
            client.join(timeout=60)

    def results(self) -> list[Result]:
        return [client.result for client in self.clients]

    def totalRequests(self) -> int:
        return sum(r.requests for r in self.results())

    def failures(self) -> Counter:
        total: Counter = Counter()
        for r in self.results():
            total.update(r.failures)
        return total

    def failureReport(self) -> str:
        lines = []
        for r in self.results():
            for at, what, detail in r.failureSamples:
                lines.append(f"{r.kind} at {at:.3f}: {what}: {detail}")
        return "\n".join(lines)
