"""
docs/options.rst describes every option of C{twistd flip}, with its default.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import TestCase

from txflip.twistd.options import FlipOptions

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "options.rst")


def documentedEntries() -> dict[str, str]:
    """Each C{``--name ...``} entry of the page, by option name, with its text."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    entries = {}
    for match in re.finditer(r"^``--([a-z0-9-]+)[^\n]*\n((?:[ \t]+[^\n]*\n|\n)*)", text, re.M):
        entries[match.group(1)] = match.group(2)
    return entries


class OptionsDocumentedTests(TestCase):
    def test_everyOption(self):
        options = FlipOptions()
        names = {name.rstrip("=") for name in options.longOpt}
        self.assertIn("acme-domain", names)
        self.assertEqual(sorted(names - set(documentedEntries())), [])

    def test_defaults(self):
        """Every option with a default says it, as 'Default N' or 'Default: N'."""
        entries = documentedEntries()
        parameters = FlipOptions.optParameters
        withDefaults = {p[0]: p[2] for p in parameters if p[2] is not None}
        self.assertIn("acme-check-interval", withDefaults)
        for name, default in withDefaults.items():
            self.assertRegex(entries[name], rf"Default:? {re.escape(default)}\b", name)
