"""
The transfer channel: a C{SOCK_SEQPACKET} socketpair between a generation and
its successor, over which open connections move (L{txflip.core.connmove}
sends, L{txflip.core.connadopt} receives).

Each packet is one message: a JSON header line, then raw bytes (the part of a
request already read but not yet parsed), and at most one descriptor passed
with C{SCM_RIGHTS}. The exchange for one connection is a three-way handshake,
so that at no moment do both generations read it:

    parent -> child   offer <id> + descriptor   the parent has stopped reading it
    child  -> parent  took <id>                 the child holds a copy, not reading yet
                      (or refused <id> <why>: the child closed its copy)
    parent -> child   yours <id>                the parent closes its copy (no FIN, no RST)
                                                and the child starts reading

A child that closes the channel before C{yours} closes the copies it holds,
and the parent, which still holds its own, keeps serving those connections.

An offer for a protocol that carries its own state (L{txflip.core.appmove})
also names its kind and its state's length, and its payload is the state then
the unread bytes; its C{yours} carries what the old generation's app wrote
while the connection was in transfer.
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections import deque
from collections.abc import Callable

from twisted.internet import error, main
from twisted.python.failure import Failure

PACKET_LIMIT = 128 * 1024
"""
The largest packet: a header, and unread bytes (at most
L{txflip.core.movable.BUFFERED_LIMIT}) after an app's state, if any.
"""

_READS_PER_WAKE = 64
_FDS_PER_PACKET = 4

PacketHandler = Callable[[dict, bytes, list[int]], None]
Sent = Callable[[], None]


def transferPair() -> tuple[socket.socket, socket.socket]:
    """A new channel: this generation's end (non-blocking) and the end to hand down."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


def encode(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode(packet: bytes) -> tuple[dict, bytes]:
    """The header and the payload of a packet; raise L{ValueError} on anything else."""
    line, newline, payload = packet.partition(b"\n")
    if not newline:
        raise ValueError("packet without a header line")
    header = json.loads(line)
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ValueError("packet header is not an object with an op")
    return header, payload


def receivePacket(skt: socket.socket) -> tuple[bytes, list[int], int]:
    """
    One packet: its bytes, its descriptors (close-on-exec) and the message flags.

    C{socket.recv_fds} would do, but before Python 3.12 it drops its C{flags}
    argument, and with it C{MSG_CMSG_CLOEXEC}: the received descriptors
    would be inherited by whatever the app starts.
    """
    fdSize = array.array("i").itemsize
    data, ancillary, flags, _ = skt.recvmsg(
        PACKET_LIMIT, socket.CMSG_LEN(_FDS_PER_PACKET * fdSize), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fdSize])
    return data, list(fds), flags


def closeDescriptors(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class PacketChannel:
    """
    One end of the transfer channel, driven by the reactor.

    Packets that the peer's queue cannot take yet wait here, in order, and go
    once the socket is writable. Every received descriptor is close-on-exec;
    every descriptor given to L{send} is closed here once sent (or dropped).

    @param onPacket: called with the header, the payload and the descriptors
        of each packet; it owns the descriptors.
    @param onClosed: called once, with a reason, when the channel is gone.
    """

    def __init__(
        self,
        reactor,
        skt: socket.socket,
        onPacket: PacketHandler,
        onClosed: Callable[[str], None],
    ) -> None:
        self._reactor = reactor
        self._socket = skt
        self._socket.setblocking(False)
        self._fileno = skt.fileno()
        self._onPacket = onPacket
        self._onClosed = onClosed
        self._outgoing: deque[tuple[bytes, list[int], Sent | None]] = deque()
        self._writing = False
        self._closeWhenSent: str | None = None
        self.closed = False
        reactor.addReader(self)

    # IReadDescriptor / IWriteDescriptor.

    def fileno(self) -> int:
        return -1 if self.closed else self._fileno

    def logPrefix(self) -> str:
        return "txflip-transfer"

    def doRead(self):
        for _ in range(_READS_PER_WAKE):
            if self.closed:
                return None
            try:
                data, fds, flags = receivePacket(self._socket)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                return main.CONNECTION_LOST
            if not data and not fds:
                return main.CONNECTION_DONE
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                closeDescriptors(fds)
                self.close("a packet arrived truncated")
                return None
            try:
                header, payload = decode(data)
            except ValueError as e:
                closeDescriptors(fds)
                self.close(f"malformed packet: {e}")
                return None
            self._onPacket(header, payload, fds)
        return None

    def doWrite(self):
        self._flush()
        return None

    def connectionLost(self, reason: Failure) -> None:
        why = "the other generation closed it"
        if not reason.check(error.ConnectionDone):
            why = f"it failed: {reason.getErrorMessage()}"
        self.close(why)

    # Sending.

    def send(
        self, header: dict, payload: bytes = b"", fds: list[int] = (), onSent: Sent | None = None
    ) -> None:
        """
        Send a packet now, or as soon as the peer can take it.

        C{onSent} is called once the packet is in the peer's queue: never, if
        the channel closes first. Raise L{OSError} if the channel is closed.
        """
        if self.closed or self._closeWhenSent is not None:
            closeDescriptors(list(fds))
            raise OSError("the transfer channel is closed")
        self._outgoing.append((encode(header, payload), list(fds), onSent))
        self._flush()

    def _flush(self) -> None:
        while self._outgoing and not self.closed:
            packet, fds, onSent = self._outgoing[0]
            try:
                socket.send_fds(self._socket, [packet], fds)
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._writing = True
                    self._reactor.addWriter(self)
                return
            except OSError as e:
                self.close(f"sending failed: {e.strerror or e}")
                return
            self._outgoing.popleft()
            closeDescriptors(fds)
            if onSent is not None:
                onSent()
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self)
        if self._closeWhenSent is not None and not self._outgoing:
            self.close(self._closeWhenSent)

    def closeWhenSent(self, why: str) -> None:
        """Close once every packet already given to L{send} is in the peer's queue."""
        self._closeWhenSent = why
        self._flush()

    def close(self, why: str = "closed here") -> None:
        """Close this end (packets not yet sent are dropped) and report why, once."""
        if self.closed:
            return
        self._reactor.removeReader(self)
        if self._writing:
            self._reactor.removeWriter(self)
            self._writing = False
        for _, fds, _ in self._outgoing:
            closeDescriptors(fds)
        self._outgoing.clear()
        self.closed = True
        self._socket.close()
        self._onClosed(why)
