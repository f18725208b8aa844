"""
What arrives over the transfer channel (L{txflip.core.transfer}): every
descriptor is close-on-exec, so nothing the app starts inherits a moved
connection or a channel.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from txflip.core.transfer import PacketChannel, closeDescriptors, transferPair


class ReceivedDescriptorTests(TestCase):
    def test_receivedDescriptorsAreCloseOnExec(self):
        """
        Descriptors sent inheritable arrive close-on-exec, with the packet's
        header and payload intact.
        """
        ours, theirs = transferPair()
        self.addCleanup(theirs.close)
        received = []
        channel = PacketChannel(
            reactor,
            ours,
            lambda header, payload, fds: received.append((header, payload, fds)),
            lambda why: None,
        )
        self.addCleanup(channel.close)
        pipe = os.pipe()
        self.addCleanup(closeDescriptors, list(pipe))
        for fd in pipe:
            os.set_inheritable(fd, True)
        socket.send_fds(theirs, [b'{"op":"offer","id":1}\nbytes'], list(pipe))
        channel.doRead()
        [(header, payload, fds)] = received
        self.addCleanup(closeDescriptors, fds)
        self.assertEqual((header, payload, len(fds)), ({"op": "offer", "id": 1}, b"bytes", 2))
        self.assertEqual([os.get_inheritable(fd) for fd in fds], [False, False])
