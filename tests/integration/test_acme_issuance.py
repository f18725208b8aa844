"""
ACME issuance against a real ACME server (pebble), with real flip processes:
HTTP-01 and TLS-ALPN-01, txacme's C{le:} endpoint, a handoff while issuing,
and what happens when the CA fails or another process holds the store.

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

from twisted.trial.unittest import TestCase

from tests.support.acmehelpers import ISSUED, NAMES, AcmeTestMixin, HoldingProxy, fetchTLS
from tests.support.procs import Flip, freePort, httpGet, pidAlive, waitFor
from txflip.acme.store import AcmeStore


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
