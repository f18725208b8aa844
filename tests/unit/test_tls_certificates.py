"""
Certificates in this process: checks of key and certificate files, the
modern TLS defaults, the certificate directory (SNI, reload) and self-signed
certificates.
"""

from __future__ import annotations

import datetime
import os
import stat
import tempfile

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.tlshelpers import NOW, TestCA, certPEM, keyPEM, writePublic
from txflip.tls.certdir import CertificateDirectory
from txflip.tls.certfiles import CertificateError, loadCombined, loadPair
from txflip.tls.defaults import ALPN_PROTOCOLS
from txflip.tls.privatefile import writePrivate
from txflip.tls.selfsigned import ensureSelfSigned


class LogCapture:
    """Every formatted txflip log line emitted while the test runs."""

    def __init__(self, testCase: TestCase) -> None:
        from twisted.logger import formatEvent

        self.lines: list[str] = []
        self._observer = lambda event: self.lines.append(formatEvent(event))
        globalLogPublisher.addObserver(self._observer)
        testCase.addCleanup(globalLogPublisher.removeObserver, self._observer)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class CADir(TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="txflip-tls-")
        self.ca = TestCA(self.dir)
        self.logs = LogCapture(self)


class CertificateFileTests(CADir):
    def test_pairWithChain(self) -> None:
        keyPath, certPath, chainPath = self.ca.pair(self.dir, ["example.test", "www.example.test"])
        loaded = loadPair(keyPath, certPath, chainPath)
        self.assertEqual(loaded.names(), ["example.test", "www.example.test"])
        self.assertEqual(len(loaded.chain), 2)
        self.assertEqual(loaded.chain[1].subject, self.ca.intermediate.subject)

    def test_leafFoundWhereverItIs(self) -> None:
        """A combined file with the chain before the leaf still serves the leaf first."""
        key, cert = self.ca.issue(["x.test"])
        path = os.path.join(self.dir, "x.pem")
        writePrivate(path, certPEM(self.ca.intermediate) + keyPEM(key) + certPEM(cert))
        self.assertEqual(loadCombined(path).leaf.serial_number, cert.serial_number)

    def assertOneLineError(self, call, *words: str) -> str:
        error = self.assertRaises(CertificateError, call)
        message = str(error)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)
        return message

    def test_missing(self) -> None:
        missing = os.path.join(self.dir, "nope.pem")
        self.assertOneLineError(lambda: loadPair(missing), missing, "does not exist")

    def test_unreadable(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        keyPath, certPath, _ = self.ca.pair(self.dir, ["a.test"])
        os.chmod(keyPath, 0)
        self.assertOneLineError(lambda: loadPair(keyPath, certPath), keyPath, "cannot read")

    def test_mismatch(self) -> None:
        keyPath, _, _ = self.ca.pair(self.dir, ["a.test"])
        _, other = self.ca.issue(["b.test"])
        otherPath = writePublic(os.path.join(self.dir, "other.pem"), certPEM(other))
        self.assertOneLineError(lambda: loadPair(keyPath, otherPath), "do not match", otherPath)

    def test_directoryGiven(self) -> None:
        self.assertOneLineError(lambda: loadPair(self.dir), self.dir, "is a directory")

    def test_notPEM(self) -> None:
        path = os.path.join(self.dir, "junk.pem")
        writePrivate(path, b"hello\n")
        self.assertOneLineError(lambda: loadCombined(path), "no PEM private key", path)

    def test_keyWithoutCertificate(self) -> None:
        key, _ = self.ca.issue(["a.test"])
        path = os.path.join(self.dir, "key-only.pem")
        writePrivate(path, keyPEM(key))
        self.assertOneLineError(lambda: loadCombined(path), "no PEM certificate", path)

    def test_encryptedKey(self) -> None:
        key, cert = self.ca.issue(["a.test"])
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        path = os.path.join(self.dir, "enc.pem")
        writePrivate(path, encrypted + certPEM(cert))
        self.assertOneLineError(lambda: loadCombined(path), "encrypted", path)

    def test_keyReadableByOthersWarns(self) -> None:
        keyPath, certPath, _ = self.ca.pair(self.dir, ["a.test"])
        loadPair(keyPath, certPath)
        self.assertEqual(self.logs.matching("readable by other users"), [])
        os.chmod(keyPath, 0o644)
        loadPair(keyPath, certPath)
        [line] = self.logs.matching("readable by other users")
        self.assertIn(keyPath, line)
        self.assertIn("chmod 600", line)

    def test_expiredWarns(self) -> None:
        keyPath, certPath, _ = self.ca.pair(
            self.dir,
            ["old.test"],
            notBefore=NOW - datetime.timedelta(days=20),
            notAfter=NOW - datetime.timedelta(days=1),
        )
        loadPair(keyPath, certPath)
        [line] = self.logs.matching("expired on")
        self.assertIn("old.test", line)

    def test_notYetValidWarns(self) -> None:
        keyPath, certPath, _ = self.ca.pair(
            self.dir, ["new.test"], notBefore=NOW + datetime.timedelta(days=1)
        )
        loadPair(keyPath, certPath)
        self.assertEqual(len(self.logs.matching("is not valid before")), 1)


class ModernDefaultsTests(CADir):
    def test_contextOptions(self) -> None:
        keyPath, certPath, chainPath = self.ca.pair(self.dir, ["a.test"])
        context = loadPair(keyPath, certPath, chainPath).options().getContext()
        options = context.set_options(0)  # adds nothing, returns what is set
        self.assertTrue(options & SSL.OP_NO_COMPRESSION)
        self.assertTrue(options & SSL.OP_NO_TLSv1)
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)
        self.assertEqual(context.get_session_cache_mode(), SSL.SESS_CACHE_SERVER)
        self.assertEqual(ALPN_PROTOCOLS, (b"http/1.1",))


