"""
A test case base for TLS through real flip processes: a flip, a test CA and
a certificate directory in its working directory, renewals done the way a
renewal tool does them, and C{curl}.
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import TestCase

from tests.support.procs import Flip
from tests.support.tlshelpers import TestCA, certPEM, keyPEM, writePublic
from txflip.tls.privatefile import writePrivate


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


class TLSFlipCase(TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.flip: Flip | None = None

    def makeFlip(self, args: list[str]) -> Flip:
        self.flip = Flip(self, args)
        self.ca = TestCA(self.flip.workdir)
        self.certs = os.path.join(self.flip.workdir, "certs")
        os.mkdir(self.certs, 0o700)
        return self.flip

    def path(self, *parts: str) -> str:
        return os.path.join(self.flip.workdir, *parts)

    def replacePair(self, names: list[str], key=None):
        """Renew key.pem + cert.pem the way a renewal tool does: write aside, rename over."""
        key, cert = self.ca.issue(names, key=key)
        writePrivate(self.path("key.pem.new"), keyPEM(key))
        writePublic(self.path("cert.pem.new"), certPEM(cert))
        os.replace(self.path("key.pem.new"), self.path("key.pem"))
        os.replace(self.path("cert.pem.new"), self.path("cert.pem"))
        return key, cert

    def startFailure(self, args: list[str]) -> tuple[int, str]:
        """Run a flip that must fail to start; return its exit code and stderr."""
        flip = Flip(self, args)
        flip.start(waitReady=False)
        try:
            code = flip.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail(f"flip did not exit; log: {flip.log()[-2000:]}")
        return code, flip.stderr()

    def assertOneErrorLine(self, stderr: str, *words: str) -> None:
        lines = [line for line in stderr.splitlines() if "twistd flip: error:" in line]
        self.assertEqual(len(lines), 1, stderr)
        for word in words:
            self.assertIn(word, lines[0])
