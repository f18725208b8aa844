"""
ACME is an extra (C{pip install 'txflip[acme]'}): the packaging says so, and
asking for ACME without it is one line naming the extra, through an option
or a txacme-style C{le:}/C{lets:} endpoint string.
"""

from __future__ import annotations

import configparser
import os
import tomllib

from twisted.trial.unittest import TestCase

from txflip.acme import extra
from txflip.acme.options import acmeRequestedBy

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


class PackagingTests(TestCase):
    def setUp(self) -> None:
        with open(os.path.join(TOP, "pyproject.toml"), "rb") as f:
            self.project = tomllib.load(f)["project"]

    def test_plainInstallLeavesAcmeOut(self) -> None:
        required = {_name(r) for r in self.project["dependencies"]}
        self.assertEqual(required & set(extra.ACME_PACKAGES), set())

    def test_acmeExtraHoldsWhatTheCheckLooksFor(self) -> None:
        acme = {_name(r) for r in self.project["optional-dependencies"]["acme"]}
        self.assertEqual(acme, set(extra.ACME_PACKAGES))

    def test_theSuiteInstallsTheAcmeExtra(self) -> None:
        """tox installs the test extra, which pulls the acme extra: ACME stays tested."""
        self.assertIn("txflip[acme]", self.project["optional-dependencies"]["test"])
        tox = configparser.ConfigParser()
        tox.read(os.path.join(TOP, "tox.ini"))
        self.assertEqual(tox["testenv"]["extras"].split(), ["test"])


class MissingExtraTests(TestCase):
    def setUp(self) -> None:
        self.patch(extra, "ACME_PACKAGES", ("acme", "txflip_no_such_package"))

    def test_installedExtraPasses(self) -> None:
        self.patch(extra, "ACME_PACKAGES", ("acme",))
        extra.requireAcmeExtra("--acme-domain")

    def test_optionNamesTheExtra(self) -> None:
        with self.assertRaises(extra.AcmeExtraMissing) as caught:
            extra.requireAcmeExtra("--acme-domain")
        self.assertEqual(
            str(caught.exception),
            "--acme-domain needs txflip's acme extra, which is not installed "
            "(no module named 'txflip_no_such_package'): pip install 'txflip[acme]'",
        )

    def test_endpointStringNamesTheExtra(self) -> None:
        from twisted.internet.endpoints import serverFromString
        from twisted.plugins.txflip_acme_endpoints import le, lets

        for parser in (le, lets):
            with self.assertRaises(extra.AcmeExtraMissing) as caught:
                parser.parseStreamServer(None, "/nonexistent-store", "tcp", "443")
            self.assertTrue(
                str(caught.exception).startswith(f"{parser.prefix}: needs txflip's acme extra"),
                str(caught.exception),
            )
        with self.assertRaises(extra.AcmeExtraMissing):
            serverFromString(None, "le:/nonexistent-store:tcp:443")


class RequestedByTests(TestCase):
    def test_whichOptionAskedForAcme(self) -> None:
        self.assertIsNone(acmeRequestedBy({"listen": ["tcp:8080"]}))
        self.assertEqual(acmeRequestedBy({"acme-dir": "/x", "listen": []}), "--acme-dir")
        self.assertEqual(
            acmeRequestedBy({"listen": ["tcp:80", "lets:/x:tcp:443"]}), "--listen lets:/x:tcp:443"
        )
