"""
systemd socket activation, for real: Debian's C{systemd-socket-activate}
binds the sockets and execs C{twistd flip} with C{LISTEN_FDS},
C{LISTEN_FDNAMES} and C{LISTEN_PID}, as systemd does for a .socket unit.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeJSONApp
from tests.support.load import Load
from tests.support.procs import Flip, freePort, httpGet, servedBy, shortTempDir, waitFor
from txflip.systemd import activation

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


EARLY_PLUGIN = '''\
"""A plugin that imports twisted.internet.endpoints when twistd loads it, as
many do; the import deletes LISTEN_PID and LISTEN_FDS from os.environ."""
import twisted.internet.endpoints  # noqa: F401
from twisted.application.service import ServiceMaker

early = ServiceMaker("early", "os", "Imports endpoints at load.", "early-endpoints")
'''


class ActivatedFlip(Flip):
    """C{twistd flip} exec'd by C{systemd-socket-activate}, which listens first."""

    def __init__(self, testCase, ports: list[int], names: list[str], args, env=None) -> None:
        super().__init__(testCase, args, env=env)
        self.ports = ports
        self.names = names

    def command(self) -> list[str]:
        passed = ["PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "TXFLIP_DEMO_DB"]
        prefix = [SOCKET_ACTIVATE, "--fdname=" + ":".join(self.names)]
        for port in self.ports:
            prefix += ["-l", f"127.0.0.1:{port}"]
        for name in passed:
            if name in self.env:
                prefix += ["-E", f"{name}={self.env[name]}"]
        return [*prefix, *super().command()]

    def activate(self) -> int:
        """Start; systemd-socket-activate execs flip on the first connection."""
        self.start(waitReady=False)
        port = self.ports[0]
        waitFor(lambda: _listening(port), f"systemd-socket-activate listening on {port}")
        pid = waitFor(lambda: servedBy(port), "the first request, which starts flip")
        self.waitServing(pid)
        return pid


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class SocketActivateTests(TestCase):
    def setUp(self) -> None:
        if SOCKET_ACTIVATE is None:
            self.skipTest("systemd-socket-activate is not installed (Debian package systemd)")

    def test_fiveRestartsUnderLoad(self) -> None:
        """
        The first generation adopts the activated socket by name; 5 restarts
        under load hand it on with zero failed requests.
        """
        port = freePort()
        flip = ActivatedFlip(
            self,
            [port],
            ["web"],
            ["--listen", "systemd:domain=INET:name=web"],
        )
        pids = [flip.activate()]
        self.assertIn(
            f"socket activation: adopting web=tcp:127.0.0.1:{port}, read from environment",
            flip.log(),
        )
        with Load("127.0.0.1", port) as load:
            pids += flip.restartsUnderLoad(load, 5)
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual(len(set(pids)), 6, pids)
        self.assertEqual(servedBy(port), pids[-1])
        print(f"\n  socket activation: {load.totalRequests()} requests, 5 restarts, 0 failed")

    def test_byAddressAndByOrderNothingLeaks(self) -> None:
        """
        A plain --listen entry adopts the passed socket with its address, a
        systemd:index= entry the one at that position; neither the app nor
        the processes it starts see LISTEN_* or txflip's variables.
        """
        first, second = freePort(), freePort()
        workdir = shortTempDir(self)
        flip = ActivatedFlip(
            self,
            [first, second],
            ["plain", "other"],
            [
                "--listen",
                f"tcp:{first}:interface=127.0.0.1",
                "--listen",
                "systemd:index=1",
                "--app",
                writeJSONApp(workdir, 1),
            ],
            env=appEnv(workdir),
        )
        flip.activate()
        flip.restart()
        served = flip.pid()
        hidden = {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", activation.ENV_CARRIED}
        for port in (first, second):
            status, _, body = httpGet("127.0.0.1", port, "/env")
            self.assertEqual(status, 200)
            seen = json.loads(body)
            self.assertEqual(seen["pid"], served)
            self.assertEqual(hidden & set(seen["childEnv"]), set())
            self.assertEqual(hidden & set(seen["ownEnv"]), set())

    def test_endpointsImportedFirst(self) -> None:
        """
        When a plugin imports twisted.internet.endpoints before flip runs,
        LISTEN_FDS is gone from os.environ; flip still adopts the socket,
        reading the environment it was started with.
        """
        plugins = shortTempDir(self)
        os.makedirs(os.path.join(plugins, "twisted", "plugins"))
        with open(os.path.join(plugins, "twisted", "plugins", "txflip_test_early.py"), "w") as f:
            f.write(EARLY_PLUGIN)
        port = freePort()
        flip = ActivatedFlip(
            self,
            [port],
            ["web"],
            ["--listen", "systemd:name=web"],
            env={"PYTHONPATH": os.pathsep.join([plugins, os.environ.get("PYTHONPATH", "")])},
        )
        first = flip.activate()
        self.assertIn("read from /proc/self/environ", flip.log())
        second = flip.restart()
        self.assertNotEqual(first, second)
        self.assertEqual(servedBy(port), second)

    def test_unknownName(self) -> None:
        """A --listen naming a socket systemd did not pass: one line saying how to fix it."""
        port = freePort()
        flip = ActivatedFlip(self, [port], ["web"], ["--listen", "systemd:name=api"])
        flip.start(waitReady=False)
        waitFor(lambda: _listening(port), "systemd-socket-activate listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            pass
        waitFor(lambda: flip.process.poll() is not None, "flip to exit")
        self.assertEqual(flip.process.returncode, 1)
        lines = [line for line in flip.stderr().splitlines() if "twistd flip: error" in line]
        self.assertEqual(len(lines), 1, flip.stderr())
        self.assertIn("systemd passed no socket named 'api' (names: web)", lines[0])
        self.assertIn("FileDescriptorName=api", lines[0])
