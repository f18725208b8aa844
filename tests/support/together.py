"""
Flips restarted under a light load of GETs: one (L{restartsUnderLightLoad}),
or several side by side, so that a test of many kinds of app pays for one
restart's wait per round rather than one per app.
"""

from __future__ import annotations

import os
import signal

from tests.support.load import Load
from tests.support.procs import Flip, pidAlive, waitFor

KINDS = ("newConnection", "keepAliveGet")


def restartsUnderLightLoad(
    testCase, flip: Flip, port: int, count: int, host: str = "127.0.0.1", path: str = "/"
) -> list[int]:
    """
    C{count} restarts of C{flip} (any L{Flip}) under a light load of GETs to
    C{path}: no request fails, each brings a new PID, and only the last is
    left running. Return the new PIDs.
    """
    with Load(host, port, kinds=KINDS, path=path) as load:
        pids = flip.restartsUnderLoad(load, count)
    testCase.assertEqual(load.failures(), {}, load.failureReport())
    testCase.assertEqual(len(set(pids)), count, pids)
    waitFor(lambda: flip.aliveGenerations() == [pids[-1]], "only the last generation left")
    return pids


def startTogether(flips: list[Flip]) -> list[int]:
    """Start every flip at once; return their PIDs once each serves."""
    pids = [flip.start(waitReady=False) for flip in flips]
    for flip, pid in zip(flips, pids, strict=True):
        flip.waitServing(pid)
    return pids


def restartTogether(flips: list[Flip]) -> list[int]:
    """SIGHUP every flip at once; return the new PIDs once each serves and each old one exited."""
    olds = [flip.pid() for flip in flips]
    for old in olds:
        os.kill(old, signal.SIGHUP)
    news = []
    for flip, old in zip(flips, olds, strict=True):
        new = waitFor(lambda f=flip, o=old: (p := f.pid()) not in (None, o) and p, "a new PID")
        flip.waitServing(new)
        news.append(new)
    for old in olds:
        waitFor(lambda o=old: not pidAlive(o), f"old PID {old} to exit")
    return news


def restartsUnderLoad(testCase, servers: list[tuple[str, Flip, int]], restarts: int) -> None:
    """
    C{restarts} rounds of L{restartTogether} while each server (a name, its
    flip, its port) is under a light load of GETs to C{/}: no request fails,
    and every generation answers.
    """
    loads = [Load("127.0.0.1", port, kinds=KINDS, path="/") for _, _, port in servers]
    for load in loads:
        load.__enter__()
        testCase.addCleanup(load.stop)
    served: list[set[int]] = [set() for _ in servers]
    flips = [flip for _, flip, _ in servers]
    for _ in range(restarts):
        before = [load.totalRequests() for load in loads]
        for pids, pid in zip(served, restartTogether(flips), strict=True):
            pids.add(pid)
        for load, count in zip(loads, before, strict=True):
            waitFor(lambda ld=load, c=count: ld.totalRequests() > c + 10, "requests after")
    for (name, _, _), load, pids in zip(servers, loads, served, strict=True):
        load.stop()
        testCase.assertEqual(load.failures(), {}, f"{name}: {load.failureReport()}")
        seen = set().union(*(result.pids for result in load.results()))
        testCase.assertTrue(pids <= seen, (name, pids, seen))
