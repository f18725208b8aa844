"""
The TLS listener of the ACME certificates: C{--acme-listen}, and txacme's
C{le:CERTDIR:SUBENDPOINT} / C{lets:CERTDIR:SUBENDPOINT} endpoint strings.

L{AcmeServerEndpoint} listens through the global reactor's C{listenSSL}
(looked up at listen time), so under flip its socket is handed to the next
generation like any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

from txflip.acme.challenges import TLSALPN01
from txflip.acme.service import AcmeManager, managerFor, settings
from txflip.core.twistedprivate import tcpServerAddress


@implementer(IStreamServerEndpoint)
class AcmeServerEndpoint:
    """
    TLS with the certificates of C{manager}, on the address of C{subEndpoint}.

    A TCP sub-endpoint listens through the global reactor's C{listenSSL}
    (looked up at listen time, so txflip's handover registry is used); any
    other is wrapped in C{TLSMemoryBIOFactory} and listened on as it is.
    """

    def __init__(self, reactor, manager: AcmeManager, subEndpoint) -> None:
        self._reactor = reactor
        self.manager = manager
        self._sub = subEndpoint

    def listen(self, factory) -> Deferred:
        from twisted.internet.defer import fail, succeed
        from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

        try:
            self.manager.prepare()
            if isinstance(self._sub, TCP4ServerEndpoint | TCP6ServerEndpoint):
                port, backlog, interface = tcpServerAddress(self._sub)
                port = self._reactor.listenSSL(
                    port, factory, self.manager.contexts, backlog, interface
                )
                result = succeed(port)
            else:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                result = self._sub.listen(
                    TLSMemoryBIOFactory(self.manager.contexts, False, factory)
                )
        except Exception:
            return fail()
        self._reactor.callWhenRunning(self.manager.start)
        return result


def _colonJoin(items: Sequence[str]) -> str:
    return ":".join(item.replace("\\", "\\\\").replace(":", "\\:") for item in items)


def parseAcmeEndpoint(reactor, prefix: str, defaultDirectory: str, args, kwargs):
    """
    C{le:CERTDIR:SUBENDPOINT} (and C{lets:}): txacme's syntax.

    As in txacme, the domains are the C{<name>.pem} files in CERTDIR (create
    an empty one to have a certificate issued for <name>), plus any
    C{--acme-domain} given to flip for the same directory.
    """
    from twisted.internet.endpoints import serverFromString

    if len(args) < 2:
        raise ValueError(
            f"{prefix}: needs a certificate directory and an endpoint, "
            f"e.g. {prefix}:/srv/certs:tcp:443"
        )
    certDir = args[0]
    sub = _colonJoin(list(args[1:]) + [f"{k}={v}" for k, v in kwargs.items()])
    manager = managerFor(reactor, certDir, defaultDirectory)
    for name in manager.store.requestedNames():
        manager.addSpec((name,))
    if not manager.specs:
        raise ValueError(
            f"{prefix}:{certDir}: no domain to serve: create an empty file named after each "
            f"domain, e.g. touch {os.path.join(certDir, 'example.com.pem')}"
        )
    if not settings.challengeTypes:
        settings.challengeTypes = (TLSALPN01,)
    return AcmeServerEndpoint(reactor, manager, serverFromString(reactor, sub))
