"""
C{Type=forking}: twistd detaches, and systemd follows the service through
the PID file, which must name the serving generation whenever the previous
main process exits. Tested without systemd, by doing what it does: read the
PID file when the launcher exits, and again when the main process exits.
"""

from __future__ import annotations

import os
import signal

from twisted.trial.unittest import TestCase

from tests.support.procs import Flip, freePort, pidAlive, readPidFile, servedBy, txflip, waitFor


class DetachedFlip(Flip):
    """C{twistd flip} without C{-n}: the launcher exits once the daemon runs."""

    def command(self) -> list[str]:
        command = super().command()
        command.remove("-n")
        return command


class ForkingTests(TestCase):
    def test_pidFileFollowsEachGeneration(self) -> None:
        port = freePort()
        flip = DetachedFlip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        flip.start(waitReady=False)
        self.assertEqual(flip.process.wait(timeout=60), 0, flip.stderr())
        main = waitFor(lambda: flip.pid(), "the PID file after the launcher exited")
        self.assertNotEqual(main, flip.process.pid)
        self.assertTrue(pidAlive(main))
        waitFor(lambda: servedBy(port) == main, f"PID {main} serving")

        for generation in range(2, 5):
            result = txflip("reload", "--pid-file", flip.pidFile)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            waitFor(lambda old=main: not pidAlive(old), f"PID {main} to exit")
            # What systemd does when the main process exits: read the PID file.
            new = readPidFile(flip.pidFile)
            flip.seen.add(new)
            self.assertNotEqual(new, main)
            self.assertTrue(pidAlive(new), f"PID file names {new}, which is not running")
            self.assertIn(f"done: generation {generation} (PID {new}) serves", result.stdout)
            self.assertEqual(servedBy(port), new)
            main = new

        os.kill(main, signal.SIGTERM)
        waitFor(lambda: not pidAlive(main), f"PID {main} to exit after SIGTERM")
        self.assertFalse(os.path.exists(flip.pidFile))
        self.assertFalse(os.path.exists(flip.pidFile + ".control"))
