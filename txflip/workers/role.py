"""
What a worker is told about itself, and how many workers C{--workers} asks for.

A worker gets the usual handoff state (L{txflip.core.handoff}: its listeners
and its channel to the leader) plus this module's variable: which worker it
is, and where its command channel and its connection transfer channel (its
links to the leader, L{txflip.workers.moving}) are. No Twisted is imported here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

ENV_WORKER = "TXFLIP_WORKER"


@dataclass(frozen=True)
class WorkerRole:
    """
    This process is worker C{index} of C{count}; its leader's commands arrive
    on C{commandFd}, and the channels that move connections on C{linksFd}.
    """

    index: int
    count: int
    commandFd: int
    linksFd: int | None = None

    def encode(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "count": self.count,
                "commandFd": self.commandFd,
                "linksFd": self.linksFd,
            }
        )


def takeWorkerRole(environ: dict[str, str] | None = None) -> WorkerRole | None:
    """
    Read and remove the worker variable from the environment.

    @return: the role, or L{None} in a process that is not a worker.
    @raise ValueError: the variable is malformed.
    """
    environ = os.environ if environ is None else environ
    text = environ.pop(ENV_WORKER, None)
    if text is None:
        return None
    try:
        raw = json.loads(text)
        links = raw.get("linksFd")
        return WorkerRole(
            int(raw["index"]),
            int(raw["count"]),
            int(raw["commandFd"]),
            None if links is None else int(links),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed {ENV_WORKER}: {e}") from None


def usableCores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


WORKERS_PER_CORE = 4
"""
C{--workers} allows at most this many processes per usable core: beyond that,
they add memory and context switches, not throughput.
"""


def maxWorkers() -> int:
    """The most processes C{--workers} may ask for on this machine."""
    return WORKERS_PER_CORE * usableCores()


def parseWorkers(text: str) -> int:
    """
    C{--workers}: a number from 1 up to L{maxWorkers}, or C{auto} for one per
    usable core.

    @raise ValueError: with a message saying what to give instead.
    """
    word = text.strip().lower()
    if word == "auto":
        return usableCores()
    if not (word.isdigit() and int(word) >= 1):
        raise ValueError(f"--workers {text!r}: give a number of processes from 1 up, or auto")
    count, most = int(word), maxWorkers()
    if count > most:
        raise ValueError(
            f"--workers {text!r}: at most {most} here ({WORKERS_PER_CORE} per usable core, "
            f"{usableCores()} usable); give a number from 1 to {most}, or auto"
        )
    return count
