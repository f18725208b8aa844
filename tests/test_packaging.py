"""
The installed package: twistd finds the plugin, and nothing shadows Twisted.
"""

from __future__ import annotations

import os
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

    def test_noTwistedPackageShadowing(self):
        """The project ships twisted/plugins/ without __init__.py files of its own."""
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for relative in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
            self.assertFalse(os.path.exists(os.path.join(top, relative)), relative)
