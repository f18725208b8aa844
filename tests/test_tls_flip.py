"""
TLS through real C{twistd flip} processes and real clients: Python's ssl,
C{openssl s_client} (with and without SNI) and C{curl --cacert}.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import ssl
import stat
import subprocess

from twisted.python.log import msg
from twisted.trial.unittest import TestCase

from tests.support.procs import Flip, freePort, ipv6LoopbackWorks, pidAlive, waitFor
from tests.support.tlshelpers import (
    NOW,
    TestCA,
    certPEM,
    handshake,
    keyPEM,
    peerCertificate,
    sClient,
    serialOf,
    writePublic,
)
from tests.support.tlsload import TLSLoad, summary
from txflip.tls.privatefile import writePrivate

RESTARTS = 10


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


class RestartUnderLoadTests(TLSFlipCase):
    def test_tenRestartsUnderTLSLoad(self) -> None:
        """
        New-connection and keep-alive clients on a C{flip-tls:} certDir listener
        and an C{ssl:} listener see no failed handshake and no failed request
        through 10 restarts.
        """
        flip = self.makeFlip([])
        self.ca.combined(os.path.join(self.certs, "localhost.pem"), ["localhost", "127.0.0.1"])
        keyPath, certPath, chainPath = self.ca.pair(flip.workdir, ["localhost"])
        dirPort, sslPort = freePort(), freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{dirPort}:interface=127.0.0.1:certDir={self.certs}",
            "--listen",
            f"ssl:{sslPort}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
            f":extraCertChain={chainPath}",
        ]
        pids = [flip.start()]
        loads = [TLSLoad(port, self.ca.caFile).start() for port in (dirPort, sslPort)]
        try:
            for _ in range(RESTARTS):
                before = sum(load.requests() for load in loads)
                waitFor(
                    lambda before=before: sum(load.requests() for load in loads) > before + 20,
                    "requests between restarts",
                )
                pids.append(flip.restart())
            waitFor(
                lambda: all(load.requests() > 0 for load in loads), "requests on both listeners"
            )
        finally:
            results = [r for load in loads for r in load.stop()]
        report = summary(results)
        msg(f"{RESTARTS} restarts under TLS load: {report}")
        self.assertEqual(len(set(pids)), RESTARTS + 1)
        self.assertEqual(sum(r.failedHandshakes for r in results), 0, report)
        self.assertEqual(sum(r.failedRequests for r in results), 0, report)
        for result in results:
            self.assertGreater(result.requests, 0, report)
            if result.kind == "keep-alive":  # really kept alive: one handshake per generation
                self.assertLess(result.handshakes, result.requests // 10, report)
        servedBy = set().union(*(r.pids for r in results))
        self.assertGreaterEqual(len(servedBy), RESTARTS // 2, report)
        self.assertEqual(flip.aliveGenerations(), [pids[-1]])


class BadCertificateTests(TLSFlipCase):
    def test_mismatchAtRestartKeepsOldGeneration(self) -> None:
        flip = self.makeFlip([])
        key, first = self.replacePair(["localhost", "127.0.0.1"])
        port = freePort()
        flip.args = [
            "--listen",
            f"flip-tls:{port}:interface=127.0.0.1:privateKey={self.path('key.pem')}"
            f":certKey={self.path('cert.pem')}",
        ]
        pid = flip.start()
        # A certificate for another key: a renewal that went wrong.
        _, wrong = self.ca.issue(["localhost"])
        writePublic(self.path("cert.pem"), certPEM(wrong))
        os.kill(pid, signal.SIGHUP)
        flip.waitLog("keeps serving")
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
        flip = self.makeFlip([])
        _, first = self.replacePair(["localhost"])
        port = freePort()
        flip.args = [
            "--listen",
            f"ssl:{port}:interface=127.0.0.1:privateKey={self.path('key.pem')}"
            f":certKey={self.path('cert.pem')}",
        ]
        pid = flip.start()
        _, wrong = self.ca.issue(["localhost"])
        writePublic(self.path("cert.pem"), certPEM(wrong))
        os.kill(pid, signal.SIGHUP)
        flip.waitLog("keeps serving")
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
        _, version, alpn = handshake(port, "a.test", cafile=self.ca.caFile)
        self.assertEqual((alpn, version), ("http/1.1", "TLSv1.3"))

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
