"""
The ACME store as an operator finds it: no empty challenge directory left
behind, a warning for modes that let others read it, a read-only store used
for what it holds, and expiry reasons in hours and minutes when they are short.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.acmehelpers import makeReadOnly
from tests.support.tlshelpers import TestCA, certPEM, keyPEM
from txflip.acme.challenges import HTTP01, TLSALPN01
from txflip.acme.service import AcmeManager, AcmeSettings
from txflip.acme.store import CHALLENGES, AcmeStore, StoredCertificate, StoreError


def captureWarnings(testCase) -> list[str]:
    """The text of every txflip warning logged from now until the test ends."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "txflip" and event.get("log_level") == LogLevel.warn:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


def newDirectory(mode: int = 0o700) -> str:
    path = tempfile.mkdtemp(prefix="txflip-acme-store-")
    os.chmod(path, mode)
    return path


class ChallengeDirectoryTests(TestCase):
    def test_goesWithTheLastAnswer(self):
        store = AcmeStore(newDirectory())
        store.putChallenge(HTTP01, "token-1", "answer-1")
        store.putChallenge(TLSALPN01, "a.test", "answer-2")
        store.dropChallenge(HTTP01, "token-1")
        self.assertEqual(store.getChallenge(TLSALPN01, "a.test"), "answer-2")
        store.dropChallenge(TLSALPN01, "a.test")
        self.assertFalse(os.path.exists(os.path.join(store.path, CHALLENGES)))
        store.putChallenge(HTTP01, "token-2", "answer-3")
        self.assertEqual(store.getChallenge(HTTP01, "token-2"), "answer-3")


class LooseModeTests(TestCase):
    def test_looseDirectoryAndKeyWarned(self):
        path = newDirectory(0o755)
        key = os.path.join(path, "client.key")
        with open(key, "w") as f:
            f.write("key")
        os.chmod(key, 0o644)
        warnings = captureWarnings(self)
        AcmeStore(path)
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn(f"the store {path} has mode 0755", warnings[0])
        self.assertIn(f"chmod 700 {path}", warnings[0])
        self.assertIn(f"{key} has mode 0644 and holds a private key: chmod 600 {key}", warnings[1])

    def test_privateStoreQuiet(self):
        path = newDirectory(0o700)
        AcmeStore(path).accountKey()
        warnings = captureWarnings(self)
        AcmeStore(path)
        self.assertEqual(warnings, [])


class ReadOnlyStoreTests(TestCase):
    def test_servedWhenItHoldsACertificate(self):
        path = newDirectory()
        ca = TestCA(tempfile.mkdtemp(prefix="txflip-ca-"))
        ca.combined(os.path.join(path, "a.test.pem"), ["a.test"])
        makeReadOnly(self, path)
        store = AcmeStore(path)
        self.assertFalse(store.writable)
        self.assertIsNotNone(store.load("a.test"))

    def test_refusedWhenItHoldsNothing(self):
        path = newDirectory()
        ca = TestCA(tempfile.mkdtemp(prefix="txflip-ca-"))
        expired = datetime.now(UTC) - timedelta(hours=1)
        ca.combined(
            os.path.join(path, "a.test.pem"),
            ["a.test"],
            notBefore=expired - timedelta(days=1),
            notAfter=expired,
        )
        makeReadOnly(self, path)
        error = self.assertRaises(StoreError, AcmeStore, path)
        self.assertIn("is not writable and holds no valid certificate", str(error))


class ExpiryReasonTests(TestCase):
    def _reason(self, left: timedelta) -> str:
        ca = TestCA(tempfile.mkdtemp(prefix="txflip-ca-"))
        now = datetime.now(UTC)
        key, cert = ca.issue(["a.test"], notBefore=now - timedelta(days=2), notAfter=now + left)
        store = AcmeStore(newDirectory())
        manager = AcmeManager(Clock(), store, [("a.test",)], AcmeSettings(), "https://ca.test/")
        manager.current["a.test"] = StoredCertificate("a.test", keyPEM(key), certPEM(cert), cert)
        return manager.due(("a.test",))

    def test_days(self):
        self.assertRegex(self._reason(timedelta(days=29, hours=13)), r"^expires in 29\.[45] days$")

    def test_hours(self):
        self.assertRegex(self._reason(timedelta(hours=5, minutes=1)), r"^expires in 5\.0 hours$")

    def test_minutes(self):
        self.assertRegex(
            self._reason(timedelta(minutes=12, seconds=30)), r"^expires in 1[23] minutes$"
        )

    def test_expired(self):
        self.assertRegex(self._reason(-timedelta(minutes=30)), r"^expired 30 minutes ago$")
