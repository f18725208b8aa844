"""
txacme's endpoint strings, served by txflip's ACMEv2 client.

    le:CERTDIR:SUBENDPOINT      Let's Encrypt
    lets:CERTDIR:SUBENDPOINT    Let's Encrypt staging

Kept light: txflip.acme.endpoint is imported only when an endpoint is parsed,
and only with txflip's acme extra installed (else a one-line error names it).
"""

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _AcmeEndpointParser:
    def __init__(self, prefix: str, directory: str) -> None:
        self.prefix = prefix
        self._directory = directory

    def parseStreamServer(self, reactor, *args, **kwargs):
        from txflip.acme.extra import requireAcmeExtra

        requireAcmeExtra(f"{self.prefix}:")
        from txflip.acme.endpoint import parseAcmeEndpoint

        return parseAcmeEndpoint(reactor, self.prefix, self._directory, args, kwargs)


le = _AcmeEndpointParser("le", "https://acme-v02.api.letsencrypt.org/directory")
lets = _AcmeEndpointParser("lets", "https://acme-staging-v02.api.letsencrypt.org/directory")
