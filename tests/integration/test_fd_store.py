"""
Listening sockets that outlive every process: systemd's file descriptor store.

Each generation stores its listeners (C{FDSTORE=1}, C{FDNAME=}, the socket as
C{SCM_RIGHTS}); when the service is started again, after a crash or a
C{systemctl restart}, the stored sockets come back in C{LISTEN_FDS} and are
adopted by name, so connections made while no process ran wait in the queue
and are answered.

systemd itself cannot run here (it would have to be PID 1): a real datagram
socket stands in for its notification socket and keeps the descriptors as
systemd does (L{FakeFdStore}), and the next start gets them exactly as systemd
passes them (descriptors 3..., C{LISTEN_FDS}, C{LISTEN_FDNAMES}, C{LISTEN_PID}
of the new process, through an exec wrapper).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support import listenexec
from tests.support.delayproxy import DelayProxy
from tests.support.fakesystemd import FakeFdStore
from tests.support.procs import (
    Flip,
    freePort,
    pidAlive,
    shortTempDir,
    twistdCommand,
    txflip,
    waitFor,
)
from txflip.systemd.fdnames import nameForKey

REQUEST = b"GET /sleep?seconds=0 HTTP/1.0\r\nHost: test\r\n\r\n"


class Connector:
    """
    A client that opens a new connection every 20 ms and sends a request,
    without waiting for the answer; the answers are read at the end.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.made: list[tuple[float, socket.socket]] = []
        self.refused: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < end:
            skt = socket.socket()
            skt.settimeout(30)
            try:
                skt.connect(("127.0.0.1", self.port))
                skt.sendall(REQUEST)
            except ConnectionRefusedError:
                self.refused.append(time.monotonic())
                skt.close()
            except OSError as e:
                self.errors.append(repr(e))
                skt.close()
            else:
                self.made.append((time.monotonic(), skt))
            time.sleep(0.02)

    def madeAfter(self, when: float) -> list[socket.socket]:
        return [skt for at, skt in self.made if at > when]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()

    @staticmethod
    def answer(skt: socket.socket) -> tuple[int, int | None]:
        """The status and the PID that answered on C{skt}."""
        data = b""
        try:
            while chunk := skt.recv(65536):
                data += chunk
        except OSError:
            pass
        finally:
            skt.close()
        if not data.startswith(b"HTTP/"):
            return 0, None
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        return status, json.loads(body).get("pid") if status == 200 else None


