"""
systemd's notification protocol (sd_notify), written from the protocol: one
datagram of C{KEY=VALUE} lines sent to the C{AF_UNIX} socket named by
C{NOTIFY_SOCKET} (a path, or C{@name} for the abstract namespace).

What each generation says:

  - first start: C{READY=1}, C{MAINPID=}, C{STATUS=};
  - a restart begins: the parent sends C{RELOADING=1} and C{MONOTONIC_USEC=};
  - the new generation serves: the child sends C{MAINPID=<own pid>} and
    C{READY=1} (systemd accepts this only with C{NotifyAccess=all});
  - the restart failed: the parent sends C{READY=1} again, with the reason in
    C{STATUS=};
  - a real shutdown: C{STOPPING=1}; a parent that handed over never sends it;
  - C{WATCHDOG=1} every half C{WATCHDOG_USEC}, when systemd asked for it.

The variables are removed from C{os.environ} at start so no process the app
starts can talk to systemd in this service's name; the next txflip generation
gets them deliberately, in L{ENV_CARRIED}.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from twisted.internet.task import LoopingCall

from txflip.core.generation import Generation
from txflip.core.log import log

ENV_CARRIED = "TXFLIP_SYSTEMD"
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True)
class NotifySettings:
    """Where to notify systemd, and how often the watchdog wants to hear from us."""

    socket: str | None = None
    watchdogUsec: int | None = None

    def childEnvironment(self) -> dict[str, str]:
        """What the next txflip generation needs to go on notifying."""
        if not self.socket:
            return {}
        return {ENV_CARRIED: json.dumps({"socket": self.socket, "watchdogUsec": self.watchdogUsec})}


def _positiveInt(text: str | None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value and value > 0 else None


def takeFromEnvironment(environ: dict | None = None, pid: int | None = None) -> NotifySettings:
    """
    Read and remove systemd's notification variables (or txflip's carried copy).

    C{WATCHDOG_USEC} counts only when C{WATCHDOG_PID} is unset or names this
    process, as sd_watchdog_enabled(3) says.
    """
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    carried = environ.pop(ENV_CARRIED, None)
    raw = {name: environ.pop(name, None) for name in _SYSTEMD_VARIABLES}
    if carried is not None:
        try:
            data = json.loads(carried)
            return NotifySettings(
                data.get("socket") or None, _positiveInt(data.get("watchdogUsec"))
            )
        except (ValueError, AttributeError, TypeError):
            log.warn("ignoring malformed {name}", name=ENV_CARRIED)
            return NotifySettings()
    watchdog = _positiveInt(raw["WATCHDOG_USEC"])
    if raw["WATCHDOG_PID"] is not None and raw["WATCHDOG_PID"] != str(pid):
        watchdog = None
    return NotifySettings(raw["NOTIFY_SOCKET"] or None, watchdog)


def socketAddress(name: str) -> str | bytes:
    """
    The address to send to: a filesystem path, or an abstract-namespace name.

    @raise ValueError: for anything else (systemd also knows C{vsock:}, which
        is not supported here).
    """
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    raise ValueError(f"NOTIFY_SOCKET {name!r} is neither an absolute path nor an @abstract name")


def formatMessage(fields: list[tuple[str, object]]) -> bytes:
    """C{KEY=VALUE} lines; a value may not contain a newline."""
    lines = []
    for key, value in fields:
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


class Notifier:
    """Sends datagrams to one notification socket, never blocking the reactor."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._target = socketAddress(address)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._warned = False

    def send(self, *fields: tuple[str, object]) -> bool:
        try:
            self._socket.sendto(formatMessage(list(fields)), self._target)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warn(
                    "cannot notify systemd at {address}: {error}", address=self.address, error=e
                )
            return False
        return True

    def close(self) -> None:
        self._socket.close()


