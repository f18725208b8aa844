"""
One worker process, as its leader starts it and talks to it.

The worker runs the leader's own command line (so the same app, options and
endpoints) from the leader's working directory, resolved: a deploy that
switches a C{current} symlink changes the next generation, never the
replacement of a crashed worker. It gets the serving listeners at
descriptors 3 and up, then the handoff channel and the command channel
(L{txflip.workers.commands}); nothing else is inherited.
"""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

from txflip.core.channel import SuccessorChannel, adoptChannel
from txflip.core.handoff import ENV_STATE, HandoffState
from txflip.core.listeners import ListenerRegistry
from txflip.workers.commands import LeaderEnd
from txflip.workers.role import ENV_WORKER, WorkerRole


def howItEnded(reason) -> str:
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited with code 0"
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        return f"was killed by signal {value.signal}"
    if isinstance(value, ProcessTerminated):
        return f"exited with code {value.exitCode}"
    return str(value)


class _Ended(ProcessProtocol):
    def __init__(self, worker: WorkerProcess) -> None:
        self._worker = worker

    def processEnded(self, reason) -> None:
        self._worker._ended(howItEnded(reason))


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
        self._gone = False

    def spawn(self, argv: list[str], cwd: str, registry: ListenerRegistry) -> None:
        handoffOurs, handoffTheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        commandOurs, commandTheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The app's listeners only: the control socket stays the leader's.
            childFDs, described = registry.handoffDescriptors(listeners=registry.serving())
            controlFd = 3 + len(described)
            commandFd = controlFd + 1
            childFDs.update({0: 0, 1: 1, 2: 2})
            childFDs[controlFd] = handoffTheirs.fileno()
            childFDs[commandFd] = commandTheirs.fileno()
            state = HandoffState(
                generation=self.generation,
                parentPid=os.getpid(),
                controlFd=controlFd,
                listeners=described,
                pidFile=None,
            )
            env = dict(os.environ)
            env[ENV_STATE] = state.encode()
            env[ENV_WORKER] = WorkerRole(self.index, self.count, commandFd).encode()
            self._process = self._reactor.spawnProcess(
                _Ended(self), argv[0], argv, env=env, path=cwd, childFDs=childFDs
            )
        except BaseException:
            handoffOurs.close()
            commandOurs.close()
            raise
        finally:
            handoffTheirs.close()
            commandTheirs.close()
        self.pid = self._process.pid
        self._channel = adoptChannel(
            self._reactor,
            handoffOurs,
            SuccessorChannel(
                lambda pid: self._report("workerReady"),
                lambda: self._report("workerServing"),
                lambda reason: self._report("workerFailed", reason),
                lambda: None,
                onWaiting=lambda what: self._report("workerWaiting", what),
                onHeard=lambda: self._report("workerHeard"),
            ),
        )
        self._commands = adoptChannel(
            self._reactor,
            commandOurs,
            LeaderEnd(
                lambda stats: self._report("workerStats", stats) or self._report("workerHeard"),
                lambda aborted: self._report("workerDrained", aborted),
            ),
        )

    def _report(self, method: str, *args) -> None:
        if self.state is not None and not self._gone:
            getattr(self._pool, method)(self.state, *args)

    def _ended(self, why: str) -> None:
        self._gone = True
        for channel in (self._channel, self._commands):
            if channel is not None and channel.transport is not None:
                channel.transport.loseConnection()
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

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        if self._gone or self._process is None:
            return
        try:
            self._process.signalProcess(signum)
        except Exception:
            pass
