"""
txflip installed without its acme extra (no acme, josepy or treq): plain HTTP
starts and restarts; asking for ACME is a one-line error that names the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.procs import Flip, freePort, refusedAtStart, servedBy
from tests.support.withoutacme import withoutAcmeEnv

INSTALL = "pip install 'txflip[acme]'"


class WithoutAcmeExtraTests(TestCase):
    def setUp(self) -> None:
        self.env = withoutAcmeEnv()

    def test_theEnvironmentHidesTheExtra(self) -> None:
        """The check of the checks: in such a process, treq cannot be imported."""
        result = subprocess.run(
            [sys.executable, "-c", "import treq"],
            env=dict(os.environ, **self.env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("No module named 'treq'", result.stderr)

    def test_plainHttpServesAndRestarts(self) -> None:
        port = freePort()
        flip = Flip(self, ["--listen", f"tcp:{port}:interface=127.0.0.1"], env=self.env)
        first = flip.start()
        self.assertEqual(servedBy(port), first)
        second = flip.restart()
        self.assertEqual(servedBy(port), second)

    def test_acmeOptionNamesTheExtra(self) -> None:
        line = refusedAtStart(
            self,
            ["--acme-domain", "a.test", "--acme-dir", tempfile.mkdtemp(), "--listen", "tcp:0"],
            env=self.env,
        )
        self.assertEqual(
            line,
            "twistd flip: error: --acme-domain needs txflip's acme extra, which is not "
            f"installed (no module named 'acme'): {INSTALL}",
        )

    def test_txacmeEndpointNamesTheExtra(self) -> None:
        store = tempfile.mkdtemp(prefix="txflip-acme-store-")
        listen = f"le:{store}:tcp:{freePort()}:interface=127.0.0.1"
        line = refusedAtStart(self, ["--listen", listen], env=self.env)
        self.assertEqual(
            line,
            f"twistd flip: error: --listen {listen} needs txflip's acme extra, which is not "
            f"installed (no module named 'acme'): {INSTALL}",
        )
