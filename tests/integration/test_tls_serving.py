"""
TLS through real C{twistd flip} processes and real clients (Python's ssl,
C{openssl s_client} with and without SNI, C{curl --cacert}): Twisted's
C{ssl:} and C{tls:} strings, C{flip-tls:} certificate directories with SNI,
renewed files, self-signed certificates and the HTTPS redirect, each handed
over at a restart.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess

from twisted.web.http import H2_ENABLED

from tests.support.procs import Flip, freePort, ipv6LoopbackWorks, waitFor
from tests.support.tlsflip import TLSFlipCase, curl
from tests.support.tlshelpers import (
    TestCA,
    certPEM,
    handshake,
    peerCertificate,
    sClient,
    serialOf,
    writePublic,
)
from txflip.tls.privatefile import writePrivate


class SSLEndpointTests(TLSFlipCase):
    """Twisted's own C{ssl:} strings with C{--listen}."""

    def test_renewedFilesServedAfterSighup(self) -> None:
        """Replaced certificate files: same serial until SIGHUP, the new one after."""
        flip = Flip(self, [])
        self.flip = flip
        self.ca = TestCA(flip.workdir)
        _, first = self.replacePair(["localhost", "127.0.0.1"])
        chain = writePublic(self.path("chain.pem"), certPEM(self.ca.intermediate))
        port = freePort()
        description = (
            f"ssl:{port}:interface=127.0.0.1:privateKey={self.path('key.pem')}"
            f":certKey={self.path('cert.pem')}:extraCertChain={chain}"
        )
        flip.args = ["--listen", description]
        oldPid = flip.start()
        self.assertEqual(serialOf(port, cafile=self.ca.caFile), first.serial_number)

        _, renewed = self.replacePair(["localhost", "127.0.0.1"])
        self.assertEqual(serialOf(port, cafile=self.ca.caFile), first.serial_number)
        newPid = flip.restart()
        self.assertNotEqual(newPid, oldPid)
        self.assertEqual(serialOf(port, cafile=self.ca.caFile), renewed.serial_number)

        serial, verify, _, out = sClient(port, "localhost", self.ca.caFile)
        self.assertEqual((serial, verify), (renewed.serial_number, 0), out)
        result = curl("--cacert", self.ca.caFile, f"https://127.0.0.1:{port}/sleep?seconds=0")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f'"pid": {newPid}'.encode(), result.stdout)

    def test_ipv6Interface(self) -> None:
        if not ipv6LoopbackWorks():
            self.skipTest("no IPv6 loopback")
        flip = Flip(self, [])
        self.flip = flip
        self.ca = TestCA(flip.workdir)
        self.replacePair(["localhost", "::1"])
        port = freePort(socket.AF_INET6, "::1")
        flip.args = [
            "--listen",
            f"ssl:{port}:interface=\\:\\:1:privateKey={self.path('key.pem')}"
            f":certKey={self.path('cert.pem')}",
        ]
        first = flip.start()
        self.assertIn(f"listening on tcp:[::1]:{port}", flip.log())
        cert = peerCertificate(port, "localhost", host="::1")
        second = flip.restart()
        self.assertNotEqual(first, second)
        self.assertIn(f"adopted inherited listener tcp:[::1]:{port}", flip.log())
        self.assertEqual(
            peerCertificate(port, "localhost", host="::1").serial_number, cert.serial_number
        )


class TwistedTLSDirectoryTests(TLSFlipCase):
    """Twisted's own C{tls:PATH} endpoint is handed over too, and reads renewed files."""

    def test_handedOverAndRenewed(self) -> None:
        flip = self.makeFlip([])
        path = os.path.join(self.certs, "localhost.pem")
        first = self.ca.combined(path, ["localhost"])
        port = freePort()
        flip.args = ["--listen", f"tls:{self.certs}:port={port}:interface=127.0.0.1"]
        pid = flip.start()
        self.assertEqual(serialOf(port, "localhost", cafile=self.ca.caFile), first.serial_number)
        renewed = self.ca.combined(path + ".new", ["localhost"])
        os.replace(path + ".new", path)
        self.assertNotEqual(flip.restart(), pid)
        self.assertIn(f"adopted inherited listener tcp:127.0.0.1:{port}", flip.log())
        self.assertEqual(serialOf(port, "localhost", cafile=self.ca.caFile), renewed.serial_number)


