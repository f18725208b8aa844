"""
Bad certificates: a mismatched renewal at a restart leaves the old generation
serving, errors at start are one line, and a readable key or an expired
certificate is served with a warning.
"""

from __future__ import annotations

import datetime
import os
import signal

from tests.support.procs import freePort, pidAlive, waitFor
from tests.support.tlsflip import TLSFlipCase
from tests.support.tlshelpers import NOW, certPEM, peerCertificate, serialOf, writePublic


class BadCertificateTests(TLSFlipCase):
    def restartWithMismatchedCertificate(self, scheme: str, names: list[str]):
        """
        Serve C{scheme} from key.pem and cert.pem, then replace cert.pem with
        a certificate for another key (a renewal that went wrong) and SIGHUP.

        @return: the flip, its PID, its port, the key and the first certificate.
        """
        flip = self.makeFlip([])
        key, first = self.replacePair(names)
        port = freePort()
        flip.args = [
            "--listen",
            f"{scheme}:{port}:interface=127.0.0.1:privateKey={self.path('key.pem')}"
            f":certKey={self.path('cert.pem')}",
        ]
        pid = flip.start()
        _, wrong = self.ca.issue(["localhost"])
        writePublic(self.path("cert.pem"), certPEM(wrong))
        os.kill(pid, signal.SIGHUP)
        flip.waitLog("keeps serving")
        return flip, pid, port, key, first

    def test_mismatchAtRestartKeepsOldGeneration(self) -> None:
        flip, pid, port, key, first = self.restartWithMismatchedCertificate(
            "flip-tls", ["localhost", "127.0.0.1"]
        )
        log = flip.log()
        self.assertIn("do not match", log)
        self.assertIn(self.path("cert.pem"), log)
        self.assertEqual(flip.pid(), pid)
        self.assertTrue(pidAlive(pid))
        self.assertEqual(serialOf(port), first.serial_number)
        waitFor(lambda: flip.aliveGenerations() == [pid], "the failed child to be gone")

        # Fixed files: the next SIGHUP succeeds and serves them.
        _, fixed = self.replacePair(["localhost", "127.0.0.1"], key=key)
        self.assertNotEqual(flip.restart(), pid)
        self.assertEqual(serialOf(port), fixed.serial_number)

    def test_sslMismatchAtRestartKeepsOldGeneration(self) -> None:
        flip, pid, port, _, first = self.restartWithMismatchedCertificate("ssl", ["localhost"])
        self.assertIn("do not match", flip.log())
        self.assertEqual(flip.pid(), pid)
        self.assertEqual(serialOf(port), first.serial_number)

    def test_startErrorsAreOneLine(self) -> None:
        self.makeFlip([])
        keyPath, certPath, _ = self.ca.pair(self.flip.workdir, ["localhost"])
        _, other = self.ca.issue(["other"])
        otherCert = writePublic(self.path("other.pem"), certPEM(other))
        missing = self.path("missing.pem")
        for options, words in [
            (f"privateKey={missing}", [missing, "does not exist"]),
            (f"privateKey={keyPath}:certKey={otherCert}", ["do not match", otherCert]),
            (f"certDir={self.path('nowhere')}", ["does not exist"]),
            (f"certDir={self.certs}", ["holds no *.pem"]),
            (f"privateKey={keyPath}:colour=blue", ["no option colour"]),
        ]:
            port = freePort()
            code, stderr = self.startFailure(
                ["--listen", f"flip-tls:{port}:interface=127.0.0.1:{options}"]
            )
            self.assertEqual(code, 1, stderr)
            self.assertOneErrorLine(stderr, *words)

    def test_warnings(self) -> None:
        """A key others can read and an expired certificate: served, with a warning."""
        flip = self.makeFlip([])
        keyPath, certPath, _ = self.ca.pair(
            flip.workdir,
            ["localhost"],
            notBefore=NOW - datetime.timedelta(days=30),
            notAfter=NOW - datetime.timedelta(days=2),
        )
        os.chmod(keyPath, 0o644)
        port = freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{port}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",
        ]
        flip.start()
        log = flip.log()
        self.assertIn(f"private key {keyPath} is readable by other users", log)
        self.assertIn("expired on", log)
        self.assertEqual(peerCertificate(port).subject.rfc4514_string(), "CN=localhost")
