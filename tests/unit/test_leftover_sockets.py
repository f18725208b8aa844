"""
L{ListenerRegistry.removeCreatedPaths}: a generation that never served removes
the unix socket files it made, and never one it inherited or one that is not
its own any more.
"""

from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from txflip.core.handoff import InheritedListener
from txflip.core.listeners import ListenerRegistry
from txflip.core.listening import unixKey


class RemoveCreatedPathsTests(TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="txflip-test-")

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _registry(self, inherited=()) -> ListenerRegistry:
        registry = ListenerRegistry(reactor, list(inherited))
        # Stop accepting without touching the paths: what is on disk is what is tested.
        self.addCleanup(
            lambda: gatherResults([maybeDeferred(lst.release) for lst in registry.active()])
        )
        return registry

    def test_removesOnlyItsOwn(self):
        """The socket it bound goes; the inherited one stays, as its parent still uses it."""
        inheritedPath = self._path("inherited.sock")
        parentSocket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(parentSocket.close)
        parentSocket.bind(inheritedPath)
        parentSocket.listen()
        fd = os.dup(parentSocket.fileno())
        registry = self._registry([InheritedListener(fd, unixKey(inheritedPath), "AF_UNIX")])
        factory = Factory.forProtocol(Protocol)
        registry.standIn.listenUNIX(inheritedPath, factory)
        registry.standIn.listenUNIX(self._path("own.sock"), factory)

        registry.removeCreatedPaths()

        self.assertEqual(os.listdir(self.directory), ["inherited.sock"])

    def test_leavesAReplacedPath(self):
        """A path that now holds another socket (a newer server's) is left alone."""
        path = self._path("app.sock")
        registry = self._registry()
        registry.standIn.listenUNIX(path, Factory.forProtocol(Protocol))
        os.unlink(path)
        newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(newer.close)
        newer.bind(path)

        registry.removeCreatedPaths()

        self.assertEqual(os.listdir(self.directory), ["app.sock"])
