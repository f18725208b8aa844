"""
Clients of docs/examples/movable_chat.py in threads: each connects once,
gives its nickname, then says a numbered line every 50 to 200 ms and waits
for the chat to say it back; it never reconnects, and records every way the
conversation went wrong.
"""

from __future__ import annotations

import random
import socket
import threading
import time


class ChatClient(threading.Thread):
    """
    @ivar pids: the PID that answered each of this client's lines, in order.
    @ivar failures: what went wrong (an end of file, a line lost, doubled or
        out of order, a wrong nickname); empty if nothing did.
    """

    def __init__(self, address: tuple[str, int], nick: str, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"chat {nick}")
        self._address = address
        self.nick = nick
        self._stopping = stop
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._buffer = b""

    def _line(self, skt: socket.socket) -> str:
        while b"\n" not in self._buffer:
            chunk = skt.recv(65536)
            if not chunk:
                raise ConnectionError("end of file")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def run(self) -> None:
        try:
            with socket.create_connection(self._address, timeout=10) as skt:
                self._converse(skt)
        except Exception as e:
            self.failures.append(f"{self.nick}: {type(e).__name__}: {e}")

    def _converse(self, skt: socket.socket) -> None:
        if self._line(skt) != "nickname?":
            raise AssertionError("no greeting")
        skt.sendall(self.nick.encode() + b"\n")
        if not self._line(skt).startswith(f"welcome {self.nick} "):
            raise AssertionError("no welcome")
        deadline = time.monotonic() + 120
        count = 0
        while not self._stopping.is_set() and time.monotonic() < deadline:
            count += 1
            skt.sendall(f"m{count}\n".encode())
            while True:
                line = self._line(skt)
                if not line.startswith(f"{self.nick}: "):
                    continue  # another client's line
                said, _, pid = line[len(self.nick) + 2 :].partition(" (PID ")
                if said != f"m{count}":
                    self.failures.append(f"{self.nick}: expected m{count}, got {line!r}")
                    return
                self.pids.append(int(pid.rstrip(")")))
                break
            time.sleep(random.uniform(0.05, 0.2))
