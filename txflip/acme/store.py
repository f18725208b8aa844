"""
The ACME store: a directory holding the account key and one PEM file per certificate.

The layout is txacme's (and txsni's), so a txacme certificate directory can be
used as it is:

    client.key          the ACME account key (PEM), mode 0600
    <name>.pem          private key, certificate and chain for <name> (PEM), mode 0600;
                        an empty file asks for a certificate to be issued
    .txflip.lock        held (flock) by the one process that is issuing right now
    .txflip-challenges/ pending challenge answers, so that every generation can
                        answer a challenge another one asked for; removed with
                        the last one

Every generation reads this directory when it starts, so a restart serves what
is on disk and never asks the CA again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from txflip.core.log import log
from txflip.tls.privatefile import writePrivate

ACCOUNT_KEY = "client.key"
LOCK_FILE = ".txflip.lock"
CHALLENGES = ".txflip-challenges"

_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


class StoreError(Exception):
    """The store cannot be used; the message says what is wrong and how to fix it."""


def checkName(name: str) -> str:
    """A DNS name in lower case, or L{ValueError}."""
    lowered = name.strip().lower().rstrip(".")
    if not lowered or len(lowered) > 253 or not _NAME.match(lowered):
        raise ValueError(f"{name!r} is not a DNS name")
    return lowered


def newPrivateKey() -> ec.EllipticCurvePrivateKey:
    """A new key for an account or a certificate: ECDSA P-256 (fast to make, widely accepted)."""
    return ec.generate_private_key(ec.SECP256R1())


def privateKeyPEM(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class StoredCertificate:
    """One certificate as read from the store."""

    name: str
    keyPEM: bytes
    chainPEM: bytes
    leaf: x509.Certificate

    @property
    def names(self) -> list[str]:
        """The DNS names the certificate is valid for."""
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]

    @property
    def notAfter(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def serial(self) -> int:
        return self.leaf.serial_number

    def expiresIn(self, now: datetime | None = None) -> float:
        """Seconds until it expires (negative once expired)."""
        now = now or datetime.now(UTC)
        return (self.notAfter - now).total_seconds()


_CHALLENGE_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
"""What a token or name may look like before it becomes part of a file name."""


def splitPEM(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The private key blocks and certificate blocks in a PEM file, in order."""
    keys: list[bytes] = []
    certs: list[bytes] = []
    for match in re.finditer(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\r?\n?", data, re.S):
        kind = match.group(1)
        text = match.group(0).strip() + b"\n"
        if kind.endswith(b"PRIVATE KEY"):
            keys.append(text)
        elif kind == b"CERTIFICATE":
            certs.append(text)
    return keys, certs


class IssueLock:
    """
    The store's issuing lock: an C{flock} on C{.txflip.lock}.

    Parent and child generations overlap during a handoff; whoever holds this
    lock is the only one that talks to the CA. It is released when the holder
    releases it or exits.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def tryAcquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds it, as far as the lock file says (for log lines)."""
        try:
            with open(self._path) as f:
                return f.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class AcmeStore:
    """
    The directory at C{path}; created (mode 0700) if it does not exist.

    A store that is not writable is used read-only, as long as it holds a
    certificate that has not expired: what it holds is served, and nothing can
    be issued or renewed until it is writable again (L{checkWritable}).

    @raise StoreError: if it cannot be created, or is neither writable nor
        holding anything to serve.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        existed = os.path.isdir(self.path)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the ACME store {self.path}: {e.strerror}; "
                "create it, writable by the user the server runs as"
            ) from None
        self.lock = IssueLock(os.path.join(self.path, LOCK_FILE))
        if not self.checkWritable() and not self._holdsValidCertificate():
            raise StoreError(
                f"the ACME store {self.path} is not writable and holds no valid certificate "
                "to serve; make it writable by the user the server runs as"
            )
        if existed:
            self._warnIfLoose()

    def checkWritable(self) -> bool:
        """Whether this process may write the store now; also kept in C{writable}."""
        self.writable = os.access(self.path, os.W_OK | os.X_OK)
        return self.writable

    def _holdsValidCertificate(self) -> bool:
        try:
            names = self.requestedNames()
        except OSError:
            return False
        for name in names:
            try:
                stored = self.load(name)
            except (OSError, ValueError, StoreError):
                continue
            if stored is not None and stored.expiresIn() > 0:
                return True
        return False

    def _warnIfLoose(self) -> None:
        """Warn about a store, or a private key in it, that others may read."""
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            entries = sorted(os.listdir(self.path))
        except OSError:
            return
        if mode & 0o077:
            log.warn(
                "ACME: the store {store} has mode {mode:04o}: other users can see what it "
                "holds; chmod 700 {store}",
                store=self.path,
                mode=mode,
            )
        for entry in entries:
            if entry != ACCOUNT_KEY and not entry.endswith(".pem"):
                continue
            path = os.path.join(self.path, entry)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size and stat.S_IMODE(st.st_mode) & 0o077:
                log.warn(
                    "ACME: {path} has mode {mode:04o} and holds a private key: chmod 600 {path}",
                    path=path,
                    mode=stat.S_IMODE(st.st_mode),
                )

    # The account key.

    def accountKey(self) -> jose.JWK:
        """The account key, made and saved (mode 0600) the first time."""
        path = os.path.join(self.path, ACCOUNT_KEY)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        if not data.strip():
            data = self._createAccountKey(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as e:
            raise StoreError(f"{path} is not a PEM private key ({e}); move it away") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return jose.JWKEC(key=key)
        return jose.JWKRSA(key=key)

    @staticmethod
    def _createAccountKey(path: str) -> bytes:
        """
        Make the account key: complete on disk before its name appears, and
        never replacing one another generation made first (but replacing an
        empty file a crash left behind).
        """
        temporary = f"{path}.new.{os.getpid()}"
        writePrivate(temporary, privateKeyPEM(newPrivateKey()))
        try:
            if os.path.exists(path):
                os.replace(temporary, path)
            else:
                os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
        with open(path, "rb") as f:
            return f.read()

    # Certificates.

    def certPath(self, name: str) -> str:
        return os.path.join(self.path, f"{name}.pem")

    def requestedNames(self) -> list[str]:
        """Names with a C{<name>.pem} file, empty or not (txacme's convention)."""
        found = []
        for entry in sorted(os.listdir(self.path)):
            if entry.endswith(".pem") and not entry.startswith("."):
                try:
                    found.append(checkName(entry[: -len(".pem")]))
                except ValueError:
                    continue
        return found

    def load(self, name: str) -> StoredCertificate | None:
        """The certificate stored for C{name}, or None if there is none (or an empty file)."""
        try:
            with open(self.certPath(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if not data.strip():
            return None
        keys, certs = splitPEM(data)
        if not keys or not certs:
            raise StoreError(
                f"{self.certPath(name)} has no private key and certificate; "
                "empty it to have a new one issued"
            )
        leaf = x509.load_pem_x509_certificate(certs[0])
        return StoredCertificate(name, keys[0], b"".join(certs), leaf)

    def save(self, name: str, keyPEM: bytes, chainPEM: bytes) -> StoredCertificate:
        """Store key and chain for C{name} atomically (mode 0600) and return what was stored."""
        _, certificates = splitPEM(chainPEM)
        key = serialization.load_pem_private_key(keyPEM, password=None)
        if not certificates or x509.load_pem_x509_certificate(
            certificates[0]
        ).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise StoreError(
                f"the CA's certificate for {name} does not match the key it was ordered with; "
                "not stored"
            )
        writePrivate(self.certPath(name), keyPEM.strip() + b"\n" + chainPEM.strip() + b"\n")
        stored = self.load(name)
        assert stored is not None
        return stored

    # Pending challenges, shared by every generation using this store.

    def challengeDir(self) -> str:
        path = os.path.join(self.path, CHALLENGES)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def putChallenge(self, kind: str, label: str, keyAuthorization: str) -> None:
        writePrivate(
            os.path.join(self.challengeDir(), f"{kind}-{label}"), keyAuthorization.encode()
        )

    def getChallenge(self, kind: str, label: str) -> str | None:
        if not _CHALLENGE_LABEL.match(label):
            return None
        try:
            with open(os.path.join(self.path, CHALLENGES, f"{kind}-{label}"), "rb") as f:
                return f.read().decode("ascii", "replace")
        except OSError:
            return None

    def dropChallenge(self, kind: str, label: str) -> None:
        """Forget an answer; the directory goes with the last one."""
        directory = os.path.join(self.path, CHALLENGES)
        try:
            os.unlink(os.path.join(directory, f"{kind}-{label}"))
        except OSError:
            pass
        try:
            os.rmdir(directory)
        except OSError:
            pass  # other answers are still pending, or it is gone already
