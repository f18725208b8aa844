"""A unix socket whose listen queue is full: what a burst of clients leaves behind."""

from __future__ import annotations

import os
import socket

from tests.support.procs import shortTempDir


def fullQueue(testCase) -> str:
    """A unix socket that listens with the smallest queue, filled, and never accepts."""
    path = os.path.join(shortTempDir(testCase), "full.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    testCase.addCleanup(server.close)
    server.bind(path)
    server.listen(0)
    for _ in range(64):
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        testCase.addCleanup(waiting.close)
        waiting.setblocking(False)
        try:
            waiting.connect(path)
        except BlockingIOError:
            return path
    raise AssertionError("the queue never filled")
