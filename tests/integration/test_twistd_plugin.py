"""
The installed package: twistd finds the plugin.
"""

from __future__ import annotations

import subprocess

from twisted.trial.unittest import TestCase

from tests.support.procs import twistdCommand


class PluginTests(TestCase):
    def test_twistdListsFlip(self):
        """C{twistd --help} lists flip, with no complaint about the plugin cache."""
        result = subprocess.run(
            [*twistdCommand(), "--help"], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("flip ", result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("Unable", result.stderr)
