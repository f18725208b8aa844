"""
systemd socket activation: the first generation adopts the sockets systemd
passed (C{LISTEN_FDS}, C{LISTEN_FDNAMES}, checked against C{LISTEN_PID});
later generations inherit them from their parent like any listener.

Each passed socket becomes an inherited listener keyed by its address, so a
C{--listen} entry for the same address (C{tcp:8080} for C{ListenStream=8080}
on IPv4, and so on) adopts it, and so does an app's own C{listenTCP}. A
C{--listen systemd:name=NAME} or C{systemd:index=N} entry (Twisted's syntax,
C{domain=} accepted and ignored) names a passed socket by its
C{FileDescriptorName=} or by its order. With no C{--listen} at all, every
passed socket is served.

Reading the variables must happen before anything imports
C{twisted.internet.endpoints}, which deletes C{LISTEN_PID} and C{LISTEN_FDS}
from C{os.environ} at import (docs/design.rst). twistd may import it while it
loads plugins, before txflip runs; so when they are gone from C{os.environ},
they are read from C{/proc/self/environ}, the environment this process was
started with, where C{LISTEN_PID} still says whether they were meant for us.
Either way they are removed from C{os.environ}, so no process the app starts
sees them; the next txflip generation gets txflip's own L{ENV_CARRIED}.

Descriptors systemd passes back from its fd store (L{txflip.systemd.fdstore})
carry the names txflip gave them: each is adopted as the listener its name
stands for, and is not one of the C{.socket} unit's sockets that
C{systemd:name=}, C{systemd:index=} and the no-C{--listen} default speak of.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass, field

from txflip.core.listening import tcpKey, unixKey
from txflip.core.log import log
from txflip.systemd.fdnames import isOurs, keyForName

ENV_CARRIED = "TXFLIP_ACTIVATION"
LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """Unusable socket activation; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class ActivatedSocket:
    """One socket systemd passed: its descriptor, C{FileDescriptorName=} and address key."""

    fd: int
    name: str
    key: str
    family: str


@dataclass
class Activation:
    """
    What socket activation gave this service.

    @ivar sockets: the descriptors to adopt (first generation only).
    @ivar keys: the address key of each socket of a C{.socket} unit, in systemd's order.
    @ivar names: each of those sockets' C{FileDescriptorName=}, in the same order.
    @ivar stored: the names of the descriptors passed back from the fd store.
    """

    sockets: list[ActivatedSocket] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    source: str = "environment"
    stored: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def childEnvironment(self) -> dict[str, str]:
        if not self.keys:
            return {}
        return {ENV_CARRIED: json.dumps({"keys": self.keys, "names": self.names})}

    def storedKeys(self) -> list[str]:
        """The keys of the sockets passed back from the fd store."""
        return [s.key for s in self.sockets if isOurs(s.name)]

    def inheritedListeners(self):
        from txflip.core.handoff import InheritedListener

        return [InheritedListener(s.fd, s.key, s.family) for s in self.sockets]

    # --listen entries.

    def resolve(self, description: str) -> str:
        """
        The C{--listen} description to use for C{description}: a C{systemd:}
        entry becomes the address of the passed socket it names, so that the
        listener registry adopts it; anything else is returned as it is.
        """
        if not description.startswith("systemd:"):
            return description
        params = _parseSystemd(description)
        if "name" in params:
            name = params["name"]
            if name not in self.names:
                raise ActivationError(
                    f"--listen {description}: systemd passed no socket named {name!r} "
                    f"(names: {', '.join(self.names) or 'none'}); set FileDescriptorName={name} "
                    "in the .socket unit, or use systemd:index=N"
                )
            key = self.keys[self.names.index(name)]
        elif "index" in params:
            try:
                index = int(params["index"])
                key = self.keys[index]
            except (ValueError, IndexError):
                raise ActivationError(
                    f"--listen {description}: systemd passed {len(self.keys)} socket(s); "
                    f"use an index from 0 to {len(self.keys) - 1}"
                    if self.keys
                    else f"--listen {description}: this process was not socket-activated "
                    "(no LISTEN_FDS for this PID); start it from a .socket unit"
                ) from None
        else:
            raise ActivationError(
                f"--listen {description}: say which socket, e.g. systemd:name=web "
                "or systemd:index=0"
            )
        return descriptionForKey(key)

    def defaultListen(self) -> list[str]:
        """With no C{--listen}: serve every passed socket."""
        return [descriptionForKey(key) for key in self.keys]


