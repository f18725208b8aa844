"""
One worker process, as its leader starts it and talks to it.

The worker runs the leader's own command line (so the same app, options and
endpoints) from the leader's working directory, resolved: a deploy that
switches a C{current} symlink changes the next generation, never the
replacement of a crashed worker. It gets the serving listeners at
descriptors 3 and up, then the handoff channel and the command channel
(L{txflip.workers.commands}), and its links: a C{SOCK_SEQPACKET} channel
over which the leader hands it the channels that move connections between
generations (L{txflip.workers.moving}); nothing else is inherited.
"""

from __future__ import annotations

import signal
import socket

from txflip.core.channel import SuccessorChannel, adoptChannel
from txflip.core.handoff import spawnWithListeners
from txflip.core.listeners import ListenerRegistry
from txflip.core.transfer import PacketChannel, closeDescriptors, transferPair
from txflip.workers.commands import LeaderEnd
from txflip.workers.role import ENV_WORKER, WorkerRole


class WorkerProcess:
    """
    A running worker; what it says goes to C{pool} (a L{txflip.workers.pool.WorkerPool}).

    @param state: set by the pool right after the launch: the L{WorkerState} to report as.
    """

    def __init__(self, reactor, pool, index: int, count: int, generation: int) -> None:
        self._reactor = reactor
        self._pool = pool
        self.index = index
        self.count = count
        self.generation = generation
        self.state = None
        self.pid: int | None = None
        self._process = None
        self._channel: SuccessorChannel | None = None
        self._commands: LeaderEnd | None = None
        self._links: PacketChannel | None = None
        self._gone = False

    def spawn(self, argv: list[str], cwd: str, registry: ListenerRegistry) -> None:
        commandOurs, commandTheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        linksOurs, linksTheirs = transferPair()
        try:
            # The app's listeners only: the control socket stays the leader's.
            spawned = spawnWithListeners(
                self._reactor,
                argv,
                cwd,
                registry.serving(),
                channel=SuccessorChannel(
                    lambda pid: self._report("workerReady"),
                    lambda: self._report("workerServing"),
                    lambda reason: self._report("workerFailed", reason),
                    lambda: None,
                    onWaiting=lambda what: self._report("workerWaiting", what),
                    onHeard=lambda: self._report("workerHeard"),
                ),
                side=commandTheirs,
                moreSides=[linksTheirs],
                onEnded=self._ended,
                generation=self.generation,
                environment=lambda commandFd: {
                    ENV_WORKER: WorkerRole(
                        self.index, self.count, commandFd, commandFd + 1
                    ).encode()
                },
            )
        except BaseException:
            commandOurs.close()
            linksOurs.close()
            raise
        self._process, self._channel = spawned.process, spawned.channel
        self.pid = spawned.pid
        self._commands = adoptChannel(
            self._reactor,
            commandOurs,
            LeaderEnd(
                lambda stats: self._report("workerStats", stats) or self._report("workerHeard"),
                lambda aborted: self._report("workerDrained", aborted),
                lambda report: self._report("workerMoved", report),
            ),
        )
        # Nothing comes this way from a worker: it only takes what it is handed.
        self._links = PacketChannel(
            self._reactor, linksOurs, lambda header, payload, fds: closeDescriptors(fds), _ignore
        )

    def _report(self, method: str, *args) -> None:
        if self.state is not None and not self._gone:
            getattr(self._pool, method)(self.state, *args)

    def _ended(self, why: str) -> None:
        self._gone = True
        for channel in (self._channel, self._commands):
            if channel is not None and channel.transport is not None:
                channel.transport.loseConnection()
        if self._links is not None:
            self._links.close("the worker ended")
        if self.state is not None:
            self._pool.workerEnded(self.state, why)

    # What the pool asks.

    def go(self) -> None:
        if self._channel is not None:
            self._channel.go()

    def abort(self) -> None:
        """Give up on a worker before it serves: it lets go of the sockets and exits."""
        if self._channel is not None and self._channel.transport is not None:
            self._channel.abort()
        self.signal(signal.SIGTERM)

    def send(self, command: str) -> None:
        if self._commands is not None:
            self._commands.send(command)

    def hand(self, header: dict, fd: int, onSent=None) -> bool:
        """
        Hand the worker descriptor C{fd} (closed here once sent, or at once if
        it cannot be) with C{header}, over its links (L{txflip.workers.moving}).

        @return: whether it is on its way.
        """
        if self._gone or self._links is None or self._links.closed:
            closeDescriptors([fd])
            return False
        try:
            self._links.send(header, fds=[fd], onSent=onSent)
        except OSError:
            return False
        return True

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        if self._gone or self._process is None:
            return
        try:
            self._process.signalProcess(signum)
        except Exception:
            pass


def _ignore(why: str) -> None:
    pass