class FdStoreTests(TestCase):
    def setUp(self) -> None:
        self.store = FakeFdStore(self, os.path.join(shortTempDir(self), "notify"))
        self.port = freePort()

    def flip(self, *listen: int, workdir: str | None = None) -> Flip:
        # A queue long enough for every connection made while no process runs.
        args = [
            arg for p in listen for arg in ("--listen", f"tcp:{p}:interface=127.0.0.1:backlog=1024")
        ]
        return Flip(
            self, [*args, "--fd-store"], workdir=workdir, env={"NOTIFY_SOCKET": self.store.address}
        )

    def startFromStore(self, previous: Flip, *listen: int) -> tuple[Flip, int]:
        """Start the service again as systemd would, with what is in the store."""
        restarted = self.flip(*listen, workdir=previous.workdir)
        fds = [fd for _, fd in self.store.store]
        names = ":".join(self.store.names())
        restarted.command = lambda: [
            sys.executable,
            listenexec.__file__,
            ",".join(str(fd) for fd in fds),
            names,
            *twistdCommand(),
            "-n",
            "flip",
            "--pid-file",
            previous.pidFile,
            *restarted.args,
        ]
        return restarted, restarted.start(passFds=tuple(fds))

    def assertAnsweredBy(self, sockets: list[socket.socket], pid: int) -> None:
        answers = [Connector.answer(skt) for skt in sockets]
        self.assertEqual(answers, [(200, pid)] * len(sockets))

    def test_crash(self):
        """
        Two generations store their listeners (one copy of each is kept); the
        serving one is killed with SIGKILL while a client keeps connecting; the
        service started from the store answers every connection made in
        between, none is refused, and the listener its configuration dropped
        is removed from the store.
        """
        dropped = freePort()
        flip = self.flip(self.port, dropped)
        flip.start()
        expected = sorted(
            nameForKey(key)
            for key in (
                f"tcp:127.0.0.1:{self.port}",
                f"tcp:127.0.0.1:{dropped}",
                f"unix:{flip.pidFile}.control",
            )
        )
        self.store.waitFor(lambda: sorted(self.store.names()) == expected, "three stored")
        second = flip.restart()
        self.store.waitFor(
            lambda: any(s == second and "FDSTORE" in f for s, f, _ in self.store.messages),
            "the successor storing its listeners",
        )
        self.assertEqual(sorted(self.store.names()), expected)

        connector = Connector(self.port)
        self.addCleanup(connector.stop)
        waitFor(lambda: len(connector.made) >= 5, "connections before the crash")
        os.kill(second, signal.SIGKILL)
        waitFor(lambda: not pidAlive(second), "the killed generation to be gone")
        killedAt = time.monotonic()
        waitFor(lambda: len(connector.madeAfter(killedAt)) >= 10, "connections while none runs")
        startedAt = time.monotonic()

        restarted, third = self.startFromStore(flip, self.port)
        connector.stop()
        self.assertEqual(connector.refused, [])
        self.assertEqual(connector.errors, [])
        whileNoneRan = [at for at, _ in connector.made if killedAt < at < startedAt]
        self.assertGreaterEqual(len(whileNoneRan), 10)
        self.assertAnsweredBy(connector.madeAfter(killedAt), third)

        log = [line for line in restarted.log().splitlines() if f"pid {third}]" in line]
        self.assertIn(f"adopted inherited listener tcp:127.0.0.1:{self.port}", "\n".join(log))
        self.assertIn(f"adopted inherited listener unix:{flip.pidFile}.control", "\n".join(log))
        droppedName = nameForKey(f"tcp:127.0.0.1:{dropped}")
        self.store.waitFor(lambda: droppedName not in self.store.names(), "the dropped one removed")
        self.assertIn(
            (third, {"FDSTOREREMOVE": "1", "FDNAME": droppedName}, 0),
            self.store.messages,
        )
        status = txflip("status", "--pid-file", flip.pidFile, "--json")
        self.assertEqual(json.loads(status.stdout)["pid"], third, status.stderr)

    def test_systemctlRestart(self):
        """
        A stop that systemd follows with a start (C{systemctl restart}): the
        generation drains and exits 0 but leaves the control socket's path in
        place, since the stored socket lives on; connections made in between,
        directly and through a delay proxy, are answered by the next start.
        """
        flip = self.flip(self.port)
        first = flip.start()
        self.store.waitFor(lambda: len(self.store.store) == 2, "two stored")
        proxy = DelayProxy(("127.0.0.1", self.port), delay=0.02).start()
        self.addCleanup(proxy.stop)
        connectors = [Connector(self.port), Connector(proxy.port)]
        for connector in connectors:
            self.addCleanup(connector.stop)
        waitFor(lambda: all(len(c.made) >= 3 for c in connectors), "connections before the stop")
        os.kill(first, signal.SIGTERM)
        self.assertEqual(flip.process.wait(60), 0)
        stoppedAt = time.monotonic()
        self.assertTrue(os.path.exists(flip.pidFile + ".control"))
        waitFor(
            lambda: all(len(c.madeAfter(stoppedAt)) >= 5 for c in connectors),
            "connections while none runs",
        )

        restarted, second = self.startFromStore(flip, self.port)
        for connector in connectors:
            connector.stop()
            self.assertEqual((connector.refused, connector.errors), ([], []))
            self.assertAnsweredBy(connector.madeAfter(stoppedAt), second)
        status = txflip("status", "--pid-file", flip.pidFile, "--json")
        self.assertEqual(json.loads(status.stdout)["pid"], second, status.stderr)