class CertificateDirectoryTests(TLSFlipCase):
    def test_sniAndDefault(self) -> None:
        flip = self.makeFlip([])
        serials = {
            name: self.ca.combined(os.path.join(self.certs, f"{name}.pem"), [name]).serial_number
            for name in ("a.test", "b.test", "fallback.test")
        }
        wildcard = self.ca.combined(os.path.join(self.certs, "*.w.test.pem"), ["*.w.test"])
        port = freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{port}:interface=127.0.0.1:certDir={self.certs}:default=fallback.test",
        ]
        flip.start()
        for name, expected in [
            ("a.test", serials["a.test"]),
            ("b.test", serials["b.test"]),
            ("x.w.test", wildcard.serial_number),
            ("unknown.test", serials["fallback.test"]),
            (None, serials["fallback.test"]),
        ]:
            serial, verify, code, out = sClient(port, name, self.ca.caFile)
            self.assertEqual(serial, expected, f"{name}: {out}")
            self.assertEqual(verify, 0, out)
            self.assertEqual(code, 0, out)
            self.assertEqual(serialOf(port, name, cafile=None), expected)

        result = curl(
            "--cacert",
            self.ca.caFile,
            "--resolve",
            f"b.test:{port}:127.0.0.1",
            f"https://b.test:{port}/sleep?seconds=0",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        # twisted.web's Site offers h2 first when twisted[http2] is installed (docs/tls.rst).
        _, version, alpn = handshake(port, "a.test", cafile=self.ca.caFile)
        self.assertEqual((alpn, version), ("h2" if H2_ENABLED else "http/1.1", "TLSv1.3"))

    def test_oldProtocolsRefused(self) -> None:
        flip = self.makeFlip([])
        self.ca.combined(os.path.join(self.certs, "a.test.pem"), ["a.test"])
        port = freePort()
        flip.args = ["--listen", f"flip-tls:{port}:interface=127.0.0.1:certDir={self.certs}"]
        flip.start()
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1", "-cipher",
             "DEFAULT:@SECLEVEL=0"],
            input=b"", capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"alert protocol version", result.stdout + result.stderr)
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
            input=b"", capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_sessionsResumed(self) -> None:
        """The session cache is on: a returning client resumes (TLS 1.2 and 1.3)."""
        flip = self.makeFlip([])
        self.ca.combined(os.path.join(self.certs, "localhost.pem"), ["localhost"])
        port = freePort()
        flip.args = ["--listen", f"flip-tls:{port}:interface=127.0.0.1:certDir={self.certs}"]
        flip.start()
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = ssl.create_default_context(cafile=self.ca.caFile)
            context.maximum_version = version
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):  # TLS 1.3 sessions arrive after the handshake
                    pass
                session = tls.session
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                self.assertTrue(tls.session_reused, version)

    def test_renewedFileServedAfterSighup(self) -> None:
        flip = self.makeFlip([])
        path = os.path.join(self.certs, "a.test.pem")
        first = self.ca.combined(path, ["a.test"])
        port = freePort()
        flip.args = ["--listen", f"flip-tls:{port}:interface=127.0.0.1:certDir={self.certs}"]
        flip.start()
        self.assertEqual(serialOf(port, "a.test"), first.serial_number)
        renewed = self.ca.combined(path + ".new", ["a.test"])
        os.replace(path + ".new", path)
        flip.restart()
        self.assertEqual(serialOf(port, "a.test"), renewed.serial_number)

    def test_changedFileServedWithoutRestart(self) -> None:
        """With reload=, a renewed file is served by the same generation."""
        flip = self.makeFlip([])
        path = os.path.join(self.certs, "a.test.pem")
        first = self.ca.combined(path, ["a.test"])
        port = freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{port}:interface=127.0.0.1:certDir={self.certs}:reload=0.2",
        ]
        pid = flip.start()
        self.assertEqual(serialOf(port, "a.test"), first.serial_number)
        writePrivate(path, b"-----BEGIN PRIVATE KEY-----\nhalf a")  # a renewal caught mid-write
        flip.waitLog("changed but cannot be used")
        self.assertEqual(serialOf(port, "a.test"), first.serial_number)
        renewed = self.ca.combined(path, ["a.test"])
        waitFor(
            lambda: serialOf(port, "a.test") == renewed.serial_number, "the renewed certificate"
        )
        self.assertEqual(flip.pid(), pid)
        self.assertIn("changed: now serving a.test", flip.log())