class CertificateDirectoryTests(CADir):
    def setUp(self) -> None:
        super().setUp()
        self.certs = os.path.join(self.dir, "certs")
        os.mkdir(self.certs, 0o700)

    def add(self, fileName: str, names: list[str]):
        return self.ca.combined(os.path.join(self.certs, fileName), names)

    def test_oneContextPerNameBuiltOnce(self) -> None:
        self.add("a.test.pem", ["a.test", "alias.a.test"])
        self.add("b.test.pem", ["b.test"])
        directory = CertificateDirectory(self.certs)
        directory.load()
        a = directory.contextFor(b"a.test")
        self.assertIsInstance(a, SSL.Context)
        self.assertIs(directory.contextFor(b"A.TEST."), a)
        self.assertIs(directory.contextFor(b"alias.a.test"), a)
        self.assertIsNot(directory.contextFor(b"b.test"), a)
        self.assertIs(directory.contextFor(b"b.test"), directory.contextFor(b"b.test"))

    def test_unknownAndMissingNamesKeepTheDefault(self) -> None:
        self.add("a.test.pem", ["a.test"])
        directory = CertificateDirectory(self.certs)
        directory.load()
        self.assertIsNone(directory.contextForName(b"unknown.test"))
        self.assertIsNone(directory.contextForName(None))
        self.assertIsNone(directory.contextForName(b"\xff\x00weird"))

    def test_wildcardFile(self) -> None:
        self.add("*.w.test.pem", ["*.w.test"])
        self.add("a.test.pem", ["a.test"])
        directory = CertificateDirectory(self.certs)
        directory.load()
        self.assertIs(directory.contextFor(b"x.w.test"), directory.contexts["*.w.test"])
        self.assertIsNone(directory.contextFor(b"x.y.w.test"))

    def test_defaultChoice(self) -> None:
        self.add("b.test.pem", ["b.test"])
        self.add("c.test.pem", ["c.test"])
        first = CertificateDirectory(self.certs)
        first.load()
        self.assertEqual(first.default, "b.test")
        named = CertificateDirectory(self.certs, defaultName="c.test")
        named.load()
        self.assertEqual(named.default, "c.test")
        self.add("DEFAULT.pem", ["fallback.test"])
        fromFile = CertificateDirectory(self.certs, defaultName="c.test")
        fromFile.load()
        self.assertEqual(fromFile.default, "default")

    def test_unknownDefaultName(self) -> None:
        self.add("a.test.pem", ["a.test"])
        error = self.assertRaises(
            CertificateError, CertificateDirectory(self.certs, defaultName="z.test").load
        )
        self.assertIn("no z.test.pem", str(error))

    def test_emptyAndMissingDirectory(self) -> None:
        error = self.assertRaises(CertificateError, CertificateDirectory(self.certs).load)
        self.assertIn("holds no *.pem", str(error))
        missing = os.path.join(self.dir, "none")
        error = self.assertRaises(CertificateError, CertificateDirectory(missing).load)
        self.assertIn("does not exist", str(error))

    def test_reloadPicksUpChangedFiles(self) -> None:
        self.add("a.test.pem", ["a.test"])
        self.add("b.test.pem", ["b.test"])
        directory = CertificateDirectory(self.certs)
        factory = directory.load()
        oldA = directory.contextFor(b"a.test")
        self.assertIs(factory.getContext(), oldA)
        self.assertFalse(directory.reload())

        renewed = self.add("a.test.pem.new", ["a.test"])
        aside = os.path.join(self.certs, "a.test.pem.new")
        os.replace(aside, os.path.join(self.certs, "a.test.pem"))
        self.assertTrue(directory.reload())
        self.assertIsNot(directory.contextFor(b"a.test"), oldA)
        self.assertIs(factory.getContext(), directory.contextFor(b"a.test"))
        self.assertEqual(directory.certificates["a.test"].leaf, renewed)
        self.assertFalse(directory.reload())
        self.add("c.test.pem", ["c.test"])
        self.assertTrue(directory.reload())
        self.assertIsNotNone(directory.contextFor(b"c.test"))

    def test_reloadKeepsServingOnBadFiles(self) -> None:
        self.add("a.test.pem", ["a.test"])
        directory = CertificateDirectory(self.certs)
        directory.load()
        before = directory.contextFor(b"a.test")
        writePrivate(os.path.join(self.certs, "a.test.pem"), b"half a file")
        self.assertFalse(directory.reload())
        self.assertFalse(directory.reload())
        self.assertIs(directory.contextFor(b"a.test"), before)
        self.assertEqual(len(self.logs.matching("changed but cannot be used")), 1)
        self.add("a.test.pem", ["a.test"])
        self.assertTrue(directory.reload())
        self.assertIsNot(directory.contextFor(b"a.test"), before)

    def test_badFileFailsTheWholeDirectory(self) -> None:
        self.add("a.test.pem", ["a.test"])
        bad = os.path.join(self.certs, "b.test.pem")
        writePrivate(bad, b"not a certificate\n")
        error = self.assertRaises(CertificateError, CertificateDirectory(self.certs).load)
        self.assertIn(bad, str(error))


