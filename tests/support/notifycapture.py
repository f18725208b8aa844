"""
A real C{AF_UNIX} datagram socket standing in for systemd's notification socket.
"""

from __future__ import annotations

import socket
import struct

from tests.support.procs import DEFAULT_DEADLINE, waitFor


class NotifyCapture:
    """
    A real C{AF_UNIX} datagram socket standing in for systemd's notification
    socket. C{SO_PASSCRED} makes the kernel attach each sender's PID, as it
    does for systemd.
    """

    def __init__(self, testCase, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.bind(address)
        self.messages: list[tuple[int, dict[str, str], list[str]]] = []
        testCase.addCleanup(self.socket.close)

    def receive(self, deadline: float = 0.0) -> None:
        """Take every datagram waiting, waiting up to C{deadline} seconds for the first."""
        self.socket.settimeout(deadline if deadline > 0 else 0.001)
        credSize = struct.calcsize("3i")
        while True:
            try:
                data, ancillary, _, _ = self.socket.recvmsg(4096, socket.CMSG_SPACE(credSize))
            except (TimeoutError, BlockingIOError):
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:credSize])[0]
            lines = data.decode().splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            self.messages.append((pid, fields, lines))
            self.socket.settimeout(0.001)

    def waitFor(self, predicate, what: str, deadline: float = DEFAULT_DEADLINE):
        """Receive until some message satisfies C{predicate}; return those that do."""

        def found():
            self.receive()
            return [m for m in self.messages if predicate(m)]

        return waitFor(found, what, deadline, seen=lambda: self.messages)