def _parseSystemd(description: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in description.split(":")[1:]:
        if "=" in part:
            name, value = part.split("=", 1)
            params[name] = value
        elif part:
            params["name"] = part
    return params


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def descriptionForKey(key: str) -> str:
    """The Twisted endpoint description that listens on the address C{key} names."""
    if key.startswith("unix:"):
        return "unix:" + _escape(key[len("unix:") :])
    host, _, port = key[len("tcp:") :].rpartition(":")
    if host.startswith("["):
        return f"tcp6:{port}:interface={_escape(host[1:-1])}"
    return f"tcp:{port}:interface={host}"


def _procEnviron() -> dict[str, str]:
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    found = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name.decode(errors="replace") in _VARIABLES:
            found[name.decode()] = value.decode(errors="replace")
    return found


def _keyOf(fd: int, name: str) -> tuple[str, str]:
    """The address key and family name of passed descriptor C{fd}."""
    where = f"socket-activated descriptor {fd} ({name})"
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise ActivationError(f"{where} is not open ({e.strerror}): check LISTEN_FDS") from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"{where} is not a socket: use ListenStream= in the .socket unit")
    skt = socket.socket(fileno=fd)
    try:
        if skt.type != socket.SOCK_STREAM or not skt.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            raise ActivationError(
                f"{where} is not a listening stream socket: use ListenStream= with Accept=no"
            )
        address = skt.getsockname()
        family = skt.family
    finally:
        skt.detach()
    if family == socket.AF_INET:
        return tcpKey(address[1], address[0]), "AF_INET"
    if family == socket.AF_INET6:
        return tcpKey(address[1], address[0]), "AF_INET6"
    if family == socket.AF_UNIX and isinstance(address, str) and address.startswith("/"):
        return unixKey(address), "AF_UNIX"
    raise ActivationError(f"{where} has an address txflip cannot hand over: {address!r}")


def takeActivation(environ: dict | None = None, pid: int | None = None) -> Activation:
    """
    Read and remove socket activation (systemd's variables, or txflip's copy
    in a later generation).

    @param environ: C{os.environ} by default; when it does, and systemd's
        variables are gone from it, C{/proc/self/environ} is read instead.
    """
    useProc = environ is None
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    carried = environ.pop(ENV_CARRIED, None)
    variables = {name: environ.pop(name, None) for name in _VARIABLES}
    if carried is not None:
        try:
            data = json.loads(carried)
            return Activation([], list(data["keys"]), list(data["names"]))
        except (ValueError, KeyError, TypeError):
            raise ActivationError(f"malformed {ENV_CARRIED}; do not set it by hand") from None
    source = "environment"
    if variables["LISTEN_FDS"] is None and useProc:
        variables = _procEnviron()
        source = "/proc/self/environ (LISTEN_FDS was already gone from os.environ)"
    if variables.get("LISTEN_PID") != str(pid) or not variables.get("LISTEN_FDS"):
        return Activation()
    try:
        count = int(variables["LISTEN_FDS"])
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={variables['LISTEN_FDS']!r} is not a number") from None
    names = (variables.get("LISTEN_FDNAMES") or "").split(":")
    if len(names) != count:
        names = ["unknown"] * count
    activation = Activation(source=source)
    for offset in range(count):
        fd = LISTEN_FDS_START + offset
        name = names[offset]
        key, family = _keyOf(fd, name)
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        if isOurs(name):
            key = keyForName(name) or key
            activation.stored.append(name)
        if any(s.key == key for s in activation.sockets):
            log.warn(
                "socket activation: closing descriptor {fd} ({name}): {key} was passed twice",
                fd=fd,
                name=name,
                key=key,
            )
            os.close(fd)
            continue
        activation.sockets.append(ActivatedSocket(fd, name, key, family))
        if not isOurs(name):
            activation.keys.append(key)
            activation.names.append(name)
    return activation
