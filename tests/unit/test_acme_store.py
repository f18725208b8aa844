"""
The ACME store: a private account key that survives a crash while it is
made, the lock between processes, txacme's file names, and challenge tokens
that are not file names.
"""

from __future__ import annotations

import os
import stat
import tempfile

import josepy as jose
from twisted.trial.unittest import TestCase

from txflip.acme.challenges import HTTP01
from txflip.acme.store import ACCOUNT_KEY, AcmeStore


class StoreTests(TestCase):
    def test_accountKeyPrivateAndReused(self):
        store = AcmeStore(tempfile.mkdtemp())
        key = store.accountKey()
        self.assertIsInstance(key, jose.JWKEC)
        path = os.path.join(store.path, "client.key")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(store.accountKey().thumbprint(), key.thumbprint())

    def test_lockExcludesOthers(self):
        path = tempfile.mkdtemp()
        one, two = AcmeStore(path), AcmeStore(path)
        self.assertTrue(one.lock.tryAcquire())
        self.assertFalse(two.lock.tryAcquire())
        self.assertEqual(two.lock.holder(), str(os.getpid()))
        one.lock.release()
        self.assertTrue(two.lock.tryAcquire())
        two.lock.release()

    def test_requestedNamesFollowTxacme(self):
        path = tempfile.mkdtemp()
        for name in ("example.com.pem", "www.example.com.pem", "client.key", "notes.txt"):
            open(os.path.join(path, name), "w").close()
        self.assertEqual(AcmeStore(path).requestedNames(), ["example.com", "www.example.com"])
        self.assertIsNone(AcmeStore(path).load("example.com"))


class AccountKeyTests(TestCase):
    def test_emptyKeyLeftByACrashIsReplaced(self):
        store = AcmeStore(tempfile.mkdtemp(prefix="txflip-acme-store-"))
        path = os.path.join(store.path, ACCOUNT_KEY)
        open(path, "wb").close()
        key = store.accountKey()
        self.assertEqual(store.accountKey().thumbprint(), key.thumbprint())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(
            [n for n in os.listdir(store.path) if n.startswith(ACCOUNT_KEY)], [ACCOUNT_KEY]
        )


class ChallengeTokenTests(TestCase):
    def test_tokensThatAreNotFileNamesFindNothing(self):
        store = AcmeStore(tempfile.mkdtemp(prefix="txflip-acme-store-"))
        store.putChallenge(HTTP01, "good-token_1", "answer")
        self.assertEqual(store.getChallenge(HTTP01, "good-token_1"), "answer")
        for token in ("\x00", "../good-token_1", "a/b", ""):
            self.assertIsNone(store.getChallenge(HTTP01, token), repr(token))
