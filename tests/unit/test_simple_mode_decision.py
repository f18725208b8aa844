"""
When flip runs in simple mode (no restarts): the platform and PID check.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase


class SimpleModeDecisionTests(TestCase):
    """
    The platform check itself. Windows cannot run here, so its case is the one
    place these tests pass a platform name instead of running on it.
    """

    def test_windowsCannotInheritDescriptors(self):
        from txflip.core.simplemode import simpleModeReason

        reason = simpleModeReason(pid=4242, platformType="win32")
        self.assertIn("cannot hand listening sockets to a new process", reason)

    def test_pidOne(self):
        from txflip.core.simplemode import simpleModeReason

        self.assertIn("PID 1", simpleModeReason(pid=1, platformType="posix"))

    def test_ordinaryProcessRestarts(self):
        from txflip.core.simplemode import simpleModeReason

        self.assertIsNone(simpleModeReason(pid=4242, platformType="posix"))
