"""
systemd's side of the file descriptor store, for tests: a real C{AF_UNIX}
datagram socket that receives C{sd_notify} messages with C{SO_PASSCRED} (the
kernel names each sender) and the descriptors that come with them
(C{SCM_RIGHTS}), and keeps them the way systemd does: C{FDSTORE=1} adds each
descriptor under C{FDNAME=} unless the same socket is already stored,
C{FDSTOREREMOVE=1} closes every descriptor of that name, and descriptors sent
without C{FDSTORE=1} are closed.

systemd itself cannot run here: it would have to be PID 1 (or a user manager
with a session bus), which a test process on this machine is not.
"""

from __future__ import annotations

import array
import os
import socket
import struct

from tests.support.procs import DEFAULT_DEADLINE, waitFor

MAX_FDS = 16


class FakeFdStore:
    def __init__(self, testCase, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.bind(address)
        self.messages: list[tuple[int | None, dict[str, str], int]] = []
        self.store: list[tuple[str, int]] = []
        """(FDNAME, descriptor), in the order stored."""
        testCase.addCleanup(self.close)

    def close(self) -> None:
        self.socket.close()
        for _, fd in self.store:
            os.close(fd)
        self.store = []

    def receive(self, deadline: float = 0.0) -> None:
        """Take every datagram waiting, waiting up to C{deadline} seconds for the first."""
        self.socket.settimeout(deadline if deadline > 0 else 0.001)
        credSize = struct.calcsize("3i")
        space = socket.CMSG_SPACE(credSize) + socket.CMSG_SPACE(MAX_FDS * 4)
        while True:
            try:
                data, ancillary, flags, _ = self.socket.recvmsg(4096, space)
            except (TimeoutError, BlockingIOError):
                return
            assert not flags & socket.MSG_CTRUNC, "more descriptors than MAX_FDS"
            sender, fds = None, []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("3i", payload[:credSize])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(received)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((sender, fields, len(fds)))
            self._apply(fields, fds)
            self.socket.settimeout(0.001)

    def _apply(self, fields: dict[str, str], fds: list[int]) -> None:
        name = fields.get("FDNAME", "stored")
        if fields.get("FDSTORE") == "1":
            for fd in fds:
                if any(_sameSocket(fd, kept) for _, kept in self.store):
                    os.close(fd)
                else:
                    self.store.append((name, fd))
        else:
            for fd in fds:
                os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1":
            for _, fd in [entry for entry in self.store if entry[0] == name]:
                os.close(fd)
            self.store = [entry for entry in self.store if entry[0] != name]

    def waitFor(self, predicate, what: str, deadline: float = DEFAULT_DEADLINE) -> None:
        """Receive until C{predicate()} holds."""

        def holds():
            self.receive()
            return predicate()

        waitFor(holds, what, deadline, seen=lambda: self.messages)

    def names(self) -> list[str]:
        return [name for name, _ in self.store]


def _sameSocket(a: int, b: int) -> bool:
    first, second = os.fstat(a), os.fstat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)
