"""
ACME certificates across restarts and renewals: a restart serves the stored
certificate, renewal swaps certificates without a restart (or keeps the old
one when the CA is gone), short lifetimes are told in hours, the account is
reused by the next process, and a read-only store serves what it holds.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading

from twisted.trial.unittest import TestCase

from tests.support.acmehelpers import ISSUED, NAMES, AcmeTestMixin, fetchTLS, makeReadOnly
from tests.support.procs import Flip, freePort, waitFor
from tests.support.tlshelpers import TestCA


class RestartAndRenewalTests(AcmeTestMixin, TestCase):
    def startRenewingAtEveryCheck(self):
        """
        flip against pebble, with a renewal window longer than any certificate's
        life and a check every second, once its first certificate is issued.

        @return: the flip, its PID and the CA's root certificate file.
        """
        self.setUpAcme()
        flip = self.flip(
            "http-01",
            extra=["--acme-renew-days", "100000", "--acme-check-interval", "1"],
        )
        pid = flip.start()
        flip.waitLog(ISSUED, deadline=60)
        return flip, pid, self.rootFile()

    def test_restartServesStoredCertificate(self):
        """A restart serves the same certificate and places no new order."""
        self.setUpAcme()
        flip = self.flip("http-01")
        first = flip.start()
        flip.waitLog(ISSUED, deadline=60)
        root = self.rootFile()
        serial = self.assertVerifiedFor(NAMES, root)
        self.assertEqual(self.orders(), 1)
        second = flip.restart()
        self.assertNotEqual(first, second)
        self.assertEqual(self.assertVerifiedFor(NAMES, root), serial)
        self.assertEqual(self.orders(), 1)
        flip.waitLog(f"[txflip gen 2 pid {second}] ACME: serving stored certificate")
        self.assertNotIn(f"pid {second}] ACME: requesting", flip.log())

    def test_renewalSwapsWithoutRestart(self):
        """
        With a renewal window longer than the certificate's life, every check
        renews: new serials are served by the same PID, and no request fails.
        """
        flip, pid, root = self.startRenewingAtEveryCheck()
        first = self.assertVerifiedFor(NAMES, root)
        seen: set[int] = set()
        failures: list[str] = []
        done = threading.Event()

        def hammer():
            while not done.is_set():
                try:
                    status, _, cert = fetchTLS(self.tlsPort, "a.test", cafile=root)
                    if status != 200:
                        failures.append(f"status {status}")
                    seen.add(cert.serial_number)
                except (OSError, ssl.SSLError) as e:
                    failures.append(repr(e))

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            waitFor(lambda: len(seen - {first}) >= 2, "two renewed certificates served", 90)
        finally:
            done.set()
            thread.join(30)
        self.assertEqual(failures, [])
        self.assertEqual(flip.pid(), pid)
        self.assertGreaterEqual(flip.log().count(ISSUED), 3)

    def test_renewalFailureKeepsCertificate(self):
        """When renewing fails (the CA is gone), the old certificate stays in service."""
        flip, pid, root = self.startRenewingAtEveryCheck()
        self.pebble.kill()
        # Once a renewal has failed, none that was under way at the kill can still succeed.
        flip.waitLog("failed (attempt 1)", deadline=60)
        serial = self.assertVerifiedFor(NAMES, root)
        flip.waitLog("failed (attempt 2)", deadline=60)
        self.assertIn("still serving the certificate expiring", flip.log())
        self.assertEqual(self.assertVerifiedFor(NAMES, root), serial)
        self.assertEqual(flip.pid(), pid)

    def test_shortLivedCertificate(self):
        """A certificate that lives for hours is said to expire in hours, not in 0.0 days."""
        self.setUpAcme(validitySeconds=3 * 3600)
        flip = self.flip("http-01", extra=["--acme-renew-days", "1", "--acme-check-interval", "1"])
        flip.start()
        flip.waitLog("ACME: requesting a certificate for a.test, b.test: expires in", deadline=60)
        self.assertRegex(
            flip.log(), r"requesting a certificate for a\.test, b\.test: expires in [23]\.\d hours"
        )
        self.assertNotIn("days", flip.log().split(ISSUED, 1)[1])

    def test_accountReusedByTheNextProcess(self):
        """A later process with the same store reuses the account instead of making one."""
        self.setUpAcme()
        first = self.flip("http-01", domains="a.test")
        first.start()
        first.waitLog(ISSUED, deadline=60)
        self.assertIn("ACME: created account", first.log())
        first.terminate()
        second = self.flip("http-01", domains="b.test")
        second.start()
        second.waitLog(ISSUED, deadline=60)
        self.assertIn("ACME: reusing account", second.log())
        self.assertNotIn("ACME: created account", second.log())
        self.assertEqual(self.pebble.log().count("There are now 1 accounts"), 1)
        self.assertNotIn("There are now 2 accounts", self.pebble.log())


class ReadOnlyStoreTests(TestCase):
    def test_servesWhatItHolds(self):
        """
        A store that cannot be written but holds a valid certificate: flip
        starts, serves it, and says loudly that it cannot renew it.
        """
        store = tempfile.mkdtemp(prefix="txflip-acme-store-")
        ca = TestCA(tempfile.mkdtemp(prefix="txflip-ca-"))
        cert = ca.combined(os.path.join(store, "a.test.pem"), ["a.test"])
        makeReadOnly(self, store)
        tlsPort = freePort()
        flip = Flip(
            self,
            [
                "--acme-listen",
                f"tcp:{tlsPort}:interface=127.0.0.1",
                "--acme-domain",
                "a.test",
                "--acme-dir",
                store,
                # Never contacted: nothing can be issued into this store.
                "--acme-directory",
                f"https://127.0.0.1:{freePort()}/dir",
            ],
        )
        flip.start()
        _, _, served = fetchTLS(tlsPort, "a.test", cafile=ca.caFile)
        self.assertEqual(served.serial_number, cert.serial_number)
        flip.waitLog("cannot renew the certificate for a.test (expires in")
        log = flip.log()
        self.assertIn(f"ACME: the store {store} is NOT WRITABLE", log)
        self.assertIn(f"the store {store} is not writable by uid {os.geteuid()}", log)
        self.assertNotIn("requesting a certificate", log)
