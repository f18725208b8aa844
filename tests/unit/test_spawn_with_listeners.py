"""
The one way a process is started with listeners (a restart's next generation,
a workers' leader's worker): where the child finds each descriptor, what its
environment says, that this process keeps nothing of the child's ends, even
when the spawn fails, and how the end of the process is worded.
"""

from __future__ import annotations

import json
import os
import socket

from twisted.internet import reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from txflip.core.handoff import ENV_STATE, HandoffState, howItEnded, spawnWithListeners
from txflip.core.listeners import ListenerRegistry


class Spawned:
    pid = 4242


class SpawningReactor(MemoryReactor):
    """Records C{spawnProcess}, or fails it."""

    def __init__(self, fails: bool = False) -> None:
        super().__init__()
        self.fails = fails
        self.spawned: list[dict] = []

    def spawnProcess(self, protocol, executable, args, env=None, path=None, childFDs=None):
        if self.fails:
            raise OSError(7, "Argument list too long")
        self.spawned.append({"args": args, "env": env, "path": path, "childFDs": childFDs})
        return Spawned()


def openDescriptors() -> set[int]:
    """This process's open descriptors (not the one listing them)."""
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    return {fd for fd in listed if isOpen(fd)}


def isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class SpawnTests(TestCase):
    def setUp(self) -> None:
        self.registry = ListenerRegistry(reactor)
        self.addCleanup(self.registry.stopAll)
        factory = Factory.forProtocol(Protocol)
        self.ports = [
            self.registry.standIn.listenTCP(0, factory, interface="127.0.0.1") for _ in range(2)
        ]

    def spawn(self, spawner: SpawningReactor, side: socket.socket, **kw):
        return spawnWithListeners(
            spawner,
            ["/usr/bin/python3", "-m", "app"],
            "/srv/app",
            self.registry.active(),
            channel=Protocol(),
            side=side,
            onEnded=lambda why: None,
            generation=3,
            **kw,
        )

    def test_layoutAndEnvironment(self) -> None:
        """Listeners from 3, then the channel, then the side channel; all said in TXFLIP_HANDOFF."""
        spawner = SpawningReactor()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        sideFd = theirs.fileno()
        told: list[int] = []
        spawned = self.spawn(
            spawner,
            theirs,
            pidFile="/run/app.pid",
            sideIsTransfer=True,
            environment=lambda fd: told.append(fd) or {"EXTRA": "1"},
        )
        [call] = spawner.spawned
        childFDs = call["childFDs"]
        self.assertEqual(sorted(childFDs), [0, 1, 2, 3, 4, 5, 6])
        self.assertEqual([childFDs[0], childFDs[1], childFDs[2]], [0, 1, 2])
        self.assertEqual([childFDs[3], childFDs[4]], [port.fileno() for port in self.ports])
        self.assertEqual(childFDs[6], sideFd)
        self.assertEqual(told, [6])
        self.assertEqual(
            (call["args"], call["path"]), (["/usr/bin/python3", "-m", "app"], "/srv/app")
        )
        self.assertEqual(call["env"]["EXTRA"], "1")
        self.assertEqual(call["env"]["PATH"], os.environ["PATH"])
        state = HandoffState.decode(call["env"][ENV_STATE])
        self.assertEqual(state, spawned.state)
        self.assertEqual(
            (state.generation, state.parentPid, state.controlFd, state.transferFd, state.pidFile),
            (3, os.getpid(), 5, 6, "/run/app.pid"),
        )
        self.assertEqual(
            [(item.fd, item.key) for item in state.listeners],
            [(3, "tcp:127.0.0.1:0"), (4, "tcp:127.0.0.1:0#1")],
        )
        self.assertEqual(spawned.pid, 4242)
        # This process keeps its end of the channel (adopted) and nothing of the child's.
        self.assertEqual(theirs.fileno(), -1)
        [(channelFd, family, _)] = spawner.adoptedStreamConnections
        self.assertEqual(family, socket.AF_UNIX)
        self.assertFalse(isOpen(channelFd), "the reactor adopts a copy; this end is closed")

    def test_aSideChannelThatIsNotTheTransferIsNotNamed(self) -> None:
        """A worker's command channel: in its own variable, not as TXFLIP_HANDOFF's transferFd."""
        spawner = SpawningReactor()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.spawn(spawner, theirs, environment=lambda fd: {"ROLE": json.dumps(fd)})
        [call] = spawner.spawned
        state = HandoffState.decode(call["env"][ENV_STATE])
        self.assertIsNone(state.transferFd)
        self.assertIsNone(state.pidFile)
        self.assertEqual(call["env"]["ROLE"], "6")

    def test_moreSidesFollowTheSideChannel(self) -> None:
        """A worker's links come right after its command channel, and this process keeps neither."""
        spawner = SpawningReactor()
        ours, theirs = socket.socketpair()
        linksOurs, linksTheirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(linksOurs.close)
        sideFd, linksFd = theirs.fileno(), linksTheirs.fileno()
        self.spawn(spawner, theirs, moreSides=[linksTheirs])
        [call] = spawner.spawned
        self.assertEqual(sorted(call["childFDs"]), [0, 1, 2, 3, 4, 5, 6, 7])
        self.assertEqual((call["childFDs"][6], call["childFDs"][7]), (sideFd, linksFd))
        self.assertEqual((theirs.fileno(), linksTheirs.fileno()), (-1, -1))

    def test_aFailedSpawnLeavesNothingOpen(self) -> None:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        linksOurs, linksTheirs = socket.socketpair()
        self.addCleanup(linksOurs.close)
        sideFd, linksFd = theirs.fileno(), linksTheirs.fileno()
        before = openDescriptors()
        error = self.assertRaises(
            OSError, self.spawn, SpawningReactor(fails=True), theirs, moreSides=[linksTheirs]
        )
        self.assertEqual(error.errno, 7)
        self.assertEqual(openDescriptors(), before - {sideFd, linksFd})


class HowItEndedTests(TestCase):
    def test_words(self) -> None:
        self.assertEqual(howItEnded(Failure(ProcessDone(0))), "exited with code 0")
        self.assertEqual(howItEnded(Failure(ProcessTerminated(exitCode=3))), "exited with code 3")
        self.assertEqual(howItEnded(Failure(ProcessTerminated(signal=9))), "was killed by signal 9")
