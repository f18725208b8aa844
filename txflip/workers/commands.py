"""
The command channel between a leader and one of its workers.

It runs beside the handoff channel (L{txflip.core.channel}), which carries the
worker's start as for any new generation (C{waiting}, C{ready}, C{go},
C{serving}, C{alive}, C{retired}, C{failed}). Once the worker serves, the
leader steers it here, one word a line:

    leader -> worker   pause     stop accepting (the kernel keeps queueing)
    leader -> worker   resume    accept again
    leader -> worker   drain     stop accepting and drain the open connections
    leader -> worker   undrain   stop draining (the leader's generation serves again)
    leader -> worker   stop      drain if need be, then exit 0
    leader -> worker   hold      stop accepting for a while: others hold fewer
                                 long-lived connections (L{txflip.workers.balance})
    leader -> worker   unhold    accept again after a hold
    leader -> worker   reopen-logs  reopen the log files (SIGUSR1 to the leader)
    worker -> leader   stats {"connections": N, "idle": N, "settled": N, "requests": N,
                              "accepting": B, "held": B}   every STATS_SECONDS
    worker -> leader   drained N the drain has ended; N connections were aborted
    worker -> leader   moved {"moved": N, "stayed": {...}, "failure": ..., "ms": N,
                              "final": B, "waiting": N}   how moving its idle
                              connections to the next generation's workers goes
                              (L{txflip.workers.moving})

A worker whose command channel closes has lost its leader: it drains and exits.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.protocols.basic import LineOnlyReceiver

STATS_SECONDS = 0.2
REOPEN_LOGS = "reopen-logs"
COMMANDS = frozenset({"pause", "resume", "drain", "undrain", "stop", "hold", "unhold", REOPEN_LOGS})


class LeaderEnd(LineOnlyReceiver):
    """The leader's end: sends commands, hears stats and the end of a drain."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(
        self,
        onStats: Callable[[dict], None],
        onDrained: Callable[[int], None],
        onMoved: Callable[[dict], None] = lambda report: None,
    ) -> None:
        self._onStats = onStats
        self._onDrained = onDrained
        self._onMoved = onMoved

    def send(self, command: str) -> None:
        if command not in COMMANDS:
            raise ValueError(f"not a worker command: {command!r}")
        if self.transport is not None and self.connected:
            self.sendLine(command.encode())

    def lineReceived(self, line: bytes) -> None:
        word, _, rest = line.decode("utf-8", "replace").partition(" ")
        if word in ("stats", "moved"):
            try:
                fields = json.loads(rest)
            except ValueError:
                return
            if isinstance(fields, dict):
                (self._onStats if word == "stats" else self._onMoved)(fields)
        elif word == "drained" and rest.strip().isdigit():
            self._onDrained(int(rest))


class WorkerEnd(LineOnlyReceiver):
    """The worker's end: hears commands, reports stats and drains."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(self, onCommand: Callable[[str], None], onLost: Callable[[], None]) -> None:
        self._onCommand = onCommand
        self._onLost = onLost

    def lineReceived(self, line: bytes) -> None:
        word = line.decode("utf-8", "replace").strip()
        if word in COMMANDS:
            self._onCommand(word)

    def stats(self, stats: dict) -> None:
        if self.transport is not None and self.connected:
            self.sendLine(b"stats " + json.dumps(stats, separators=(",", ":")).encode())

    def drained(self, aborted: int) -> None:
        if self.transport is not None and self.connected:
            self.sendLine(f"drained {aborted}".encode())

    def moved(self, report: dict) -> None:
        if self.transport is not None and self.connected:
            self.sendLine(b"moved " + json.dumps(report, separators=(",", ":")).encode())

    def connectionLost(self, reason=None) -> None:
        self._onLost()
