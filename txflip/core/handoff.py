"""
Handing listeners to a new process: what it is told in C{TXFLIP_HANDOFF}, and
L{spawnWithListeners}, the one way both a restart and a workers' leader start
a process with listening sockets.

The parent names each inherited file descriptor (which listener it is and what
address it was asked for), the control channel's descriptor, the connection
transfer channel's descriptor, the generation number and the PID file path.
The child reads the variable once, at start, and removes it from C{os.environ}
so that nothing the app starts inherits it.

It is one of three variables a child may get: under systemd,
C{TXFLIP_SYSTEMD} (L{txflip.systemd.notify}) and C{TXFLIP_ACTIVATION}
(L{txflip.systemd.activation}) come too (docs/design.rst, "What a new
generation is told").
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

from txflip.core.channel import adoptChannel

if TYPE_CHECKING:
    from txflip.core.listeners import Listener

ENV_STATE = "TXFLIP_HANDOFF"


@dataclass(frozen=True)
class InheritedListener:
    """A listening socket handed down at descriptor C{fd}, known by C{key}."""

    fd: int
    key: str
    family: str


@dataclass(frozen=True)
class HandoffState:
    """Everything a child generation learns from its parent."""

    generation: int
    parentPid: int
    controlFd: int
    listeners: list[InheritedListener] = field(default_factory=list)
    pidFile: str | None = None
    transferFd: int | None = None
    """The socketpair end over which idle connections arrive (L{txflip.core.connadopt})."""
    sequential: bool = False
    """A sequential handover: build the app, say prepared, start it only when told start."""

    def keepDescriptorsToThisProcess(self) -> None:
        """Mark the channels' inherited descriptors close-on-exec: they were for this process."""
        os.set_inheritable(self.controlFd, False)
        if self.transferFd is not None:  # txflip.core.connadopt's channel
            os.set_inheritable(self.transferFd, False)

    def encode(self) -> str:
        """Serialise for the child's environment."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> HandoffState:
        """Parse what L{encode} wrote; raise L{ValueError} on anything else."""
        try:
            raw = json.loads(text)
            return cls(
                generation=int(raw["generation"]),
                parentPid=int(raw["parentPid"]),
                controlFd=int(raw["controlFd"]),
                listeners=[InheritedListener(**item) for item in raw["listeners"]],
                pidFile=raw.get("pidFile"),
                transferFd=None if raw.get("transferFd") is None else int(raw["transferFd"]),
                sequential=bool(raw.get("sequential", False)),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed {ENV_STATE}: {e}") from e


def takeInheritedState(environ: dict[str, str] | None = None) -> HandoffState | None:
    """
    Read and remove the handoff variable from the environment.

    @return: the state, or L{None} in a first generation.
    """
    environ = os.environ if environ is None else environ
    text = environ.pop(ENV_STATE, None)
    if text is None:
        return None
    return HandoffState.decode(text)


def handDown(
    listeners: list[Listener], firstFd: int = 3
) -> tuple[dict[int, int], list[InheritedListener]]:
    """
    Where a child gets C{listeners}: from C{firstFd} on, in order.

    @return: the C{childFDs} entries (child descriptor to this process's), and
        what the child is told about each.
    """
    childFDs: dict[int, int] = {}
    described: list[InheritedListener] = []
    for fd, listener in enumerate(listeners, start=firstFd):
        childFDs[fd] = listener.port.fileno()
        described.append(listener.description(fd))
    return childFDs, described


def howItEnded(reason) -> str:
    """How a process ended, in words, from C{processEnded}'s reason."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited with code 0"
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        return f"was killed by signal {value.signal}"
    if isinstance(value, ProcessTerminated):
        return f"exited with code {value.exitCode}"
    return str(value)


class _Ended(ProcessProtocol):
    def __init__(self, onEnded: Callable[[str], None]) -> None:
        self._onEnded = onEnded

    def processEnded(self, reason) -> None:
        self._onEnded(howItEnded(reason))


@dataclass
class Spawned:
    """A process started with listeners."""

    process: object
    """Its C{IProcessTransport}."""
    channel: object
    """This end of the handoff channel: the protocol given, now connected."""
    state: HandoffState
    """What it was told in C{TXFLIP_HANDOFF}."""

    @property
    def pid(self) -> int:
        return self.process.pid


def spawnWithListeners(
    reactor,
    argv: list[str],
    cwd: str,
    listeners: list[Listener],
    *,
    channel,
    side: socket.socket,
    onEnded: Callable[[str], None],
    generation: int,
    pidFile: str | None = None,
    sideIsTransfer: bool = False,
    moreSides: list[socket.socket] = (),
    sequential: bool = False,
    environment: Callable[[int], dict[str, str]] = lambda sideFd: {},
) -> Spawned:
    """
    Start C{argv} in C{cwd} with C{listeners}, and talk to it over a new
    handoff channel (L{txflip.core.channel}).

    The child gets descriptors 0, 1 and 2 as they are, the listeners from 3
    on, its end of the channel after them, and C{side} (the end of a second
    socketpair: the connection transfer channel, or a worker's command
    channel) after that, then C{moreSides} in order; nothing else. Its
    environment is this one, plus C{environment(sideFd)} and C{TXFLIP_HANDOFF}.

    @param channel: the protocol for this end of the handoff channel.
    @param side: the child's end of the side channel; closed here, whatever happens.
    @param moreSides: ends of further socketpairs, at C{sideFd + 1} on (a
        worker's connection transfer channel); closed here, whatever happens.
    @param onEnded: called with L{howItEnded} once the process has ended.
    @param generation: the generation number the child is told.
    @param sideIsTransfer: C{TXFLIP_HANDOFF} names C{side} as the transfer channel.
    @param sequential: the child builds its app and starts it only when told
        (C{--handover sequential}, L{txflip.core.pause}).
    @raise Exception: whatever C{spawnProcess} raises; nothing is left open.
    """
    ours = theirs = None
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        childFDs, described = handDown(listeners)
        childFDs.update({0: 0, 1: 1, 2: 2})
        controlFd = 3 + len(described)
        sideFd = controlFd + 1
        childFDs[controlFd] = theirs.fileno()
        childFDs[sideFd] = side.fileno()
        for fd, more in enumerate(moreSides, start=sideFd + 1):
            childFDs[fd] = more.fileno()
        state = HandoffState(
            generation=generation,
            parentPid=os.getpid(),
            controlFd=controlFd,
            listeners=described,
            pidFile=pidFile,
            transferFd=sideFd if sideIsTransfer else None,
            sequential=sequential,
        )
        env = dict(os.environ)
        env.update(environment(sideFd))
        env[ENV_STATE] = state.encode()
        process = reactor.spawnProcess(
            _Ended(onEnded), argv[0], argv, env=env, path=cwd, childFDs=childFDs
        )
    except BaseException:
        if ours is not None:
            ours.close()
        raise
    finally:
        if theirs is not None:
            theirs.close()
        side.close()
        for more in moreSides:
            more.close()
    return Spawned(process, adoptChannel(reactor, ours, channel), state)