class SelfSignedTests(CADir):
    def test_storedPrivatelyAndReused(self) -> None:
        where = os.path.join(self.dir, "dev")
        path = ensureSelfSigned(where, ["localhost", "127.0.0.1"])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(where).st_mode), 0o700)
        first = loadCombined(path).leaf
        self.assertEqual(loadCombined(ensureSelfSigned(where, ["localhost"])).leaf, first)
        self.assertEqual(len(self.logs.matching("SELF-SIGNED CERTIFICATE")), 2)
        self.assertEqual(len(self.logs.matching("generated")), 1)

    def test_newNamesMakeANewCertificate(self) -> None:
        where = os.path.join(self.dir, "dev")
        first = loadCombined(ensureSelfSigned(where, ["localhost"])).leaf
        second = loadCombined(ensureSelfSigned(where, ["dev.test"])).leaf
        self.assertNotEqual(first.serial_number, second.serial_number)
        self.assertEqual(loadCombined(os.path.join(where, "selfsigned.pem")).names(), ["dev.test"])

    def test_unwritableDirectory(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root writes anywhere")
        locked = os.path.join(self.dir, "locked")
        os.mkdir(locked, 0o500)
        error = self.assertRaises(
            CertificateError, ensureSelfSigned, os.path.join(locked, "dev"), ["localhost"]
        )
        self.assertIn("cannot store a self-signed certificate", str(error))
