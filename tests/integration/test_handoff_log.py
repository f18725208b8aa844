"""
What the log says about listeners at a handoff: the old generation hands them
over (they keep serving in the new one), and only a final shutdown closes them.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.support.procs import demoFlip


class HandoffLogTests(TestCase):
    def test_handedOverNotClosed(self):
        flip, port = demoFlip(self)
        unixPath = os.path.join(flip.workdir, "app.sock")
        flip.args += ["--listen", f"unix:{unixPath}"]
        first = flip.start()
        second = flip.restart()
        atHandoff = flip.log()
        flip.terminate()
        atShutdown = flip.log()[len(atHandoff) :]

        for key in (f"tcp:127.0.0.1:{port}", f"unix:{unixPath}"):
            self.assertIn(f"[txflip gen 1 pid {first}] handed over {key}", atHandoff)
        self.assertNotIn(f"(TCP Port {port} Closed)", atHandoff)
        self.assertNotIn(f"(UNIX Port {unixPath} Closed)", atHandoff)
        # The last generation really closes them, and Twisted says so.
        self.assertIn(f"(TCP Port {port} Closed)", atShutdown)
        self.assertIn(f"(UNIX Port {unixPath} Closed)", atShutdown)
        self.assertNotIn(f"[txflip gen 2 pid {second}] handed over", atShutdown)
