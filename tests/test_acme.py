"""
ACME against a real ACME server (pebble), with real flip processes.

Every test starts its own DNS server, pebble and flip, and stops them by PID.
"""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import threading

import josepy as jose
from twisted.trial.unittest import TestCase

from tests.support.acmehelpers import HoldingProxy, Pebble, fetchTLS, makeReadOnly
from tests.support.procs import Flip, freePort, httpGet, pidAlive, waitFor
from tests.support.tlshelpers import TestCA
from txflip.acme.store import AcmeStore

NAMES = ("a.test", "b.test")
ISSUED = "ACME: now serving the newly issued certificate"
ORDER = "ACME: new order"


class AcmeTestMixin:
    """One pebble and one flip serving the demo app over ACME-issued HTTPS."""

    def setUpAcme(
        self, pebbleEnv=None, startPebble=True, pebbleHttpPort=None, validitySeconds=None
    ):
        self.httpPort = getattr(self, "httpPort", None) or freePort()
        self.tlsPort = freePort()
        self.pebble = Pebble(
            self,
            pebbleHttpPort or self.httpPort,
            self.tlsPort,
            env=pebbleEnv,
            validitySeconds=validitySeconds,
        )
        if startPebble:
            self.pebble.start()
        self.store = tempfile.mkdtemp(prefix="txflip-acme-store-")

    def flip(self, challenge="http-01", domains="a.test,b.test", extra=(), plain="--listen"):
        flip = Flip(
            self,
            [
                plain,
                f"tcp:{self.httpPort}:interface=127.0.0.1",
                "--acme-listen",
                f"tcp:{self.tlsPort}:interface=127.0.0.1",
                "--acme-domain",
                domains,
                "--acme-dir",
                self.store,
                "--acme-directory",
                self.pebble.directory,
                "--acme-ca-bundle",
                self.pebble.caBundle,
                "--acme-challenge",
                challenge,
                "--acme-retry-min",
                "1",
                *extra,
            ],
        )
        return flip

    def rootFile(self) -> str:
        path = os.path.join(self.pebble.workdir, "pebble-root.pem")
        with open(path, "wb") as f:
            f.write(self.pebble.root())
        return path

    def assertVerifiedFor(self, names, root: str) -> int:
        """Every name is served a certificate that verifies against C{root}; return its serial."""
        serials = set()
        for name in names:
            status, body, cert = fetchTLS(self.tlsPort, name, cafile=root)
            self.assertEqual(status, 200, body[:200])
            serials.add(cert.serial_number)
        self.assertEqual(len(serials), 1)
        return serials.pop()

    def orders(self) -> int:
        return self.pebble.log().count("POST /order-plz")


class IssueTests(AcmeTestMixin, TestCase):
    def test_http01TwoNames(self):
        """Two names, one SAN certificate via HTTP-01; it verifies against pebble's root."""
        self.setUpAcme()
        flip = self.flip("http-01")
        flip.start()
        flip.waitLog(ISSUED, deadline=60)
        self.assertIn("answering http-01 for a.test", flip.log())
        self.assertIn("answering http-01 for b.test", flip.log())
        serial = self.assertVerifiedFor(NAMES, self.rootFile())
        self.assertIn(f"serial {serial:x}", flip.log())
        for path in (
            os.path.join(self.store, "client.key"),
            os.path.join(self.store, "a.test.pem"),
        ):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
        self.assertEqual(self.orders(), 1)
        # The pending answers' directory goes once the order is complete.
        self.assertEqual(
            sorted(os.listdir(self.store)), [".txflip.lock", "a.test.pem", "client.key"]
        )

    def test_http01OnTheRedirectListener(self):
        """
        With --redirect-http as the only plain-HTTP listener, it answers HTTP-01
        and sends everything else to the --acme-listen port.
        """
        self.setUpAcme()
        flip = self.flip("http-01", plain="--redirect-http")
        flip.start()
        flip.waitLog(ISSUED, deadline=60)
        self.assertVerifiedFor(NAMES, self.rootFile())
        status, headers, _ = httpGet("127.0.0.1", self.httpPort, "/page?x=1")
        self.assertEqual(status, 301)
        self.assertEqual(headers["Location"], f"https://127.0.0.1:{self.tlsPort}/page?x=1")

    def test_tlsAlpn01TwoNames(self):
        """The same over TLS-ALPN-01, answered inside the TLS handshake."""
        self.setUpAcme()
        flip = self.flip("tls-alpn-01")
        flip.start()
        flip.waitLog(ISSUED, deadline=60)
        self.assertIn("answering tls-alpn-01 for a.test", flip.log())
        self.assertIn("answering tls-alpn-01 for b.test", flip.log())
        self.assertNotIn("/.well-known/acme-challenge/", flip.log())
        self.assertVerifiedFor(NAMES, self.rootFile())

    def test_badNonceRetried(self):
        """With pebble rejecting half of all good nonces, issuance still succeeds."""
        self.setUpAcme(pebbleEnv={"PEBBLE_WFE_NONCEREJECT": "50"})
        flip = self.flip("http-01")
        flip.start()
        flip.waitLog(ISSUED, deadline=90)
        self.assertIn("badNonce", flip.log())
        self.assertVerifiedFor(NAMES, self.rootFile())


