"""
Continuous HTTPS load from threads: a new TLS connection per request, and a
kept-alive TLS connection. Every failed handshake and every failed request is
recorded. Each client is bounded by a request count and a deadline.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.support.tlshelpers import TLSConnection, clientContext

PATH = "/sleep?seconds=0"


@dataclass
class ClientResult:
    kind: str
    requests: int = 0
    handshakes: int = 0
    failedRequests: int = 0
    failedHandshakes: int = 0
    samples: list[str] = field(default_factory=list)
    pids: Counter = field(default_factory=Counter)

    def failure(self, what: str, error: object) -> None:
        if len(self.samples) < 10:
            self.samples.append(f"{what}: {error!r}")


class TLSLoad:
    """
    Clients against one TLS port until L{stop}.

    @param newConnection: threads opening a connection (and a handshake) per request.
    @param keepAlive: threads sending every request on one kept-alive connection,
        reconnecting only when the server said C{Connection: close}.
    """

    def __init__(
        self,
        port: int,
        cafile: str,
        serverName: str = "localhost",
        host: str = "127.0.0.1",
        newConnection: int = 1,
        keepAlive: int = 1,
        maxRequests: int = 20000,
        deadline: float = 600.0,
        pause: float = 0.002,
    ) -> None:
        self.port, self.cafile, self.serverName, self.host = port, cafile, serverName, host
        self.maxRequests, self.deadline, self.pause = maxRequests, deadline, pause
        self._stop = threading.Event()
        self.results = [ClientResult("new-connection") for _ in range(newConnection)]
        self.results += [ClientResult("keep-alive") for _ in range(keepAlive)]
        self._threads = [
            threading.Thread(
                target=self._newConnection if r.kind == "new-connection" else self._keepAlive,
                args=(r,),
                daemon=True,
            )
            for r in self.results
        ]

    def start(self) -> TLSLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[ClientResult]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.results

    def requests(self) -> int:
        return sum(r.requests for r in self.results)

    def _running(self, result: ClientResult, end: float) -> bool:
        return (
            not self._stop.is_set()
            and result.requests < self.maxRequests
            and time.monotonic() < end
        )

    def _handshake(self, result: ClientResult, context: ssl.SSLContext) -> ssl.SSLSocket | None:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=15)
        except OSError as e:
            result.failedHandshakes += 1
            result.failure("connect", e)
            return None
        try:
            tls = context.wrap_socket(raw, server_hostname=self.serverName)
        except (OSError, ssl.SSLError) as e:
            raw.close()
            result.failedHandshakes += 1
            result.failure("handshake", e)
            return None
        result.handshakes += 1
        return tls

    def _record(self, result: ClientResult, response) -> None:
        body = response.read()
        result.requests += 1
        if response.status != 200:
            result.failedRequests += 1
            result.failure("status", response.status)
            return
        result.pids[json.loads(body)["pid"]] += 1

    def _newConnection(self, result: ClientResult) -> None:
        context = clientContext(self.cafile)
        end = time.monotonic() + self.deadline
        while self._running(result, end):
            tls = self._handshake(result, context)
            if tls is None:
                continue
            conn = TLSConnection(self.host, self.port, self.serverName, self.cafile, 15)
            conn.sock = tls
            try:
                conn.request("GET", PATH, headers={"Connection": "close"})
                self._record(result, conn.getresponse())
            except (OSError, ValueError, http.client.HTTPException) as e:
                result.requests += 1
                result.failedRequests += 1
                result.failure("request", e)
            finally:
                conn.close()
            time.sleep(self.pause)

    def _keepAlive(self, result: ClientResult) -> None:
        context = clientContext(self.cafile)
        end = time.monotonic() + self.deadline
        conn = None
        while self._running(result, end):
            if conn is None:
                tls = self._handshake(result, context)
                if tls is None:
                    continue
                conn = TLSConnection(self.host, self.port, self.serverName, self.cafile, 15)
                conn.sock = tls
            try:
                conn.request("GET", PATH)
                response = conn.getresponse()
                closing = response.will_close
                self._record(result, response)
            except (OSError, ValueError, http.client.HTTPException) as e:
                result.requests += 1
                result.failedRequests += 1
                result.failure("request", e)
                closing = True
            if closing:
                conn.close()
                conn = None
            time.sleep(self.pause)
        if conn is not None:
            conn.close()


def summary(results: list[ClientResult]) -> str:
    return "; ".join(
        f"{r.kind}: {r.requests} requests ({r.failedRequests} failed), "
        f"{r.handshakes} handshakes ({r.failedHandshakes} failed), "
        f"{len(r.pids)} PIDs, samples {r.samples}"
        for r in results
    )
