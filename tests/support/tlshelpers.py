"""
TLS test helpers: the test CA made with C{cryptography} (for flip's listeners
and for pebble's HTTPS alike), and real TLS clients (Python's ssl,
C{openssl s_client}, C{curl}) that report what a server sent.

Private keys are written with txflip's own L{writePrivate} (atomic, 0600).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import re
import secrets
import socket
import ssl
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from txflip.tls.privatefile import writePrivate

NOW = datetime.datetime.now(datetime.UTC)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _sans(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for n in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            result.append(x509.DNSName(n))
    return result


def keyPEM(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certPEM(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def writePublic(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


class TestCA:
    """A root and an intermediate CA; leaves are issued by the intermediate."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.rootKey = ec.generate_private_key(ec.SECP256R1())
        self.root = self._caCert(_name("txflip test root"), self.rootKey, self.rootKey, None)
        self.interKey = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._caCert(
            _name("txflip test intermediate"), self.interKey, self.rootKey, self.root
        )
        self.caFile = writePublic(os.path.join(directory, "test-root.pem"), certPEM(self.root))

    def _caCert(self, subject, key, signingKey, issuer) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(signingKey, hashes.SHA256())
        )

    def issue(
        self,
        names: list[str],
        key=None,
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
    ) -> tuple[object, x509.Certificate]:
        """A key (new unless given) and a leaf certificate for C{names}."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or NOW - datetime.timedelta(hours=1))
            .not_valid_after(notAfter or NOW + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(self.interKey, hashes.SHA256())
        )
        return key, cert

    def combined(self, path: str, names: list[str], **kw) -> x509.Certificate:
        """Write key + leaf + intermediate to one 0600 file (a certDir entry)."""
        key, cert = self.issue(names, **kw)
        writePrivate(path, keyPEM(key) + certPEM(cert) + certPEM(self.intermediate))
        return cert

    def serverFiles(self, certPath: str, keyPath: str, names: list[str]) -> None:
        """Write a server's key, and its leaf followed by the intermediate (pebble's files)."""
        key, cert = self.issue(names)
        writePublic(certPath, certPEM(cert) + certPEM(self.intermediate))
        writePrivate(keyPath, keyPEM(key))

    def pair(self, directory: str, names: list[str], **kw) -> tuple[str, str, str]:
        """Write key.pem, cert.pem, chain.pem in C{directory}; return their paths."""
        key, cert = self.issue(names, **kw)
        return self.writePair(directory, key, cert)

    def writePair(self, directory: str, key, cert) -> tuple[str, str, str]:
        keyPath = os.path.join(directory, "key.pem")
        writePrivate(keyPath, keyPEM(key))
        certPath = writePublic(os.path.join(directory, "cert.pem"), certPEM(cert))
        chainPath = writePublic(os.path.join(directory, "chain.pem"), certPEM(self.intermediate))
        return keyPath, certPath, chainPath


def clientContext(cafile: str | None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile)


def handshake(
    port: int,
    serverName: str | None = "localhost",
    cafile: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> tuple[x509.Certificate, str, str | None]:
    """Handshake with Python's ssl: the server's leaf certificate, TLS version, ALPN."""
    context = clientContext(cafile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if serverName is None:
        context.check_hostname = False
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=serverName) as tls:
            der = tls.getpeercert(binary_form=True)
            version, alpn = tls.version(), tls.selected_alpn_protocol()
    return x509.load_der_x509_certificate(der), version, alpn


def peerCertificate(port: int, serverName: str | None = "localhost", **kw) -> x509.Certificate:
    return handshake(port, serverName, **kw)[0]


def serialOf(port: int, serverName: str | None = "localhost", **kw) -> int:
    return peerCertificate(port, serverName, **kw).serial_number


def sClient(port: int, serverName: str | None, cafile: str | None = None, host="127.0.0.1"):
    """Run C{openssl s_client}; return (subject CN, serial hex, verify code, output)."""
    args = ["openssl", "s_client", "-connect", f"{host}:{port}"]
    if serverName is None:
        args.append("-noservername")
    else:
        args += ["-servername", serverName]
    if cafile:
        args += ["-CAfile", cafile]
    result = subprocess.run(
        args, input=b"", capture_output=True, timeout=30, stdin=None, check=False
    )
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    certText = re.search(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, flags=re.DOTALL
    )
    serial = None
    if certText:
        serial = x509.load_pem_x509_certificate(certText.group(0).encode()).serial_number
    verify = re.search(r"Verify return code: (\d+)", out)
    return serial, int(verify.group(1)) if verify else None, result.returncode, out


class TLSConnection(http.client.HTTPConnection):
    """An HTTP connection over TLS to an address, with its own SNI name and CA file."""

    def __init__(self, host, port, serverName="localhost", cafile=None, timeout=10.0):
        super().__init__(host, port, timeout=timeout)
        self.serverName = serverName
        self.tlsContext = clientContext(cafile)

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tlsContext.wrap_socket(raw, server_hostname=self.serverName)


def httpsGet(
    port: int,
    path: str = "/sleep?seconds=0",
    cafile: str | None = None,
    serverName: str = "localhost",
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a new TLS connection."""
    conn = TLSConnection(host, port, serverName, cafile, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def serialNumber() -> int:
    return int.from_bytes(secrets.token_bytes(8), "big")
