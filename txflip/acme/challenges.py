"""
Answering the CA's challenges: HTTP-01 on the plain-HTTP listener, TLS-ALPN-01
inside the TLS handshake.

Pending answers are written to the store (C{.txflip-challenges/}), not only
kept in memory: during a handoff the CA's validation request may reach the
other generation, which then answers from the same files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID, ObjectIdentifier
from twisted.web.resource import Resource

from txflip.acme.store import AcmeStore, newPrivateKey

HTTP01 = "http-01"
TLSALPN01 = "tls-alpn-01"
ACME_TLS_ALPN = b"acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
WELL_KNOWN = b".well-known"
ACME_CHALLENGE = b"acme-challenge"


class ChallengeResponder:
    """
    The L{txflip.acme.client.Responder} for one store.

    @param challengeTypes: the types offered to the CA, in order of preference.
    """

    def __init__(self, store: AcmeStore, challengeTypes: Sequence[str] = (HTTP01,)) -> None:
        self.store = store
        self.challengeTypes = tuple(challengeTypes)
        self._alpnCertificates: dict[str, tuple[str, object, x509.Certificate]] = {}

    def add(self, kind: str, name: str, token: str, keyAuthorization: str) -> None:
        self.store.putChallenge(kind, token if kind == HTTP01 else name, keyAuthorization)

    def remove(self, kind: str, name: str, token: str) -> None:
        self.store.dropChallenge(kind, token if kind == HTTP01 else name)
        self._alpnCertificates.pop(name, None)

    # HTTP-01.

    def http01(self, token: str) -> str | None:
        """The key authorization for C{token}, if some generation is waiting for it."""
        return self.store.getChallenge(HTTP01, token)

    # TLS-ALPN-01.

    def alpnCertificate(self, name: str):
        """The (key, certificate) to present for C{name} on C{acme-tls/1}, if one is pending."""
        keyAuthorization = self.store.getChallenge(TLSALPN01, name)
        if keyAuthorization is None:
            return None
        cached = self._alpnCertificates.get(name)
        if cached is not None and cached[0] == keyAuthorization:
            return cached[1], cached[2]
        key, cert = alpnChallengeCertificate(name, keyAuthorization)
        self._alpnCertificates[name] = (keyAuthorization, key, cert)
        return key, cert


def alpnChallengeCertificate(name: str, keyAuthorization: str):
    """
    The self-signed certificate of RFC 8737: C{name} as its only SAN, and the
    critical acmeIdentifier extension holding SHA-256 of the key authorization.
    """
    key = newPrivateKey()
    digest = hashlib.sha256(keyAuthorization.encode("ascii")).digest()
    # DER OCTET STRING of the 32-byte digest.
    extension = x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txflip acme-tls/1 challenge")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(extension, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class HTTP01Resource(Resource):
    """C{/.well-known/acme-challenge/<token>}: the key authorization, as text."""

    isLeaf = True

    def __init__(self, responder: ChallengeResponder) -> None:
        super().__init__()
        self._responder = responder

    def render_GET(self, request) -> bytes:
        token = request.postpath[0].decode("ascii", "replace") if request.postpath else ""
        answer = self._responder.http01(token) if len(request.postpath) == 1 else None
        if answer is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"no such ACME challenge\n"
        request.setHeader(b"content-type", b"text/plain")
        return answer.encode("ascii")


class WithChallenges(Resource):
    """
    The app's resource, with C{/.well-known/acme-challenge/} answered first.

    Every other path goes to the app untouched.
    """

    def __init__(self, app: Resource, responder: ChallengeResponder) -> None:
        super().__init__()
        self._app = app
        self._challenges = HTTP01Resource(responder)

    def getChildWithDefault(self, path: bytes, request):
        if path == WELL_KNOWN and request.postpath[:1] == [ACME_CHALLENGE]:
            request.prepath.append(request.postpath.pop(0))
            return self._challenges
        if getattr(self._app, "isLeaf", False):
            request.postpath.insert(0, request.prepath.pop())
            return self._app
        return self._app.getChildWithDefault(path, request)

    def render(self, request):
        return self._app.render(request)
