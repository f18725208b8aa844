"""
The HTTPS redirect over a real socket, fetched by Twisted's HTTP client,
including the ACME challenge hook.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.static import Data

from txflip.tls.redirect import HTTPSRedirect, redirectSite


class RedirectTests(TestCase):
    """The redirect resource over a real socket, fetched by Twisted's HTTP client."""

    def serve(self, site) -> str:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def fetch(self, url: str, method: bytes = b"GET", host: bytes | None = None):
        headers = Headers({b"host": [host]}) if host else None
        response = yield Agent(reactor).request(method, url.encode(), headers)
        body = yield readBody(response)
        location = response.headers.getRawHeaders(b"location", [None])[0]
        return response.code, location, body

    @inlineCallbacks
    def test_statusAndLocation(self) -> None:
        base = self.serve(redirectSite(8443))
        code, location, _ = yield self.fetch(base + "/a/b?c=d&e=%20f", host=b"Example.TEST:80")
        self.assertEqual((code, location), (301, b"https://example.test:8443/a/b?c=d&e=%20f"))
        code, location, _ = yield self.fetch(base + "/form", b"POST", host=b"example.test")
        self.assertEqual((code, location), (308, b"https://example.test:8443/form"))
        code, location, _ = yield self.fetch(base + "/", b"HEAD", host=b"[::1]:8080")
        self.assertEqual((code, location), (301, b"https://[::1]:8443/"))

    @inlineCallbacks
    def test_defaultPortLeftOut(self) -> None:
        base = self.serve(redirectSite(443))
        code, location, _ = yield self.fetch(base + "/x", host=b"example.test")
        self.assertEqual((code, location), (301, b"https://example.test/x"))

    @inlineCallbacks
    def test_badHost(self) -> None:
        base = self.serve(redirectSite(443))
        code, location, _ = yield self.fetch(base + "/x", host=b"evil.test/path@x")
        self.assertEqual((code, location), (400, None))

    @inlineCallbacks
    def test_challengeResponderHook(self) -> None:
        """The ACME hook: /.well-known/acme-challenge/TOKEN goes to the responder."""
        site = redirectSite(8443)
        base = self.serve(site)
        code, location, _ = yield self.fetch(base + "/.well-known/acme-challenge/tok")
        self.assertEqual(code, 301)  # no responder yet: redirected like the rest

        responder = Resource()
        responder.putChild(b"tok", Data(b"tok.thumbprint", "application/octet-stream"))
        site.redirect.challengeResponder = responder
        self.assertIsInstance(site.redirect, HTTPSRedirect)
        code, location, body = yield self.fetch(base + "/.well-known/acme-challenge/tok")
        self.assertEqual((code, location, body), (200, None, b"tok.thumbprint"))
        code, _, _ = yield self.fetch(base + "/.well-known/acme-challenge/other")
        self.assertEqual(code, 404)
        code, location, _ = yield self.fetch(base + "/x/.well-known/acme-challenge/tok")
        self.assertEqual(code, 301)
        code, location, _ = yield self.fetch(base + "/.well-known/other")
        self.assertEqual(code, 301)
