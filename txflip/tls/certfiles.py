"""
Reading and checking certificate and key files, once per generation.

Every problem that makes a certificate unusable (missing, unreadable, not PEM,
encrypted key, key and certificate that do not match) raises
L{CertificateError} with a one-line message that names the file and the fix.
Problems that still let it serve (a key others can read, a certificate that
expired or is not valid yet) are logged as warnings.
"""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from twisted.internet.ssl import CertificateOptions

from txflip.core.log import log
from txflip.tls.defaults import ContextForName, contextOptions, toOpenSSL

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


class CertificateError(Exception):
    """A certificate or key that cannot be used; the message is one line."""


@dataclass
class LoadedCertificate:
    """A private key and its certificate chain (leaf first), and where they came from."""

    key: object
    chain: list[x509.Certificate]
    source: str

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def names(self) -> list[str]:
        """The DNS names the leaf certificate is for (subjectAltName, else its CN)."""
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = san.value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if not names:
            names = [a.value for a in self.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return [str(n).lower() for n in names]

    def options(
        self,
        dhParametersPath: str | None = None,
        contextForServerName: ContextForName | None = None,
    ) -> CertificateOptions:
        """Modern TLS options serving this certificate (see L{txflip.tls.defaults})."""
        key, cert, extra = toOpenSSL(self.key, self.chain)
        return contextOptions(key, cert, extra, dhParametersPath, contextForServerName)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CertificateError(f"{what} {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise CertificateError(f"{what} {path} is a directory: name a PEM file") from None
    except OSError as e:
        raise CertificateError(
            f"cannot read {what} {path}: {e.strerror}; make it readable by this user"
        ) from None


def _loadKey(pem: bytes, path: str):
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise CertificateError(
            f"private key in {path} is encrypted: give an unencrypted key (file mode 0600)"
        ) from None
    except ValueError:
        raise CertificateError(
            f"{path} holds no PEM private key: give the key in PEM form"
        ) from None
    except Exception as e:  # unsupported algorithms and the like
        raise CertificateError(f"cannot load the private key in {path}: {e}") from None


def _loadCertificates(pem: bytes, path: str) -> list[x509.Certificate]:
    if _PEM_CERT not in pem:
        raise CertificateError(f"{path} holds no PEM certificate: give the certificate in PEM form")
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise CertificateError(f"cannot load the certificates in {path}: {e}") from None


def _publicKey(obj) -> bytes:
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _assemble(key, certificates: Sequence[x509.Certificate], source: str) -> LoadedCertificate:
    """Put the certificate that matches the key first; the rest is its chain, in order."""
    mine = _publicKey(key)
    for index, cert in enumerate(certificates):
        if _publicKey(cert) == mine:
            chain = [cert, *certificates[:index], *certificates[index + 1 :]]
            loaded = LoadedCertificate(key, chain, source)
            checkValidity(loaded)
            return loaded
    raise CertificateError(
        f"the private key and certificate in {source} do not match: "
        "give the key the certificate was issued for"
    )


def checkKeyPermissions(path: str) -> None:
    """Warn when a private key file can be read by users other than its owner and group."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warn(
            "private key {path} is readable by other users (mode {mode:o}): chmod 600 it",
            path=path,
            mode=stat.S_IMODE(mode),
        )


def checkValidity(loaded: LoadedCertificate, now: datetime.datetime | None = None) -> None:
    """Warn when the leaf certificate has expired or is not valid yet."""
    now = now or datetime.datetime.now(datetime.UTC)
    leaf = loaded.leaf
    names = ", ".join(loaded.names()) or "no names"
    if leaf.not_valid_after_utc < now:
        log.warn(
            "certificate {source} ({names}) expired on {when}: renew it, then send SIGHUP",
            source=loaded.source,
            names=names,
            when=leaf.not_valid_after_utc.isoformat(),
        )
    elif leaf.not_valid_before_utc > now:
        log.warn(
            "certificate {source} ({names}) is not valid before {when}: check the clock",
            source=loaded.source,
            names=names,
            when=leaf.not_valid_before_utc.isoformat(),
        )


def loadPair(
    keyPath: str, certPath: str | None = None, chainPath: str | None = None
) -> LoadedCertificate:
    """
    Load a key, its certificate (which may be in the key's file) and an
    optional chain file, as Twisted's C{ssl:} endpoint takes them.
    """
    keyPath = os.path.abspath(keyPath)
    certPath = os.path.abspath(certPath) if certPath else keyPath
    key = _loadKey(_read(keyPath, "private key"), keyPath)
    checkKeyPermissions(keyPath)
    certificates = _loadCertificates(_read(certPath, "certificate"), certPath)
    if chainPath:
        chainPath = os.path.abspath(chainPath)
        certificates += _loadCertificates(_read(chainPath, "certificate chain"), chainPath)
    source = keyPath if certPath == keyPath else f"{certPath} (key {keyPath})"
    return _assemble(key, certificates, source)


def loadCombined(path: str) -> LoadedCertificate:
    """Load one PEM file holding a private key, its certificate and the chain."""
    path = os.path.abspath(path)
    pem = _read(path, "certificate file")
    key = _loadKey(pem, path)
    checkKeyPermissions(path)
    return _assemble(key, _loadCertificates(pem, path), path)
