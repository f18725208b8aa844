"""
The control channel: a unix socket (mode 0600, next to the PID file) that the
C{txflip} command uses to ask for a restart and hear how it ends, or to read
the status of the serving generation.

It listens through the reactor's C{listenUNIX}, which txflip's
L{txflip.core.listening.ListeningReactor} stands in for, so the socket is
handed to the next generation like any listener and never goes away during a
restart.

Protocol: the client sends one line, C{reload}, C{status} or C{rollback};
the server answers with JSON lines, each with a C{phase}, and closes the
connection after the last one (C{done}, C{failed}, C{refused}, C{status} or
C{rolled-back}).

Only the server's own user and root may use it: the socket file is 0600, and
each connection's peer credentials (C{SO_PEERCRED}) are checked as well, so a
file mode loosened by hand does not open it up.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from datetime import UTC, datetime

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from txflip.core.drain import isIdleKeepAlive
from txflip.core.generation import Generation
from txflip.core.log import log
from txflip.core.twistedprivate import hasQueuedOutput

COMMAND_TIMEOUT = 10.0
LISTEN_BACKLOG = socket.SOMAXCONN
"""Room for a burst of clients (a deploy script's loop, monitoring): the kernel
caps it at net.core.somaxconn, and the client retries a full queue briefly."""


def peerCredentials(skt: socket.socket) -> tuple[int, int, int]:
    """The C{(pid, uid, gid)} of the process at the other end of a unix socket."""
    raw = skt.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def mayControl(peerUid: int, serverUid: int) -> bool:
    """Only root and the user the server runs as may control it."""
    return peerUid == 0 or peerUid == serverUid


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024

    def __init__(self, server: ControlServer) -> None:
        self._server = server
        self._peer: tuple[int, int, int] | None = None
        self.asked = False
        self.refused = False
        self._idleTimer = None

    def connectionMade(self) -> None:
        from twisted.internet import reactor

        self._idleTimer = reactor.callLater(COMMAND_TIMEOUT, self._noCommand)
        try:
            self._peer = peerCredentials(self.transport.getHandle())
        except OSError as e:
            self.finish({"phase": "refused", "reason": f"cannot read peer credentials: {e}"})
            return
        pid, uid, _ = self._peer
        if not mayControl(uid, self._server.uid):
            self.refused = True
            log.warn(
                "control socket: refused PID {peer} of uid {uid} (only uid {owner} and root)",
                peer=pid,
                uid=uid,
                owner=self._server.uid,
            )
            # Answer now, close once the command is read: closing with unread
            # data would reset the connection before the client reads why.
            self.send(
                {
                    "phase": "refused",
                    "reason": f"uid {uid} may not control this server: "
                    f"only uid {self._server.uid} and root may",
                }
            )

    def _noCommand(self) -> None:
        self._idleTimer = None
        if not self.asked:
            self.finish({"phase": "error", "reason": f"no command within {COMMAND_TIMEOUT:g}s"})

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            self.transport.loseConnection()
            return
        if self.asked or self._peer is None:
            return
        self.asked = True
        self._cancelIdleTimer()
        command = line.decode("utf-8", "replace").strip()
        if command == "status":
            self.finish({"phase": "status", **self._server.status()})
        elif command == "reload":
            self._server.reload(self)
        elif command == "rollback":
            self._server.rollback(self)
        else:
            self.finish(
                {
                    "phase": "error",
                    "reason": f"unknown command {command!r}: use reload, status or rollback",
                }
            )

    def lineLengthExceeded(self, line: bytes) -> None:
        self.finish({"phase": "error", "reason": "command too long"})

    def send(self, message: dict) -> None:
        if self.transport is not None and self.connected:
            self.transport.write(json.dumps(message).encode() + b"\n")

    def finish(self, message: dict) -> None:
        self.send(message)
        if self.transport is not None:
            self.transport.loseConnection()

    def finishNow(self, message: dict) -> None:
        """L{finish}, the line written at once if nothing is queued: the process exits next."""
        transport = self.transport
        if transport is None or not self.connected:
            return
        if transport.fileno() >= 0 and not hasQueuedOutput(transport):
            try:
                os.write(transport.fileno(), json.dumps(message).encode() + b"\n")
            except OSError:
                pass
            transport.loseConnection()
            return
        self.finish(message)

    def _cancelIdleTimer(self) -> None:
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.cancel()
        self._idleTimer = None

    def connectionLost(self, reason=None) -> None:
        self._cancelIdleTimer()
        self._server.forget(self)

    @property
    def peerPid(self) -> int | None:
        return self._peer[0] if self._peer else None


class ControlServer(Factory):
    """Answers C{reload} and C{status} for this generation."""

    def __init__(self, generation: Generation, path: str) -> None:
        self.generation = generation
        self.registry = generation.registry
        self.tracker = generation.tracker
        self.path = os.path.abspath(path)
        self.pidFile = generation.pidFile
        inherited = generation.inherited
        self.uid = os.geteuid()
        self._started = time.monotonic()
        self._startedAt = time.time()
        self._watchers: set[ControlProtocol] = set()
        self._upgradeStart: float | None = None
        self._watchingWindow = False
        self._windowTimer = None
        self._servedAt = generation.reactor.seconds()
        self._nextGeneration: int | None = None
        self.lastRestart: dict | None = None
        if inherited is not None:
            self.lastRestart = {
                "outcome": "succeeded",
                "generation": inherited.generation,
                "pid": os.getpid(),
                "reason": f"took over from PID {inherited.parentPid}",
                "at": _iso(self._startedAt),
            }
        self._connections: set[ControlProtocol] = set()
        generation.events.subscribe(self._observe)

    def buildProtocol(self, addr) -> ControlProtocol:
        protocol = ControlProtocol(self)
        protocol.factory = self
        self._connections.add(protocol)
        return protocol

    def listen(self, reactor):
        """Listen through the reactor (its stand-in), so the socket is handed over; mark it ours."""
        port = reactor.listenUNIX(self.path, self, mode=0o600, backlog=LISTEN_BACKLOG)
        self.registry.markInternal(self.key())
        return port

    def key(self) -> str:
        return "unix:" + self.path

    # Status.

    def status(self) -> dict:
        return {
            **self.generation.status(),
            "uptimeSeconds": round(time.monotonic() - self._started, 1),
            "startedAt": _iso(self._startedAt),
            "connections": self.connectionsInFlight(),
            "idleConnections": self.idleConnections(),
            "pidFile": self.pidFile,
            "lastRestart": self.lastRestart,
        }

    def connectionsInFlight(self) -> int:
        """
        Open connections of the app, except idle keep-alive ones (L{idleConnections});
        control connections are tracked (the drain waits for their last answer
        to be written) but not counted.
        """
        own = sum(
            1
            for p in self.tracker.open()
            if not isinstance(p, ControlProtocol) and not isIdleKeepAlive(p)
        )
        # --workers: a leader's connections are its workers' (txflip.workers).
        pool = getattr(self.generation.role, "pool", None)
        return own + (pool.connections() - pool.idleConnections() if pool is not None else 0)

    def idleConnections(self) -> int:
        """HTTP/1.x connections kept alive between two requests."""
        own = sum(1 for p in self.tracker.open() if isIdleKeepAlive(p))
        pool = getattr(self.generation.role, "pool", None)
        return own + (pool.idleConnections() if pool is not None else 0)

    # Reload.

    def reload(self, protocol: ControlProtocol) -> None:
        last = self.lastRestart or {}
        if last.get("outcome") == "successor-died":
            protocol.send(
                {"phase": "warning", "reason": f"the last restart failed: {last['reason']}"}
            )
        self._watchers.add(protocol)
        source = f"control socket (PID {protocol.peerPid})"
        self.generation.upgrade(source).addCallback(self._outcome, protocol)

    # Rollback.

    def rollback(self, protocol: ControlProtocol) -> None:
        generation = self.generation
        inherited = generation.inherited
        source = f"control socket (PID {protocol.peerPid})"

        def answered(refusal: str | None) -> None:
            if refusal is not None:
                protocol.finish(
                    {
                        "phase": "failed",
                        "refused": True,
                        "reason": refusal,
                        "pid": os.getpid(),
                        "generation": generation.number,
                    }
                )
                return
            protocol.finish(
                {
                    "phase": "rolled-back",
                    "pid": inherited.parentPid,
                    "generation": generation.number - 1,
                    "drainingPid": os.getpid(),
                    "drainingGeneration": generation.number,
                }
            )

        generation.rollbacks.ask(source, "by hand (txflip rollback)").addCallback(answered)

    def _outcome(self, outcome, protocol: ControlProtocol) -> None:
        if outcome.succeeded:
            # "done" follows once this generation starts draining.
            return
        self._watchers.discard(protocol)
        if outcome.reason.startswith("refused: "):
            protocol.finish(
                {
                    "phase": "failed",
                    "refused": True,
                    "reason": outcome.reason,
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                }
            )
            return
        protocol.finish(
            {
                "phase": "failed",
                "reason": outcome.reason,
                "childPid": outcome.childPid,
                "childGeneration": self._nextGeneration,
                "pid": os.getpid(),
                "generation": self.generation.number,
                "ms": int(outcome.seconds * 1000),
            }
        )

    def forget(self, protocol: ControlProtocol) -> None:
        self._watchers.discard(protocol)
        self._connections.discard(protocol)

    def _closeIdle(self) -> None:
        """This generation drains: connections that asked nothing yet must ask the next one."""
        for protocol in list(self._connections):
            if not protocol.asked:
                protocol.finish(
                    {"phase": "error", "reason": "this generation is draining; ask again"}
                )

    def _broadcast(self, message: dict, final: bool = False, now: bool = False) -> None:
        for protocol in list(self._watchers):
            if final:
                self._watchers.discard(protocol)
                (protocol.finishNow if now else protocol.finish)(message)
            else:
                protocol.send(message)

    def _observe(self, name: str, fields: dict) -> None:
        if name == "upgrade-started":
            self._upgradeStart = time.time()
            self._nextGeneration = fields.get("nextGeneration")
            self._broadcast(
                {
                    "phase": "started",
                    "childPid": fields.get("childPid"),
                    "childGeneration": self._nextGeneration,
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                }
            )
        elif name == "child-ready":
            self._broadcast(
                {"phase": "ready", "childPid": fields.get("childPid"), "ms": fields.get("ms")}
            )
        elif name == "child-prepared":
            self._broadcast(
                {"phase": "prepared", "childPid": fields.get("childPid"), "ms": fields.get("ms")}
            )
        elif name == "app-stopped":
            self._broadcast(
                {
                    "phase": "app-stopped",
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                    "ms": fields.get("ms"),
                }
            )
        elif name == "upgrade-succeeded":
            self._servedAt = self.generation.reactor.seconds()
            self._record("succeeded", fields.get("childPid"), "serving", fields.get("ms"))
            self._broadcast(
                {
                    "phase": "serving",
                    "childPid": fields.get("childPid"),
                    "childGeneration": self._nextGeneration,
                    "ms": fields.get("ms"),
                    "pauseMs": fields.get("pauseMs"),
                }
            )
        elif name == "upgrade-failed":
            self._record("failed", fields.get("childPid"), fields.get("reason"), fields.get("ms"))
        elif name == "successor-died":
            self._record("successor-died", fields.get("childPid"), fields.get("reason"), None)
        elif name == "upgrade-refused":
            self.lastRestart = {
                "outcome": "refused",
                "reason": fields.get("reason"),
                "at": _iso(time.time()),
            }
        elif name == "draining":
            self._closeIdle()
            if not fields.get("handedOver"):
                return
            self._broadcast(
                {
                    "phase": "draining",
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                    "connections": self.connectionsInFlight(),
                }
            )
            if not fields.get("moving"):
                self._done()
        elif name == "rolled-back":
            self._watchingWindow = False
            if self._windowTimer is not None and self._windowTimer.active():
                self._windowTimer.cancel()
            self._record("rolled-back", fields.get("childPid"), fields.get("reason"), None)
            self._broadcast(
                {
                    "phase": "failed",
                    "rolledBack": True,
                    "reason": fields.get("reason"),
                    "childPid": fields.get("childPid"),
                    "childGeneration": self._nextGeneration,
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                    "ms": None,
                },
                final=True,
            )
        elif name == "exiting" and self._watchingWindow:
            self._watchingWindow = False
            self._finalDone(now=True)
        elif name == "connections-moved":
            self._broadcast(
                {
                    "phase": "moved",
                    "pid": os.getpid(),
                    "generation": self.generation.number,
                    "childGeneration": self._nextGeneration,
                    "moved": fields.get("moved"),
                    "movedKinds": fields.get("movedKinds"),
                    "stayed": fields.get("stayed"),
                    "failure": fields.get("failure"),
                    "ms": fields.get("ms"),
                    "waiting": fields.get("waiting", 0),
                    "arriving": fields.get("arriving", False),
                }
            )
            # The first report ends the reload: what waits for a request in
            # flight moves (or drains) later, and the log says so.
            self._done()

    def _done(self) -> None:
        generation = self.generation
        if generation.rollbackOn5xx and generation.rollbackWindow:
            # --rollback-on-5xx: the outcome is known once the window is over
            # (this generation exits) or the release rolled back.
            if not self._watchingWindow:
                reactor = generation.reactor
                self._watchingWindow = True
                # Answered at the window's end, not at this generation's exit:
                # the drain waits for this connection's last answer.
                left = generation.rollbackWindow - (reactor.seconds() - self._servedAt)
                self._windowTimer = reactor.callLater(max(left, 0), self._windowOver)
                self._broadcast(
                    {
                        "phase": "watching",
                        "seconds": generation.rollbackWindow,
                        "ratio": generation.rollbackOn5xx,
                        "childPid": (self.lastRestart or {}).get("pid"),
                        "childGeneration": self._nextGeneration,
                    }
                )
            return
        self._finalDone()

    def _windowOver(self) -> None:
        self._windowTimer = None
        if self._watchingWindow:
            self._watchingWindow = False
            self._finalDone()

    def _finalDone(self, now: bool = False) -> None:
        self._broadcast(
            {
                "phase": "done",
                "childPid": (self.lastRestart or {}).get("pid"),
                "childGeneration": self._nextGeneration,
            },
            final=True,
            now=now,
        )

    def _record(self, outcome: str, childPid, reason, ms) -> None:
        self.lastRestart = {
            "outcome": outcome,
            "generation": self._nextGeneration,
            "pid": childPid,
            "reason": reason,
            "ms": ms,
            "at": _iso(self._upgradeStart or time.time()),
        }