class RestartAndRenewalTests(AcmeTestMixin, TestCase):
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
        self.setUpAcme()
        flip = self.flip(
            "http-01",
            extra=["--acme-renew-days", "100000", "--acme-check-interval", "1"],
        )
        pid = flip.start()
        flip.waitLog(ISSUED, deadline=60)
        root = self.rootFile()
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
        self.setUpAcme()
        flip = self.flip(
            "http-01",
            extra=["--acme-renew-days", "100000", "--acme-check-interval", "1"],
        )
        pid = flip.start()
        flip.waitLog(ISSUED, deadline=60)
        root = self.rootFile()
        self.pebble.kill()
        serial = self.assertVerifiedFor(NAMES, root)
        flip.waitLog("(attempt 2)", deadline=60)
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


class HandoffTests(AcmeTestMixin, TestCase):
    def test_handoffDuringIssuance(self):
        """
        SIGHUP while generation 1 is issuing: generation 2 does not issue (the
        store's lock), answers the challenge generation 1 asked for (the
        shared challenge files), and serves the certificate generation 1
        obtained while draining. Pebble sees one order.
        """
        self.httpPort = freePort()
        proxy = HoldingProxy(self, self.httpPort)
        self.setUpAcme(pebbleHttpPort=proxy.port)
        flip = self.flip("http-01", domains="a.test")
        first = flip.start()
        flip.waitLog("answering http-01 for a.test")
        waitFor(lambda: proxy.held > 0, "pebble's validation request to reach the proxy", 30)
        os.kill(first, signal.SIGHUP)
        second = waitFor(lambda: (p := flip.pid()) != first and p, "a new PID", 60)
        flip.waitServing(second)
        flip.waitLog(f"another process (PID {first}) is issuing")
        flip.waitLog("letting the issuance under way finish")
        proxy.release()
        waitFor(lambda: not pidAlive(first), "generation 1 to exit", 60)
        root = self.rootFile()
        waitFor(
            lambda: _verifies(self.tlsPort, "a.test", root),
            "generation 2 to serve generation 1's certificate",
            60,
        )
        self.assertEqual(flip.pid(), second)
        self.assertEqual(self.orders(), 1)


def _verifies(port: int, name: str, root: str) -> bool:
    try:
        return fetchTLS(port, name, cafile=root)[0] == 200
    except (OSError, ssl.SSLError):
        return False


