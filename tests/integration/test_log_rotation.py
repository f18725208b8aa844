"""
Log rotation the way logrotate does it (C{mv}, then C{kill -USR1} to the PID in
the PID file), twice, while restarts overlap two generations and clients
load the app: every access line lands in exactly one file, and twistd's
C{--logfile} starts a new file too.
"""

from __future__ import annotations

import os
import re
import signal

from twisted.trial.unittest import TestCase

from tests.support.load import Load
from tests.support.procs import Flip, freePort, pidAlive, waitFor

REQUEST = re.compile(r'"GET /sleep\?seconds=0&n=(\S+) HTTP/1\.1" 200 ')
COMBINED = re.compile(r'^"127\.0\.0\.1" - - \[[^\]]+\] "GET [^"]+" 200 \d+ "-" "[^"]*"$')


def lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class LogRotationTests(TestCase):
    def rotateDuringARestart(self, flip: Flip, access: str, rotation: int):
        """
        Restart; while the old generation drains, rotate both files the way
        logrotate does and signal the new one. Return the new PID and the
        pattern of the old one's reopen line.
        """
        old = flip.pid()
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := flip.pid()) not in (None, old) and p, "a new PID")
        flip.waitServing(new)
        self.assertTrue(pidAlive(old), "the old generation left before the rotation")
        # logrotate's way: shift the old files, move the live one, signal.
        for path in (access, flip.logPath):
            if rotation == 2:
                os.rename(path + ".1", path + ".2")
            os.rename(path, path + ".1")
        os.kill(new, signal.SIGUSR1)
        told = re.compile(rf"pid {old}\] generation \d+: reopened the access log")
        waitFor(
            lambda: f"pid {new}] SIGUSR1: reopened the access log" in flip.log(),
            "the serving generation to reopen",
        )
        waitFor(
            lambda: told.search(flip.log()),
            "the draining generation to reopen, told by the serving one",
        )
        waitFor(lambda: not pidAlive(old), "the old generation to exit")
        return new, told

    def test_rotatedTwiceDuringRestarts(self):
        """
        Rotated twice (access log and twistd's --logfile), each time while the
        generation that handed over still drains: the SIGUSR1 to the serving
        generation reaches the old one, each file gets lines, and each request
        is logged exactly once across the files.
        """
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        access = os.path.join(flip.workdir, "access.log")
        flip.args += ["--access-log", access]
        flip.twistdArgs = ["--logfile", flip.logPath]
        flip.start()
        kinds = ("newConnection", "keepAliveGet")
        reopenedBy = {}
        with Load("127.0.0.1", port, kinds=kinds, numbered=True) as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            for rotation in (1, 2):
                reopenedBy[rotation] = self.rotateDuringARestart(flip, access, rotation)
                before = load.totalRequests()
                waitFor(lambda b=before: load.totalRequests() > b + 20, "requests after it")
        flip.terminate()
        self.assertEqual(load.failures(), {}, load.failureReport())

        files = [access + ".2", access + ".1", access]
        logged = {path: lines(path) for path in files}
        for path, content in logged.items():
            self.assertGreater(len(content), 10, f"{path} got too few lines")
            self.assertEqual([line for line in content if not COMBINED.match(line)][:3], [])
        seen = [
            m.group(1)
            for content in logged.values()
            for line in content
            if (m := REQUEST.search(line))
        ]
        sent = [
            f"{client.result.kind}-{sequence}"
            for client in load.clients
            for sequence in range(1, client.result.requests + 1)
        ]
        self.assertEqual(len(seen), len(set(seen)), "a request was logged twice")
        self.assertEqual(sorted(seen), sorted(sent))

        # twistd's --logfile started a new file at each rotation, and both
        # generations wrote their reopen lines to the new one.
        for rotation, path in ((1, flip.logPath + ".1"), (2, flip.logPath)):
            new, told = reopenedBy[rotation]
            text = "\n".join(lines(path))
            self.assertIn(f"pid {new}] SIGUSR1: reopened the access log", text)
            self.assertRegex(text, told)
        self.assertIn("generation exits (shut down)", flip.log())
        self.assertNotIn("SIGUSR1", "\n".join(lines(flip.logPath + ".2")))
