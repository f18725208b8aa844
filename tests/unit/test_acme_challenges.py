"""
ACME challenges: name matching, answers shared by two generations through
the store, and the challenge path served over a real socket beside the app.
"""

from __future__ import annotations

import hashlib
import json
import tempfile

import treq
from cryptography import x509
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txflip.acme.challenges import (
    HTTP01,
    ID_PE_ACME_IDENTIFIER,
    TLSALPN01,
    ChallengeResponder,
    WithChallenges,
)
from txflip.acme.store import AcmeStore
from txflip.acme.tls import matchName


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
