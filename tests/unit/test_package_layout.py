"""
The project's layout: nothing shadows Twisted's own packages, and every package ships.
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

    def test_everyPackageIsListed(self):
        """pyproject.toml lists every package of txflip, so the wheel carries all of them."""
        import tomllib

        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(top, "pyproject.toml"), "rb") as f:
            listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
        onDisk = {
            os.path.relpath(folder, top).replace(os.sep, ".")
            for folder, _, files in os.walk(os.path.join(top, "txflip"))
            if "__init__.py" in files
        }
        self.assertEqual(onDisk - listed, set())