class SelfSignedTests(TLSFlipCase):
    def test_storedAndKeptAcrossRestarts(self) -> None:
        flip = self.makeFlip([])
        where = self.path("dev-certs")
        port = freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{port}:interface=127.0.0.1:selfSigned={where}:names=localhost,127.0.0.1",
        ]
        flip.start()
        stored = os.path.join(where, "selfsigned.pem")
        self.assertEqual(stat.S_IMODE(os.stat(stored).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(where).st_mode), 0o700)
        first = peerCertificate(port, "localhost", cafile=stored)
        flip.restart()
        self.assertEqual(peerCertificate(port, "localhost", cafile=stored), first)
        self.assertEqual(flip.log().count("SELF-SIGNED CERTIFICATE"), 2)
        result = curl("--cacert", stored, f"https://localhost:{port}/sleep?seconds=0",
                      "--resolve", f"localhost:{port}:127.0.0.1")  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)

        # A whole new server (not a restart) serves the same certificate too.
        flip.terminate()
        again = Flip(self, flip.args, workdir=flip.workdir)
        again.start()
        self.assertEqual(peerCertificate(port, "localhost", cafile=stored), first)


class RedirectTests(TLSFlipCase):
    def test_redirectListenerHandedOver(self) -> None:
        flip = self.makeFlip([])
        self.ca.combined(os.path.join(self.certs, "127.0.0.1.pem"), ["127.0.0.1", "localhost"])
        httpsPort, httpPort = freePort(), freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{httpsPort}:interface=127.0.0.1:certDir={self.certs}",
            "--redirect-http",
            f"tcp:{httpPort}:interface=127.0.0.1",
        ]
        pids = [flip.start()]
        for generation in range(2):
            result = curl("-i", f"http://127.0.0.1:{httpPort}/a/b?c=d")
            self.assertIn(b"HTTP/1.1 301", result.stdout)
            self.assertIn(
                f"Location: https://127.0.0.1:{httpsPort}/a/b?c=d".encode(), result.stdout
            )
            result = curl("-i", "-X", "POST", "-d", "x=1", f"http://localhost:{httpPort}/form",
                          "--resolve", f"localhost:{httpPort}:127.0.0.1")  # fmt: skip
            self.assertIn(b"HTTP/1.1 308", result.stdout)
            self.assertIn(f"Location: https://localhost:{httpsPort}/form".encode(), result.stdout)
            followed = curl("-L", "--cacert", self.ca.caFile,
                            f"http://127.0.0.1:{httpPort}/sleep?seconds=0")  # fmt: skip
            self.assertEqual(followed.returncode, 0, followed.stderr)
            self.assertIn(f'"pid": {pids[-1]}'.encode(), followed.stdout)
            if generation == 0:
                pids.append(flip.restart())
        self.assertIn(f"adopted inherited listener tcp:127.0.0.1:{httpPort}", flip.log())
