"""
The ACME pieces on their own: Retry-After, problem documents, name matching,
challenge answers shared through the store, and the flip options' errors.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import treq
from acme import messages
from cryptography import x509
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support.procs import Flip, freePort, waitFor
from txflip.acme.challenges import (
    HTTP01,
    ID_PE_ACME_IDENTIFIER,
    TLSALPN01,
    ChallengeResponder,
    WithChallenges,
)
from txflip.acme.client import AcmeError, retryAfter
from txflip.acme.store import AcmeStore
from txflip.acme.tls import matchName


class RetryAfterTests(TestCase):
    def test_seconds(self):
        self.assertEqual(retryAfter(Headers({b"Retry-After": [b"7"]}), 1.0), 7.0)

    def test_httpDate(self):
        now = datetime(2030, 1, 1, tzinfo=UTC)
        when = format_datetime(now + timedelta(seconds=30), usegmt=True).encode()
        self.assertEqual(retryAfter(Headers({b"Retry-After": [when]}), 1.0, now), 30.0)

    def test_missingOrGarbage(self):
        self.assertEqual(retryAfter(Headers(), 2.5), 2.5)
        self.assertEqual(retryAfter(Headers({b"Retry-After": [b"soon"]}), 2.5), 2.5)


class ProblemTests(TestCase):
    def test_problemDocumentInMessage(self):
        problem = messages.Error.from_json(
            {
                "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                "detail": "Error creating new order",
                "subproblems": [
                    {
                        "type": "urn:ietf:params:acme:error:malformed",
                        "detail": "Invalid underscore in DNS name",
                        "identifier": {"type": "dns", "value": "_bad.example"},
                    }
                ],
            }
        )
        error = AcmeError("POST https://ca/new-order failed", problem, 400, "https://ca/new-order")
        text = str(error)
        self.assertEqual(error.code, "rejectedIdentifier")
        self.assertIn(
            "urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order", text
        )
        self.assertIn("_bad.example: urn:ietf:params:acme:error:malformed", text)
        self.assertIn("HTTP 400 from https://ca/new-order", text)
        self.assertNotIn("\n", text)


class NameTests(TestCase):
    def test_match(self):
        self.assertTrue(matchName("A.test", ["a.test"]))
        self.assertTrue(matchName("x.a.test", ["*.a.test"]))
        self.assertFalse(matchName("a.test", ["*.a.test"]))
        self.assertFalse(matchName("y.x.a.test", ["*.a.test"]))
        self.assertFalse(matchName("b.test", ["a.test"]))


class SharedChallengeTests(TestCase):
    """Two generations on one store: either answers what the other asked for."""

    def test_http01(self):
        path = tempfile.mkdtemp()
        asking = ChallengeResponder(AcmeStore(path), (HTTP01,))
        other = ChallengeResponder(AcmeStore(path), (HTTP01,))
        asking.add(HTTP01, "a.test", "tok", "tok.thumb")
        self.assertEqual(other.http01("tok"), "tok.thumb")
        self.assertIsNone(other.http01("../client.key"))
        asking.remove(HTTP01, "a.test", "tok")
        self.assertIsNone(other.http01("tok"))

    def test_tlsAlpn01Certificate(self):
        path = tempfile.mkdtemp()
        asking = ChallengeResponder(AcmeStore(path), (TLSALPN01,))
        other = ChallengeResponder(AcmeStore(path), (TLSALPN01,))
        self.assertIsNone(other.alpnCertificate("a.test"))
        asking.add(TLSALPN01, "a.test", "tok", "tok.thumb")
        _, cert = other.alpnCertificate("a.test")
        extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
        self.assertTrue(extension.critical)
        digest = hashlib.sha256(b"tok.thumb").digest()
        self.assertEqual(extension.value.value, b"\x04\x20" + digest)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["a.test"])


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return json.dumps({"path": request.path.decode()}).encode()


class WithChallengesTests(TestCase):
    """Over a real socket: the challenge path is answered, the rest reaches the app."""

    def setUp(self):
        store = AcmeStore(tempfile.mkdtemp())
        self.responder = ChallengeResponder(store, (HTTP01,))
        self.responder.add(HTTP01, "a.test", "tok", "tok.thumb")
        self.port = reactor.listenTCP(
            0, Site(WithChallenges(Hello(), self.responder)), interface="127.0.0.1"
        )
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def _get(self, path):
        response = await treq.get(self.base + path, persistent=False)
        return response.code, await response.content()

    def test_answersChallenge(self):
        async def go():
            self.assertEqual(
                await self._get("/.well-known/acme-challenge/tok"), (200, b"tok.thumb")
            )
            code, _ = await self._get("/.well-known/acme-challenge/other")
            self.assertEqual(code, 404)

        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(go())

    def test_restGoesToApp(self):
        async def go():
            code, body = await self._get("/some/page")
            self.assertEqual((code, json.loads(body)), (200, {"path": "/some/page"}))
            code, body = await self._get("/.well-known/other")
            self.assertEqual(json.loads(body), {"path": "/.well-known/other"})

        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(go())


class OptionErrorTests(TestCase):
    """Bad --acme-* input: flip exits with one line saying what to fix."""

    def assertRefused(self, args, expected):
        flip = Flip(self, args)
        flip.start(waitReady=False)
        waitFor(lambda: flip.process.poll() is not None, "flip to exit", 60)
        self.assertNotEqual(flip.process.returncode, 0)
        lines = [line for line in flip.stderr().splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(expected, lines[0])

    def test_domainWithoutDir(self):
        self.assertRefused(
            ["--acme-listen", f"tcp:{freePort()}", "--acme-domain", "a.test"],
            "--acme-domain needs --acme-dir",
        )

    def test_badDomain(self):
        self.assertRefused(
            [
                "--acme-listen",
                f"tcp:{freePort()}",
                "--acme-domain",
                "a.test,bad_name!",
                "--acme-dir",
                tempfile.mkdtemp(),
            ],
            "is not a DNS name",
        )

    def test_plainHttpDirectory(self):
        self.assertRefused(
            [
                "--acme-listen",
                f"tcp:{freePort()}",
                "--acme-domain",
                "a.test",
                "--acme-dir",
                tempfile.mkdtemp(),
                "--acme-directory",
                "http://ca.example/dir",
            ],
            "give the https:// URL of an ACME directory",
        )

    def test_missingBundle(self):
        self.assertRefused(
            [
                "--acme-listen",
                f"tcp:{freePort()}",
                "--acme-domain",
                "a.test",
                "--acme-dir",
                tempfile.mkdtemp(),
                "--acme-ca-bundle",
                "/nonexistent/bundle.pem",
            ],
            "--acme-ca-bundle /nonexistent/bundle.pem: No such file or directory",
        )


class EndpointStringTests(TestCase):
    """txacme's strings, through Twisted's plugin lookup."""

    def parse(self, prefix: str):
        from twisted.internet.endpoints import serverFromString

        store = tempfile.mkdtemp()
        open(f"{store}/a.test.pem", "w").close()
        open(f"{store}/www.a.test.pem", "w").close()
        return serverFromString(reactor, f"{prefix}:{store}:tcp:0:interface=127.0.0.1")

    def test_le(self):
        from txflip.acme.client import LETSENCRYPT

        endpoint = self.parse("le")
        self.assertEqual(endpoint.manager.directoryUrl, LETSENCRYPT)
        self.assertEqual(endpoint.manager.specs, [("a.test",), ("www.a.test",)])

    def test_lets(self):
        from txflip.acme.client import LETSENCRYPT_STAGING

        endpoint = self.parse("lets")
        self.assertEqual(endpoint.manager.directoryUrl, LETSENCRYPT_STAGING)
