"""
What one generation tells the next in C{TXFLIP_HANDOFF}.

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
from dataclasses import asdict, dataclass, field

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
