"""
The restart state of one generation: its values and the moves allowed between them.

Only L{txflip.core.generation.Generation} changes the state; everything else
reads it.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where one generation is in its life."""

    STARTING = "starting"
    """Not ready yet: the app is starting, or the predecessor has not said go."""
    SERVING = "serving"
    """Accepting connections; an upgrade may start."""
    UPGRADING = "upgrading"
    """A successor is starting; this generation keeps serving."""
    HANDED_OVER = "handed-over"
    """A successor serves; this generation drains and will exit."""
    STOPPING = "stopping"
    """Shutting down for good (SIGTERM, SIGINT, or given up on before serving)."""


MOVES: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.SERVING, State.STOPPING}),
    # A rollback (txflip rollback) hands the traffic back to the predecessor.
    State.SERVING: frozenset({State.UPGRADING, State.HANDED_OVER, State.STOPPING}),
    State.UPGRADING: frozenset({State.SERVING, State.HANDED_OVER, State.STOPPING}),
    # A successor that dies while this generation still drains is taken over from.
    State.HANDED_OVER: frozenset({State.SERVING, State.STOPPING}),
    State.STOPPING: frozenset(),
}

REFUSALS: dict[State, str] = {
    State.STARTING: "this generation is not serving yet",
    State.UPGRADING: "an upgrade is already in progress",
    State.HANDED_OVER: "this generation has handed over and is draining",
    State.STOPPING: "this generation is shutting down",
}
"""Why an upgrade cannot start in each state that refuses one."""


class ForbiddenMove(Exception):
    """A state change the restart logic never makes: a bug, not bad input."""


def checkMove(current: State, new: State) -> None:
    """Raise L{ForbiddenMove} unless C{current} may become C{new}."""
    if new not in MOVES[current]:
        raise ForbiddenMove(f"{current} -> {new}")
