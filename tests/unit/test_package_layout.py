"""
The project's layout: nothing shadows Twisted's own packages.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase


class PackageLayoutTests(TestCase):
    def test_noTwistedPackageShadowing(self):
        """The project ships twisted/plugins/ without __init__.py files of its own."""
        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for relative in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
            self.assertFalse(os.path.exists(os.path.join(top, relative)), relative)
