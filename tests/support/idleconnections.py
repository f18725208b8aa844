"""
Many idle keep-alive HTTP/1.1 connections from one thread, for restart races.

L{IdleConnections} opens C{count} connections, a batch at a time (the
listener's backlog stays small), and has one GET answered on each; they then
stay idle until L{IdleConnections.askAll} sends one more GET on every one at
once and says who answered each: the PID in C{X-Served-By}, or how it failed.
Responses must have a C{Content-Length} or be chunked.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections import Counter

BATCH = 40


def allowOpenFiles(count: int) -> None:
    """Raise the soft limit on open files to C{count} if lower (processes started inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            raise OSError(f"need {count} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def _answer(buffer: bytes) -> tuple[str, int] | None:
    """Who answered (a PID, or the status) a complete response in C{buffer}, and its length."""
    head, sep, body = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().decode()
    if fields.get(b"transfer-encoding") == "chunked":
        last = (b"" if body.startswith(b"0\r\n") else b"\r\n") + b"0\r\n\r\n"
        if last not in body:
            return None
        length = body.index(last) + len(last)
    else:
        length = int(fields.get(b"content-length", "0"))
        if len(body) < length:
            return None
    status = head.split(b" ", 2)[1].decode()
    who = fields.get(b"x-served-by", "?") if status == "200" else f"HTTP {status}"
    return who, len(head) + len(sep) + length


class IdleConnections:
    """C{count} keep-alive connections to C{address}, each answered once, then idle."""

    def __init__(self, address: tuple[str, int], count: int, path: str = "/") -> None:
        self.address = address
        self.count = count
        self._request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.sockets: list[socket.socket] = []

    def open(self, deadline: float = 60.0) -> Counter:
        """Open every connection and GET once on each; count who answered."""
        served: Counter = Counter()
        end = time.monotonic() + deadline
        while len(self.sockets) < self.count:
            batch = []
            for _ in range(min(BATCH, self.count - len(self.sockets))):
                skt = socket.create_connection(self.address, timeout=10)
                self.sockets.append(skt)
                batch.append(skt)
            served.update(self._ask(batch, end))
        return served

    def askAll(self, deadline: float = 60.0) -> Counter:
        """One more GET on every connection at once; count who answered, or how each failed."""
        return self._ask(self.sockets, time.monotonic() + deadline)

    def _ask(self, sockets: list[socket.socket], end: float) -> Counter:
        outcomes: Counter = Counter()
        buffers: dict[socket.socket, bytes] = {}
        with selectors.DefaultSelector() as selector:
            for skt in sockets:
                skt.setblocking(False)
                try:
                    skt.send(self._request)  # a few bytes into an empty send buffer
                except OSError as e:
                    outcomes[type(e).__name__] += 1
                    continue
                buffers[skt] = b""
                selector.register(skt, selectors.EVENT_READ)
            while buffers and (left := end - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    skt = key.fileobj
                    try:
                        data = skt.recv(65536)
                    except OSError as e:
                        data, failure = b"", type(e).__name__
                    else:
                        failure = "EOF"
                    answer = _answer(buffers[skt] + data) if data else None
                    if data and answer is None:
                        buffers[skt] += data
                        continue
                    selector.unregister(skt)
                    del buffers[skt]
                    outcomes[answer[0] if answer else failure] += 1
        outcomes["no answer in time"] += len(buffers)
        return +outcomes

    def close(self) -> None:
        for skt in self.sockets:
            skt.close()
        self.sockets = []
