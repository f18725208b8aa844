"""
sd_notify through restarts, captured from a real C{AF_UNIX} datagram socket
that stands in for systemd's, with the kernel naming each sender
(C{SCM_CREDENTIALS}).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid

from twisted.trial.unittest import TestCase

from tests.support.apps import GOOD_RESOURCE, STOPS_ITSELF, appEnv, writeApp, writeJSONApp
from tests.support.notifycapture import NotifyCapture
from tests.support.procs import Flip, freePort, httpGet, pidAlive, shortTempDir, txflip, waitFor
from txflip.systemd import notify as sdnotify


def messagesFrom(capture: NotifyCapture, pid: int) -> list[dict]:
    return [fields for sender, fields, _ in capture.messages if sender == pid]


class NotifyThroughRestartsTests(TestCase):
    def startFlip(self, address: str, capture: NotifyCapture, **env) -> Flip:
        self.port = freePort()
        flip = Flip(self, [], env={"NOTIFY_SOCKET": address, **env})
        flip.args = [
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--app",
            writeJSONApp(flip.workdir, 1),
        ]
        flip.env.update(appEnv(flip.workdir))
        flip.start()
        return flip

    def test_fiveRestarts(self) -> None:
        """
        READY=1 with MAINPID at start; at each of 5 restarts the parent says
        RELOADING=1 (with MONOTONIC_USEC) and the child MAINPID=<own pid> and
        READY=1, sent by the serving process itself; STOPPING=1 only at the
        final shutdown, never by a parent that handed over.
        """
        address = os.path.join(shortTempDir(self), "notify")
        capture = NotifyCapture(self, address)
        flip = self.startFlip(address, capture)
        serving = [flip.pid()]
        capture.waitFor(lambda m: m[0] == serving[0] and "READY" in m[1], "READY=1 at start")
        for _ in range(5):
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            new = flip.restart()
            serving.append(new)
            capture.waitFor(
                lambda m, new=new: m[0] == new and m[1].get("READY") == "1", f"READY=1 from {new}"
            )
            reloading = [m for m in messagesFrom(capture, serving[-2]) if "RELOADING" in m]
            self.assertEqual(len(reloading), 1, capture.messages)
            stamp = int(reloading[0]["MONOTONIC_USEC"])
            self.assertTrue(before <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        flip.terminate()
        last = serving[-1]
        capture.waitFor(lambda m: m[0] == last and "STOPPING" in m[1], "STOPPING=1 at shutdown")
        capture.receive()  # every sender has exited: all it sent is queued already

        readies = [(sender, f) for sender, f, _ in capture.messages if f.get("READY") == "1"]
        self.assertEqual([sender for sender, _ in readies], serving)
        for sender, fields in readies:
            self.assertEqual(fields["MAINPID"], str(sender))
            self.assertIn(f"(PID {sender}) serving on tcp:127.0.0.1:{self.port}", fields["STATUS"])

        order = [(sender, key) for sender, f, _ in capture.messages for key in f]
        for parent, child in zip(serving, serving[1:], strict=False):
            self.assertLess(order.index((parent, "RELOADING")), order.index((child, "READY")))
        stopping = [sender for sender, f, _ in capture.messages if "STOPPING" in f]
        self.assertEqual(stopping, [last])
        self.assertTrue(all(not pidAlive(pid) for pid in serving))

    def test_failedRestartSaysReadyAgain(self) -> None:
        """After a failed restart the parent ends systemd's reload with READY=1 and the reason."""
        address = "@txflip-test-" + uuid.uuid4().hex
        capture = NotifyCapture(self, b"\0" + address[1:].encode())
        flip = self.startFlip(address, capture)
        old = flip.pid()
        capture.waitFor(lambda m: m[0] == old and "READY" in m[1], "READY=1 at start")
        writeJSONApp(flip.workdir, 2, broken="release 2 is broken")
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        found = capture.waitFor(
            lambda m: m[0] == old and "restart failed" in m[1].get("STATUS", ""),
            "READY=1 after the failure",
        )
        self.assertEqual(found[0][1]["READY"], "1")
        self.assertIn("release 2 is broken", found[0][1]["STATUS"])
        self.assertIn(f"generation 1 (PID {old}) keeps serving", found[0][1]["STATUS"])
        self.assertEqual([f.get("READY") for f in messagesFrom(capture, old)].count("1"), 2)
        self.assertFalse(any("STOPPING" in f for _, f, _ in capture.messages))

    def test_watchdogAndNoLeak(self) -> None:
        """
        WATCHDOG=1 comes from the serving generation at half of WATCHDOG_USEC,
        and from its successor after a restart; no variable reaches processes
        the app starts.
        """
        address = os.path.join(shortTempDir(self), "notify")
        capture = NotifyCapture(self, address)
        flip = self.startFlip(address, capture, WATCHDOG_USEC="400000")

        def threeWatchdogs(pid: int) -> None:
            capture.waitFor(
                lambda m: (
                    sum(1 for s, f, _ in capture.messages if s == pid and "WATCHDOG" in f) >= 3
                ),
                f"three WATCHDOG=1 from {pid}",
            )

        # Generation 1 sends them only while it serves: wait for them before the restart.
        threeWatchdogs(flip.pid())
        threeWatchdogs(flip.restart())
        status, _, body = httpGet("127.0.0.1", self.port, "/env")
        self.assertEqual(status, 200)
        seen = json.loads(body)
        leaked = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", sdnotify.ENV_CARRIED}
        self.assertEqual(leaked & set(seen["childEnv"]), set())
        self.assertEqual(leaked & set(seen["ownEnv"]), set())
        self.assertIn("PATH", seen["childEnv"])

    def test_plainSighupStillWorksWithoutNotifySocket(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and kill -HUP restarts as before."""
        self.port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{self.port}:interface=127.0.0.1"])
        flip.start()
        old = flip.pid()
        os.kill(old, signal.SIGHUP)
        waitFor(lambda: flip.pid() not in (None, old), "a new generation")
        self.assertNotIn("cannot notify systemd", flip.log())


class FailedReleaseNotifyTests(TestCase):
    def test_releaseThatNeverServedSendsNoStopping(self):
        """A child that gives up before serving sends systemd no STOPPING=1."""
        address = os.path.join(shortTempDir(self), "notify")
        capture = NotifyCapture(self, address)
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
        port = freePort()
        flip = Flip(
            self,
            ["--app", "myrelease.resource", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            workdir=workdir,
            env={**appEnv(workdir), "NOTIFY_SOCKET": address},
        )
        old = flip.start()
        capture.waitFor(lambda m: m[0] == old and "READY" in m[1], "READY=1 at start")
        writeApp(workdir, "myrelease", STOPS_ITSELF, release="2")
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving")
        waitFor(lambda: flip.aliveGenerations() == [old], "the failed release to be gone")
        capture.receive()  # the release has exited: all it sent is queued already
        self.assertEqual([(sender, f) for sender, f, _ in capture.messages if "STOPPING" in f], [])
