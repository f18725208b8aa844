"""
The one way a generation that cannot start says why (txflip.core.startfailure):
to its parent word for word, and on standard error as one line that begins
with the program's name.
"""

from __future__ import annotations

import io
import socket
import sys

from twisted.trial.unittest import TestCase

from txflip.core import startfailure


class ReportTests(TestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "__stderr__", self.stderr)
        self.addCleanup(startfailure.setProgramName, startfailure.programName())
        self.parent, child = socket.socketpair()
        self.addCleanup(self.parent.close)
        self.addCleanup(child.close)
        self.childFd = child.fileno()

    def parentHeard(self) -> bytes:
        self.parent.settimeout(5)
        return self.parent.recv(4096)

    def test_namedAfterTwistdFlipByDefault(self) -> None:
        line = startfailure.reportStartFailure("cannot\n listen", controlFd=self.childFd)
        self.assertEqual(line, "twistd flip: error: cannot listen")
        self.assertEqual(self.stderr.getvalue(), "twistd flip: error: cannot listen\n")
        self.assertEqual(self.parentHeard(), b"failed cannot listen\n")

    def test_namedAfterTheLauncher(self) -> None:
        startfailure.setProgramName(startfailure.TXFLIP_RUN)
        startfailure.reportStartFailure("cannot listen")
        self.assertEqual(self.stderr.getvalue(), "txflip run: error: cannot listen\n")

    def test_uncaughtExceptionGoesTheSameWay(self) -> None:
        """The except hook reports through it, then the traceback follows as before."""
        shown = []
        self.patch(sys, "excepthook", lambda *info: shown.append(info[1]))
        reporter = startfailure.StartFailureReporter(self.childFd)
        self.addCleanup(reporter.close)
        try:
            raise RuntimeError("boom")
        except RuntimeError as e:
            sys.excepthook(type(e), e, e.__traceback__)
            error = e
        self.assertEqual(shown, [error])
        self.assertTrue(self.stderr.getvalue().startswith("twistd flip: error: RuntimeError: boom"))
        self.assertTrue(self.parentHeard().startswith(b"failed RuntimeError: boom (at "))
