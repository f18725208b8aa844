"""
The TLS settings every txflip listener gets: modern, and the same everywhere.

- TLS 1.2 and newer only;
- ALPN offers C{http/1.1}; twisted.web's Site adds C{h2} in front of it
  when Twisted's HTTP/2 support (twisted[http2]) is installed;
- no TLS compression (CRIME);
- the server-side session cache on, so a returning client resumes its
  session instead of paying for a full handshake;
- Twisted's default cipher list (forward-secret AEAD ciphers first).

L{contextOptions} builds a L{CertificateOptions} with those settings;
L{txflip.tls.certfiles} reads and checks the PEM files it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, DiffieHellmanParameters, TLSVersion
from twisted.python.filepath import FilePath

MINIMUM_VERSION = TLSVersion.TLSv1_2
ALPN_PROTOCOLS: tuple[bytes, ...] = (b"http/1.1",)

ContextForName = Callable[[bytes | None], SSL.Context | None]


def contextOptions(
    key: crypto.PKey,
    certificate: crypto.X509,
    chain: Sequence[crypto.X509] = (),
    dhParametersPath: str | None = None,
    contextForServerName: ContextForName | None = None,
) -> CertificateOptions:
    """
    Modern server options for one key and certificate (plus its chain).

    The OpenSSL context is built once, by the first C{getContext()}, and
    reused for every handshake after it.
    """
    return CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=list(chain),
        raiseMinimumTo=MINIMUM_VERSION,
        acceptableProtocols=list(ALPN_PROTOCOLS),
        enableSessions=True,
        dhParameters=(
            DiffieHellmanParameters.fromFile(FilePath(dhParametersPath))
            if dhParametersPath
            else None
        ),
        contextForServerName=contextForServerName,
    )


def toOpenSSL(
    key, certificates: Sequence[x509.Certificate]
) -> tuple[crypto.PKey, crypto.X509, list[crypto.X509]]:
    """Convert a C{cryptography} key and certificate chain (leaf first) for pyOpenSSL."""
    openKey = crypto.PKey.from_cryptography_key(key)
    openCerts = [crypto.X509.from_cryptography(c) for c in certificates]
    return openKey, openCerts[0], openCerts[1:]
