"""
A self-signed certificate for development, kept on disk across restarts.

C{ensureSelfSigned(directory, names)} returns C{DIRECTORY/selfsigned.pem}
(private key + certificate, mode 0600, in a 0700 directory), generating it
with C{cryptography} only when it is missing, does not cover the names asked
for, or expires within a day. Keeping it means every generation, and every
restart of the server, serves the same certificate, so an exception a browser
was told to make keeps working. Every use is logged as a loud warning.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from txflip.core.log import log
from txflip.tls.certfiles import CertificateError, LoadedCertificate, loadCombined
from txflip.tls.privatefile import writePrivate

FILE_NAME = "selfsigned.pem"
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=1)


def defaultDirectory() -> str:
    """C{$XDG_STATE_HOME/txflip/selfsigned}, or C{~/.local/state/txflip/selfsigned}."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "txflip", "selfsigned")


def _subjectAltNames(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _covers(loaded: LoadedCertificate, names: list[str]) -> bool:
    try:
        san = loaded.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_subjectAltNames(names)) <= set(san)


def generate(names: list[str], now: datetime.datetime | None = None) -> bytes:
    """A new P-256 key and a self-signed certificate for C{names}, as one PEM."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "txflip self-signed (development)"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subjectAltNames(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return keyPEM + certificate.public_bytes(serialization.Encoding.PEM)


def _reusable(path: str, names: list[str]) -> LoadedCertificate | None:
    if not os.path.exists(path):
        return None
    try:
        loaded = loadCombined(path)
    except CertificateError as e:
        log.warn("replacing unusable self-signed certificate: {why}", why=e)
        return None
    if not _covers(loaded, names):
        log.warn(
            "replacing self-signed certificate {path}: it is for {had}, not {want}",
            path=path,
            had=", ".join(loaded.names()),
            want=", ".join(names),
        )
        return None
    if loaded.leaf.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        log.warn("replacing self-signed certificate {path}: it expires", path=path)
        return None
    return loaded


def ensureSelfSigned(directory: str, names: list[str] | None = None) -> str:
    """
    The path of a stored self-signed certificate for C{names}, made if needed.

    @raise CertificateError: the directory cannot be created or written.
    """
    names = list(names or DEFAULT_NAMES)
    directory = os.path.abspath(directory)
    path = os.path.join(directory, FILE_NAME)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        loaded = _reusable(path, names)
        made = loaded is None
        if made:
            writePrivate(path, generate(names))
            loaded = loadCombined(path)
    except OSError as e:
        raise CertificateError(
            f"cannot store a self-signed certificate in {directory}: {e.strerror}; "
            "give selfSigned= a directory this user can write"
        ) from None
    fingerprint = loaded.leaf.fingerprint(hashes.SHA256()).hex(":").upper()
    log.warn(
        "*** SELF-SIGNED CERTIFICATE, FOR DEVELOPMENT ONLY *** {how} {path} for {names} "
        "(SHA-256 {fingerprint}); browsers will warn. For production give certDir= or "
        "privateKey=/certKey=",
        how="generated" if made else "serving stored",
        path=path,
        names=", ".join(names),
        fingerprint=fingerprint,
    )
    return path
