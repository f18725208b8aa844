"""
Hearing an app that speaks sd_notify itself (as Matrix Synapse does): its own
C{READY=1} is its readiness.

The app gets a C{NOTIFY_SOCKET} of this generation's own, a datagram socket in
a private directory, and never systemd's: txflip alone tells systemd which
process is the service (C{MAINPID=}) and when it is ready.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from txflip.core.generation import Generation
from txflip.core.log import log
from txflip.systemd.notify import ENV_CARRIED

APP_READY = "the app's sd_notify READY=1"


class AppNotifyListener(DatagramProtocol):
    """Receives the app's sd_notify datagrams; C{READY=1} makes the generation ready."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
        self._ready: Deferred = Deferred()
        self.directory: str | None = None
        self.path: str | None = None

    def listen(self, reactor) -> None:
        """Open the socket, show it to the app as C{NOTIFY_SOCKET}, and wait for C{READY=1}."""
        self.directory = tempfile.mkdtemp(prefix="txflip-notify-")
        self.path = os.path.join(self.directory, "notify")
        self._datagramPort = reactor.listenUNIXDatagram(self.path, self, mode=0o600)
        os.environ["NOTIFY_SOCKET"] = self.path
        self._generation.waitFor(self._ready, APP_READY)
        # The next generation must not take this socket for systemd's: carry
        # systemd's settings (or their absence) explicitly.
        self._generation.childEnvironment.setdefault(
            ENV_CARRIED, json.dumps({"socket": None, "watchdogUsec": None})
        )
        self._generation.events.subscribe(self._observe)
        reactor.addSystemEventTrigger("after", "shutdown", self.close)

    def datagramReceived(self, data: bytes, addr) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name == "READY" and value == "1" and not self._ready.called:
                log.info("the app says READY=1")
                self._ready.callback(None)
            elif name == "STATUS":
                log.info("the app's status: {status}", status=value)

    def _observe(self, name: str, fields: dict) -> None:
        if name == "exiting":
            self.close()

    def close(self) -> None:
        """Remove the socket and its directory."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
