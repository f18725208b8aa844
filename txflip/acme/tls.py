"""
Server TLS contexts whose certificates can be swapped while serving.

L{SwappableContexts} is the C{contextFactory} of every ACME-managed TLS
listener. Each new connection starts from the current default context; the
SNI callback moves it to the context whose certificate covers the name asked
for; the ALPN callback presents the TLS-ALPN-01 challenge certificate when the
CA asks for C{acme-tls/1}. L{SwappableContexts.setCertificates} builds new
contexts and swaps them in at once: connections already open keep theirs, new
ones get the new certificates, and no listener is restarted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from txflip.acme.challenges import ACME_TLS_ALPN
from txflip.acme.store import splitPEM
from txflip.tls.defaults import contextOptions, toOpenSSL

AlpnCertificateLookup = Callable[[str], "tuple[object, x509.Certificate] | None"]


@dataclass
class ServedCertificate:
    """A key and chain to serve, and the names it covers."""

    keyPEM: bytes
    chainPEM: bytes
    names: list[str]


def matchName(wanted: str, names: list[str]) -> bool:
    """Whether C{wanted} is covered by C{names} (exact, or one-label wildcard)."""
    wanted = wanted.lower()
    for name in names:
        if name == wanted:
            return True
        if name.startswith("*.") and wanted.split(".", 1)[-1] == name[2:] and "." in wanted:
            return True
    return False


def _context(served: ServedCertificate) -> SSL.Context:
    """txflip's modern TLS settings (L{txflip.tls.defaults}) for one certificate."""
    key = serialization.load_pem_private_key(served.keyPEM, password=None)
    _, blocks = splitPEM(served.chainPEM)
    certs = [x509.load_pem_x509_certificate(b) for b in blocks]
    context = contextOptions(*toOpenSSL(key, certs)).getContext()
    context.check_privatekey()
    return context


@implementer(IOpenSSLServerConnectionCreator)
class SwappableContexts:
    """
    @param alpnCertificate: for a name, the challenge (key, certificate) to
        present on C{acme-tls/1}, or None when no TLS-ALPN-01 is pending for it.
    """

    def __init__(self, alpnCertificate: AlpnCertificateLookup | None = None) -> None:
        self._alpnCertificate = alpnCertificate
        self._contexts: list[tuple[list[str], SSL.Context]] = []
        self.served: list[ServedCertificate] = []

    def setCertificates(self, served: list[ServedCertificate]) -> None:
        """Serve C{served} from the next connection on (the first is the default)."""
        contexts = []
        for item in served:
            context = _context(item)
            context.set_tlsext_servername_callback(self._onServerName)
            context.set_alpn_select_callback(self._onAlpn)
            contexts.append((item.names, context))
        self._contexts = contexts
        self.served = list(served)

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        if not self._contexts:
            raise RuntimeError("no certificate to serve yet")
        return SSL.Connection(self._contexts[0][1], None)

    def _contextFor(self, name: str) -> SSL.Context | None:
        for names, context in self._contexts:
            if matchName(name, names):
                return context
        return None

    def _onServerName(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        context = self._contextFor(name.decode("ascii", "replace"))
        if context is not None and context is not connection.get_context():
            connection.set_context(context)

    def _onAlpn(self, connection: SSL.Connection, offered: list[bytes]):
        if ACME_TLS_ALPN in offered and self._alpnCertificate is not None:
            name = (connection.get_servername() or b"").decode("ascii", "replace")
            found = self._alpnCertificate(name) if name else None
            if found is not None:
                key, cert = found
                connection.use_certificate(cert)
                connection.use_privatekey(key)
                return ACME_TLS_ALPN
        if b"http/1.1" in offered:
            return b"http/1.1"
        return SSL.NO_OVERLAPPING_PROTOCOLS