class FailureTests(AcmeTestMixin, TestCase):
    def test_pebbleDownAtStart(self):
        """With the CA down, the site serves the fallback, then issues once the CA is up."""
        self.setUpAcme(startPebble=False)
        flip = self.flip("http-01")
        flip.start()
        flip.waitLog("SELF-SIGNED fallback")
        flip.waitLog("(attempt 2)", deadline=30)
        self.assertIn(f"cannot reach the CA: GET {self.pebble.directory}", flip.log())
        self.assertNotIn("unexpected error", flip.log())
        status, _, cert = fetchTLS(self.tlsPort, "a.test")
        self.assertEqual(status, 200)
        self.assertEqual(cert.issuer, cert.subject)
        self.pebble.start()
        flip.waitLog(ISSUED, deadline=120)
        self.assertVerifiedFor(NAMES, self.rootFile())

    def test_caErrorRetriedWithBackoff(self):
        """
        Pebble validates HTTP-01 at a server that answers 404: the CA's problem is
        logged, retried with growing delays, and the site keeps serving meanwhile.
        """
        wrongPort = freePort()
        emptyDir = tempfile.mkdtemp(prefix="txflip-empty-")
        wrong = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(wrongPort), "--bind", "127.0.0.1"],
            cwd=emptyDir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(wrong.wait, 10)
        self.addCleanup(wrong.kill)
        self.setUpAcme(pebbleHttpPort=wrongPort)
        flip = self.flip("http-01", domains="a.test")
        flip.start()
        flip.waitLog("(attempt 3)", deadline=60)
        log = flip.log()
        self.assertIn("the CA could not validate a.test by http-01", log)
        self.assertIn("urn:ietf:params:acme:error:unauthorized", log)
        self.assertIn("retrying in 1s", log)
        self.assertIn("retrying in 2s", log)
        self.assertIn("retrying in 4s", log)
        self.assertIn("still serving the self-signed fallback", log)
        status, _, cert = fetchTLS(self.tlsPort, "a.test")
        self.assertEqual(status, 200)
        self.assertEqual(cert.issuer, cert.subject)
        self.assertNotIn(ISSUED, flip.log())

    def test_oneFailingNameDoesNotStopTheOthers(self):
        """
        A certificate whose name cannot be validated backs off on its own; the
        next certificate in the same store is still issued.
        """
        self.setUpAcme()
        flip = self.flip("http-01", domains="nowhere.a.test", extra=("--acme-domain", "b.test"))
        flip.start()
        flip.waitLog(ISSUED, deadline=60)
        flip.waitLog("nowhere.a.test failed (attempt 2)", deadline=60)
        status, _, cert = fetchTLS(self.tlsPort, "b.test", cafile=self.rootFile())
        self.assertEqual(status, 200)
        _, _, fallback = fetchTLS(self.tlsPort, "nowhere.a.test")
        self.assertEqual(fallback.issuer, fallback.subject)

    def test_lockHeldByAnotherProcess(self):
        """While another process holds the store's lock, flip waits, then issues."""
        self.setUpAcme()
        store = AcmeStore(self.store)
        self.assertTrue(store.lock.tryAcquire())
        self.addCleanup(store.lock.release)
        flip = self.flip("http-01")
        flip.start()
        flip.waitLog(f"another process (PID {os.getpid()}) is issuing", deadline=30)
        self.assertEqual(self.orders(), 0)
        store.lock.release()
        flip.waitLog(ISSUED, deadline=60)
        self.assertEqual(self.orders(), 1)


class EndpointTests(AcmeTestMixin, TestCase):
    def test_txacmeEndpoint(self):
        """
        C{le:CERTDIR:SUBENDPOINT} takes its domains from the C{<name>.pem} files
        in CERTDIR, as txacme did, and fills the empty one.
        """
        self.setUpAcme()
        open(os.path.join(self.store, "a.test.pem"), "wb").close()
        flip = Flip(
            self,
            [
                "--listen",
                f"le:{self.store}:tcp:{self.tlsPort}:interface=127.0.0.1",
                "--acme-directory",
                self.pebble.directory,
                "--acme-ca-bundle",
                self.pebble.caBundle,
            ],
        )
        flip.start()
        flip.waitLog(ISSUED, deadline=60)
        self.assertIn("answering tls-alpn-01 for a.test", flip.log())
        self.assertVerifiedFor(["a.test"], self.rootFile())
        with open(os.path.join(self.store, "a.test.pem"), "rb") as f:
            content = f.read()
        self.assertIn(b"PRIVATE KEY", content)
        self.assertIn(b"BEGIN CERTIFICATE", content)

    def test_txacmeEndpointWithoutDomains(self):
        """An le: directory with no <name>.pem file is refused with a one-line fix."""
        store = tempfile.mkdtemp(prefix="txflip-acme-store-")
        flip = Flip(self, ["--listen", f"le:{store}:tcp:{freePort()}:interface=127.0.0.1"])
        flip.start(waitReady=False)
        waitFor(lambda: flip.process.poll() is not None, "flip to exit", 60)
        self.assertNotEqual(flip.process.returncode, 0)
        self.assertIn(
            "no domain to serve: create an empty file named after each domain", flip.stderr()
        )


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
