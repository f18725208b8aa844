"""
Endpoint strings in this process: C{flip-tls:} (parsed directly and through
Twisted's plugin lookup), the HTTPS port a redirect points at, and txacme's
C{le:}/C{lets:} strings.
"""

from __future__ import annotations

import tempfile

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from txflip.tls.endpoint import EndpointSyntaxError, TLSServerEndpoint, TLSServerParser, parseTLS
from txflip.tls.redirect import httpsPortOf


class ParserTests(TestCase):
    def test_modes(self) -> None:
        self.assertIsInstance(parseTLS(reactor, "8443", certDir="/x"), TLSServerEndpoint)
        self.assertIsInstance(parseTLS(reactor, "8443", privateKey="/k"), TLSServerEndpoint)
        self.assertIsInstance(parseTLS(reactor, "8443", selfSigned="/d"), TLSServerEndpoint)
        self.assertIsInstance(parseTLS(reactor, "8443"), TLSServerEndpoint)

    def test_ipv6Interface(self) -> None:
        self.assertEqual(parseTLS(reactor, "8443", interface="::1")._interface, "::1")
        self.assertEqual(parseTLS(reactor, "8443", interface="[::1]")._interface, "::1")

    def test_errors(self) -> None:
        for args, kwargs, words in [
            (("8443",), {"certDir": "/x", "privateKey": "/k"}, "not privateKey and certDir"),
            (("8443",), {"colour": "blue"}, "no option colour"),
            (("port",), {}, "must be numbers"),
            (("8443",), {"certDir": "/x", "certKey": "/c"}, "go with privateKey"),
            (("8443",), {"names": "a"}, None),
            (("8443",), {"reload": "5"}, "go with certDir"),
            (("8443",), {"certDir": "/x", "reload": "soon"}, "reload= takes seconds"),
            (("8443",), {"certDir": "/x", "reload": "0.5"}, None),
        ]:
            if words is None:
                parseTLS(reactor, *args, **kwargs)
                continue
            error = self.assertRaises(EndpointSyntaxError, parseTLS, reactor, *args, **kwargs)
            self.assertIn(words, str(error))
        self.assertRaises(EndpointSyntaxError, TLSServerParser().parseStreamServer, reactor)

    def test_pluginFound(self) -> None:
        from twisted.internet.endpoints import serverFromString

        endpoint = serverFromString(reactor, "flip-tls:8443:interface=\\:\\:1:certDir=/x")
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        self.assertEqual(endpoint._interface, "::1")
        self.assertEqual(serverFromString(reactor, "flip-tls:port=8444")._port, 8444)

    def test_httpsPortOf(self) -> None:
        self.assertEqual(httpsPortOf(["tcp:80", "ssl:8443:privateKey=k"]), 8443)
        self.assertEqual(httpsPortOf(["flip-tls:port=9443:certDir=/x"]), 9443)
        self.assertEqual(httpsPortOf(["flip-tls:9444:interface=\\:\\:1"]), 9444)
        self.assertEqual(httpsPortOf(["tls:/certs:port=8444"]), 8444)
        self.assertEqual(httpsPortOf(["tls:/certs"]), 443)
        self.assertIsNone(httpsPortOf(["tcp:80"]))


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