def monotonicUsec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SystemdReporter:
    """Turns this generation's lifecycle events into sd_notify messages."""

    def __init__(
        self,
        reactor,
        notifier: Notifier,
        generation: Generation,
        watchdogUsec: int | None,
        hidden: frozenset[str] = frozenset(),
    ) -> None:
        self._reactor = reactor
        self._hidden = hidden
        self._notifier = notifier
        self._generation = generation
        self._watchdogUsec = watchdogUsec
        self._watchdog: LoopingCall | None = None
        self._stoppingSent = False
        self._served = False
        self._handedOver = False
        self._nextGeneration: int | None = None

    def _who(self) -> str:
        return f"generation {self._generation.number} (PID {os.getpid()})"

    def subscribe(self) -> None:
        self._generation.events.subscribe(self.observe)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)

    def observe(self, name: str, fields: dict) -> None:
        handler = getattr(self, "_on_" + name.replace("-", "_"), None)
        if handler is not None:
            handler(**fields)

    def _on_serving(self, first: bool, listeners: list, **_: object) -> None:
        self._served = True
        on = ", ".join(key for key in listeners if key not in self._hidden) or "no listener"
        self._notifier.send(
            ("MAINPID", os.getpid()),
            ("READY", 1),
            ("STATUS", f"{self._who()} serving on {on}"),
        )
        self._startWatchdog()

    def _on_upgrade_started(self, childPid: int | None, nextGeneration: int, **_: object) -> None:
        self._nextGeneration = nextGeneration
        self._notifier.send(
            ("RELOADING", 1),
            ("MONOTONIC_USEC", monotonicUsec()),
            ("STATUS", f"starting generation {nextGeneration} as PID {childPid}"),
        )

    def _on_upgrade_failed(self, childPid: int | None, reason: str, **_: object) -> None:
        self._notifier.send(
            ("READY", 1),
            (
                "STATUS",
                f"restart failed: generation {self._nextGeneration} (PID {childPid}) {reason}; "
                f"{self._who()} keeps serving",
            ),
        )

    def _on_upgrade_refused(self, reason: str, **_: object) -> None:
        if self._generation.simpleModeReason is not None:
            # Nothing will ever answer a reload: end systemd's wait at once.
            self._notifier.send(("RELOADING", 1), ("MONOTONIC_USEC", monotonicUsec()))
            self._notifier.send(("READY", 1), ("STATUS", f"restart refused: {reason}"))
        else:
            self._notifier.send(("STATUS", f"restart refused: {reason}"))

    def _on_upgrade_succeeded(self, childPid: int | None, **_: object) -> None:
        self._handedOver = True
        # The child's own pings take over; ours would hide a hung successor.
        self._stopWatchdog()
        self._notifier.send(
            (
                "STATUS",
                f"handed over to generation {self._nextGeneration} (PID {childPid}); draining",
            )
        )

    def _on_successor_died(self, reason: str, **_: object) -> None:
        self._handedOver = False
        # This generation serves again: it is the service's main process.
        self._notifier.send(
            ("MAINPID", os.getpid()),
            ("READY", 1),
            (
                "STATUS",
                f"{reason}; {self._who()} serves",
            ),
        )
        self._startWatchdog()

    def _on_draining(self, handedOver: bool, **_: object) -> None:
        if not handedOver:
            self._shutdown()

    def _shutdown(self) -> None:
        # A generation that never served (a failed release) is not the service:
        # STOPPING=1 from it would make systemd stop the one that serves.
        if not self._served or self._handedOver or self._stoppingSent:
            return
        self._stoppingSent = True
        self._notifier.send(
            ("STOPPING", 1),
            (
                "STATUS",
                f"{self._who()} shutting down, draining",
            ),
        )

    # The watchdog.

    def _startWatchdog(self) -> None:
        if not self._watchdogUsec or self._watchdog is not None:
            return
        self._watchdog = LoopingCall(self._notifier.send, ("WATCHDOG", 1))
        self._watchdog.clock = self._reactor
        self._watchdog.start(self._watchdogUsec / 2_000_000, now=True)

    def _stopWatchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()


def install(reactor, generation, settings: NotifySettings, hidden=()) -> SystemdReporter | None:
    """
    Report to systemd if it is listening, and pass the settings on to the next generation.

    @param hidden: listener keys not worth naming in C{STATUS=} (the control socket).
    """
    if not settings.socket:
        return None
    try:
        notifier = Notifier(settings.socket)
    except ValueError as e:
        log.warn("not notifying systemd: {why}", why=e)
        return None
    generation.childEnvironment.update(settings.childEnvironment())
    reporter = SystemdReporter(
        reactor, notifier, generation, settings.watchdogUsec, frozenset(hidden)
    )
    reporter.subscribe()
    return reporter
