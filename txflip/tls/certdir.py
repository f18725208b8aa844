"""
A certificate directory served with SNI: one PEM file per host name.

Layout::

    DIR/example.com.pem        private key + certificate + chain for example.com
    DIR/*.example.org.pem      a wildcard (the file's name, star included)
    DIR/DEFAULT.pem            optional: served for unknown names and no SNI

Each file's name (minus C{.pem}) is the host name it serves; the
subjectAltNames in its certificate are served too, unless another file is
named after them. Every file is read, checked and turned into an OpenSSL
context once, when the generation starts listening; a handshake only looks a
name up in a dict. A name nobody serves gets the default certificate: the
handshake is never aborted (txsni 0.2.0 aborts it, which is the bug avoided
here).

The default is C{DEFAULT.pem} if present, else the file named by the
endpoint's C{default=} option, else the first file in sorted order.

A new generation reads the directory fresh. L{CertificateDirectory.reload},
called every C{reload=SECONDS} by the endpoint, also picks up changed, added
and removed files without a restart: when the files' inode, size or mtime
changed, the whole directory is loaded again and, if every file is usable,
swapped in for new handshakes; if not, the certificates already loaded keep
serving and the problem is logged once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from txflip.core.log import log
from txflip.tls.certfiles import CertificateError, LoadedCertificate, loadCombined

DEFAULT_FILE = "DEFAULT.pem"


def normalName(name: bytes | str) -> str:
    """A host name as looked up: text, lower case, no trailing dot."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.strip().rstrip(".").lower()


Signature = tuple[tuple[str, int, int, int], ...]


@implementer(IOpenSSLContextFactory)
class CurrentDefault:
    """The context factory a listener uses: the directory's default context, as it is now."""

    def __init__(self, directory: CertificateDirectory) -> None:
        self._directory = directory

    def getContext(self) -> SSL.Context:
        return self._directory.defaultContext


@dataclass
class Loaded:
    """One consistent reading of the directory."""

    certificates: dict[str, LoadedCertificate]
    contexts: dict[str, SSL.Context]
    default: str
    signature: Signature


@dataclass
class CertificateDirectory:
    """
    Every certificate in C{path}, each with its OpenSSL context, built once.

    @ivar contexts: host name (or C{*.domain}) to the context serving it.
    """

    path: str
    defaultName: str | None = None
    dhParametersPath: str | None = None
    contexts: dict[str, SSL.Context] = field(default_factory=dict)
    certificates: dict[str, LoadedCertificate] = field(default_factory=dict)
    default: str | None = None
    defaultContext: SSL.Context | None = None
    signature: Signature = ()
    _failedSignature: Signature | None = None

    def load(self) -> CurrentDefault:
        """
        Read every C{*.pem}, build its context, and return the context factory
        that serves the default certificate and picks the others by SNI.

        @raise CertificateError: the directory or one of its files is unusable.
        """
        self.path = os.path.abspath(self.path)
        self._use(self._read())
        log.info(
            "certificate directory {path}: {count} file(s), serving {names}; default {default}",
            path=self.path,
            count=len(self.certificates),
            names=", ".join(sorted(self.contexts)),
            default=self.default,
        )
        return CurrentDefault(self)

    def reload(self) -> bool:
        """
        Load the directory again if its files changed; never raises.

        @return: whether new certificates are now served.
        """
        try:
            signature = self._signature(self._pemFiles())
        except (CertificateError, OSError) as e:
            signature, problem = (), str(e)
        else:
            if signature == self.signature:
                return False
            try:
                loaded = self._read()
            except (CertificateError, OSError) as e:
                problem = str(e)
            else:
                self._use(loaded)
                self._failedSignature = None
                log.info(
                    "certificate directory {path} changed: now serving {names}; default {default}",
                    path=self.path,
                    names=", ".join(sorted(self.contexts)),
                    default=self.default,
                )
                return True
        if signature != self._failedSignature:
            self._failedSignature = signature
            log.warn(
                "certificate directory {path} changed but cannot be used: {problem}; "
                "still serving the certificates loaded before",
                path=self.path,
                problem=problem,
            )
        return False

    def _signature(self, files: list[str]) -> Signature:
        result = []
        for fileName in files:
            st = os.stat(os.path.join(self.path, fileName))
            result.append((fileName, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(result)

    def _read(self) -> Loaded:
        files = self._pemFiles()
        signature = self._signature(files)
        certificates = {
            normalName(f[: -len(".pem")]): loadCombined(os.path.join(self.path, f)) for f in files
        }
        default = self._chooseDefault(certificates)
        contexts: dict[str, SSL.Context] = {}
        for name, loaded in certificates.items():
            callback = self.contextForName if name == default else None
            contexts[name] = self._build(name, loaded.options(self.dhParametersPath, callback))
        byFile = dict(contexts)
        for fileName, loaded in sorted(certificates.items()):
            for name in loaded.names():
                contexts.setdefault(normalName(name), byFile[fileName])
        return Loaded(certificates, contexts, default, signature)

    def _use(self, loaded: Loaded) -> None:
        self.certificates = loaded.certificates
        self.contexts = loaded.contexts
        self.default = loaded.default
        self.defaultContext = loaded.contexts[loaded.default]
        self.signature = loaded.signature

    def _pemFiles(self) -> list[str]:
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            raise CertificateError(
                f"certificate directory {self.path} does not exist: create it and put one "
                "NAME.pem (key + certificate + chain) per host name in it"
            ) from None
        except OSError as e:
            raise CertificateError(
                f"cannot read certificate directory {self.path}: {e.strerror}"
            ) from None
        files = sorted(
            e for e in entries if e.endswith(".pem") and os.path.isfile(os.path.join(self.path, e))
        )
        if not files:
            raise CertificateError(
                f"certificate directory {self.path} holds no *.pem file: put one NAME.pem "
                "(key + certificate + chain) per host name in it"
            )
        return files

    def _chooseDefault(self, certificates: dict[str, LoadedCertificate]) -> str:
        fromFile = normalName(DEFAULT_FILE[: -len(".pem")])
        if fromFile in certificates:
            return fromFile
        if self.defaultName:
            wanted = normalName(self.defaultName)
            if wanted not in certificates:
                raise CertificateError(
                    f"default={self.defaultName}: no {wanted}.pem in {self.path}; "
                    "name one of its files (without .pem)"
                )
            return wanted
        return sorted(certificates)[0]

    def _build(self, name: str, options) -> SSL.Context:
        try:
            return options.getContext()
        except SSL.Error as e:
            raise CertificateError(
                f"cannot build a TLS context for {name} in {self.path}: {e}"
            ) from None

    def contextFor(self, serverName: bytes | str | None) -> SSL.Context | None:
        """The context for C{serverName}, or None for the default. Never raises."""
        if not serverName:
            return None
        name = normalName(serverName)
        context = self.contexts.get(name)
        if context is None and "." in name:
            context = self.contexts.get("*." + name.split(".", 1)[1])
        return context

    def contextForName(self, serverName: bytes | None) -> SSL.Context | None:
        """The SNI callback: a context for the name, or None to keep the default."""
        try:
            return self.contextFor(serverName)
        except Exception:
            # Never abort a handshake over a name: the default certificate serves.
            return None
