"""
No descriptor leaks across restarts, and every descriptor of a generation
started by a restart is close-on-exec.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.procs import Flip, demoFlip, fdTargets, freePort, httpGet, waitFor


class DescriptorTests(TestCase):
    def test_noDescriptorLeakAfterTwentyRestarts(self):
        flip, port = demoFlip(self)
        first = flip.start()

        def settle(pid: int) -> list[str]:
            """The descriptors of C{pid} once a request has come and gone and nothing moves."""
            status, _, _ = httpGet("127.0.0.1", port, "/guestbook")
            assert status == 200
            samples: list[list[str]] = []

            def steady():
                samples.append(fdTargets(pid))
                return len(samples) >= 5 and all(
                    len(sample) == len(samples[-1]) for sample in samples[-5:]
                )

            waitFor(steady, f"the descriptors of PID {pid} to settle", 30)
            return samples[-1]

        baseline = settle(first)
        pid = first
        for _ in range(20):
            pid = flip.restart()
        final = settle(pid)
        self.assertEqual(len(final), len(baseline), f"{baseline} -> {final}")

    def test_everyDescriptorIsCloseOnExec(self):
        """
        In a generation started by a restart, every descriptor but 0-2 is
        close-on-exec: nothing leaks into processes the app starts.
        """
        port = freePort()
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        path = os.path.join(workdir, "app.sock")
        flip = Flip(
            self, ["--listen", f"tcp:{port}:interface=127.0.0.1", "--listen", f"unix:{path}"]
        )
        flip.start()
        pid = flip.restart()
        httpGet("127.0.0.1", port, "/guestbook")
        inheritable = []
        for entry in os.listdir(f"/proc/{pid}/fd"):
            fd = int(entry)
            if fd <= 2:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except (OSError, IndexError):
                continue
            if not flags & 0o2000000:
                inheritable.append((fd, target))
        self.assertEqual(inheritable, [])
