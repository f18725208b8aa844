"""
The PID file names a live, serving generation at every moment: read every
10 ms through restarts; with twistd's own C{--pidfile} (or its default); and
under C{Type=forking}, where systemd follows the service through the PID file
when the launcher exits and again when each main process exits (tested
without systemd, by doing what it does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support.procs import (
    Flip,
    demoFlip,
    freePort,
    pidAlive,
    readPidFile,
    servedBy,
    twistdCommand,
    txflip,
    waitFor,
)


class PIDFileSamplingTests(TestCase):
    def test_pidFileAlwaysNamesALiveProcess(self):
        """The PID file, read every 10 ms through 10 restarts, always names a live process."""
        flip, _ = demoFlip(self)
        flip.start()
        samples: list[tuple[int | None, bool]] = []
        stop = threading.Event()

        def sample():
            end = time.monotonic() + 300
            while not stop.is_set() and time.monotonic() < end:
                with open(flip.pidFile) as f:
                    text = f.read()
                pid = int(text) if text.strip().isdigit() else None
                samples.append((pid, pid is not None and pidAlive(pid)))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            pids = [flip.restart() for _ in range(10)]
        finally:
            stop.set()
            sampler.join(30)
        bad = [s for s in samples if not s[1]]
        self.assertEqual(bad, [])
        self.assertGreater(len(samples), 100)
        self.assertEqual(len({pid for pid, _ in samples}), 11)
        flip.terminate()
        self.assertFalse(os.path.exists(flip.pidFile))
        self.assertEqual(flip.aliveGenerations(), [])
        del pids


class TwistdPidfileTests(TestCase):
    def _startTwistd(self, twistdArgs: list[str], workdir: str) -> subprocess.Popen:
        port = freePort()
        process = subprocess.Popen(
            [
                *twistdCommand(),
                "-n",
                *twistdArgs,
                "flip",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, TXFLIP_DEMO_DB=os.path.join(workdir, "demo.sqlite3")),
            start_new_session=True,
        )
        return process

    def _restartThroughPidfile(self, pidfilePath: str, process: subprocess.Popen) -> None:
        seen = {process.pid}

        def cleanup():
            for pid in seen:
                if pidAlive(pid):
                    os.kill(pid, 9)
            process.wait(10)

        self.addCleanup(cleanup)
        waitFor(lambda: readPidFile(pidfilePath) == process.pid, "the first PID in the pidfile")
        os.kill(process.pid, 1)
        new = waitFor(
            lambda: (p := readPidFile(pidfilePath)) not in (None, process.pid) and p, "a new PID"
        )
        seen.add(new)
        process.wait(60)
        self.assertTrue(pidAlive(new))
        self.assertEqual(readPidFile(pidfilePath), new)
        os.kill(new, 15)
        waitFor(lambda: not pidAlive(new), "the new generation to exit")
        self.assertFalse(os.path.exists(pidfilePath))

    def test_twistdPidfileOptionIsManagedByFlip(self):
        """twistd --pidfile X without --pid-file: X follows each generation."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "custom.pid")
        self._restartThroughPidfile(path, self._startTwistd(["--pidfile", path], workdir))

    def test_twistdDefaultPidfile(self):
        """Neither option: twistd's default ./twistd.pid follows each generation."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        self._restartThroughPidfile(
            os.path.join(workdir, "twistd.pid"), self._startTwistd([], workdir)
        )


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
