"""
A line-based chat server whose connections move to the next generation at a
restart: no client is disconnected, and each keeps its nickname.

    python movable_chat.py 8080 /tmp/chat.pid
    nc 127.0.0.1 8080                  # type a nickname, then lines to say
    kill -HUP $(cat /tmp/chat.pid)     # the next generation takes over; nobody notices
"""

import os
import sys

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

import txflip


@implementer(txflip.IMovable)
class Chat(LineReceiver):
    """The first line is the nickname; every later one is said to everyone."""

    delimiter = b"\n"

    def connectionMade(self):
        self.nick = None
        self.factory.members.add(self)
        self.sendLine(b"nickname?")

    def lineReceived(self, line):
        text = line.decode("utf-8", "replace").strip()
        if self.nick is None:
            self.nick = text
            self.sendLine(f"welcome {self.nick} (PID {os.getpid()})".encode())
            return
        for member in self.factory.members:
            member.sendLine(f"{self.nick}: {text} (PID {os.getpid()})".encode())

    def connectionLost(self, reason):
        # Also called on the old generation once the connection has moved
        # (reason: txflip's ConnectionMoved): this process no longer serves it.
        self.factory.members.discard(self)

    # txflip.IMovable: the nickname is all this connection's state.

    def saveMoved(self):
        return (self.nick or "").encode()

    def restoreMoved(self, state):
        # In place of connectionMade: the client was greeted by the old generation.
        self.nick = state.decode() or None
        self.factory.members.add(self)


class ChatFactory(Factory):
    protocol = Chat

    def __init__(self):
        self.members = set()


if __name__ == "__main__":
    from twisted.internet import reactor

    port, pidFile = sys.argv[1], sys.argv[2]
    flip = txflip.Generation(reactor, pidFile=pidFile)
    flip.handleSignals()
    flip.listen(f"tcp:{port}:interface=127.0.0.1", ChatFactory())
    flip.ready()
    reactor.run()
