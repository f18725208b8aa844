"""
Real WebSocket clients (the C{websockets} library) in threads: each echoes
messages, records how every connection ended, and reconnects unless told not to.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@dataclass
class Connection:
    """One WebSocket connection: the PID that greeted it and how it ended."""

    pid: int
    code: int | None = None
    closedAt: float | None = None


@dataclass
class EchoResult:
    connections: list[Connection] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    echoes: int = 0


class EchoClient(threading.Thread):
    """
    Connect, read the server's C{pid N} greeting, echo until the server closes,
    then reconnect; stop once C{final} is set and a connection ends.
    """

    def __init__(self, url: str, final: threading.Event, deadline: float = 120.0) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._final = final
        self._deadline = time.monotonic() + deadline
        self.result = EchoResult()

    def run(self) -> None:
        while time.monotonic() < self._deadline:
            try:
                self._oneConnection()
            except Exception as e:
                self.result.failures.append(f"{type(e).__name__}: {e}")
                time.sleep(0.1)
            if self._final.is_set():
                return

    def _oneConnection(self) -> None:
        with connect(self._url, open_timeout=10, close_timeout=10) as ws:
            greeting = ws.recv(timeout=10)
            record = Connection(int(greeting.split()[1]))
            self.result.connections.append(record)
            sequence = 0
            try:
                while time.monotonic() < self._deadline:
                    sequence += 1
                    message = f"{self.name}-{sequence}"
                    ws.send(message)
                    reply = ws.recv(timeout=10)
                    if reply != message:
                        self.result.failures.append(f"echo {reply!r} for {message!r}")
                    self.result.echoes += 1
                    time.sleep(0.05)
            except ConnectionClosed as e:
                record.closedAt = time.monotonic()
                record.code = e.rcvd.code if e.rcvd is not None else None
                if record.code is None:
                    self.result.failures.append(f"closed without a close frame: {e}")


class EchoClients:
    """C{count} echo clients started and stopped together."""

    def __init__(self, url: str, count: int) -> None:
        self.final = threading.Event()
        self.clients = [EchoClient(url, self.final) for _ in range(count)]

    def __enter__(self) -> EchoClients:
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc) -> None:
        self.final.set()
        for client in self.clients:
            client.join(timeout=30)

    def connectedTo(self, pid: int) -> bool:
        """Whether every client's latest connection was greeted by C{pid}."""
        return all(
            c.result.connections and c.result.connections[-1].pid == pid for c in self.clients
        )

    def endedOn(self, pid: int) -> list[Connection]:
        """The connections C{pid} served that have ended."""
        return [
            conn
            for c in self.clients
            for conn in c.result.connections
            if conn.pid == pid and conn.closedAt is not None
        ]

    def failures(self) -> list[str]:
        return [f for c in self.clients for f in c.result.failures]

    def join(self, timeout: float = 30.0) -> None:
        for client in self.clients:
            client.join(timeout)
            assert not client.is_alive(), "a WebSocket client never ended"


class CountingClient(threading.Thread):
    """
    One connection to tests/support/movablews.py, never reopened: say C{m1},
    C{m2}... every 50 to 200 ms, and expect C{N:PID:mN} back for each, the
    count going on whichever PID answers; record the PIDs, how the connection
    ended (its close code) and anything wrong (a gap, a duplicate, a timeout).
    """

    def __init__(self, url: str, stop: threading.Event, **options) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._stopping = stop
        self._options = options
        self.pids: list[int] = []
        self.closeCode: int | None = None
        self.failures: list[str] = []

    def run(self) -> None:
        try:
            with connect(self._url, open_timeout=10, close_timeout=10, **self._options) as ws:
                self._talk(ws)
        except ConnectionClosed as e:
            self.closeCode = e.rcvd.code if e.rcvd is not None else None
        except Exception as e:
            self.failures.append(f"{type(e).__name__}: {e}")

    def _talk(self, ws) -> None:
        deadline = time.monotonic() + 180
        count = 0
        while not self._stopping.is_set() and time.monotonic() < deadline:
            count += 1
            ws.send(f"m{count}")
            answer = ws.recv(timeout=10)
            number, _, rest = answer.partition(":")
            pid, _, said = rest.partition(":")
            if number != str(count) or said != f"m{count}":
                self.failures.append(f"sent m{count}, got {answer!r}")
                return
            self.pids.append(int(pid))
            time.sleep(random.uniform(0.05, 0.2))
