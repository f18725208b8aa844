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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions

from txflip.certfiles import CertificateError, LoadedCertificate, loadCombined
from txflip.restartlog import log

DEFAULT_FILE = "DEFAULT.pem"


def normalName(name: bytes | str) -> str:
    """A host name as looked up: text, lower case, no trailing dot."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.strip().rstrip(".").lower()


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
    _serverOptions: CertificateOptions | None = None

    def load(self) -> CertificateOptions:
        """
        Read every C{*.pem}, build its context, and return the options that
        serve the default certificate and pick the others by SNI.

        @raise CertificateError: the directory or one of its files is unusable.
        """
        self.path = os.path.abspath(self.path)
        files = self._pemFiles()
        for fileName in files:
            name = normalName(fileName[: -len(".pem")])
            self.certificates[name] = loadCombined(os.path.join(self.path, fileName))
        self.default = self._chooseDefault()

        defaultCert = self.certificates[self.default]
        self._serverOptions = defaultCert.options(self.dhParametersPath, self.contextForName)
        defaultContext = self._build(self.default, self._serverOptions)
        for name, loaded in self.certificates.items():
            if name == self.default:
                self.contexts[name] = defaultContext
            else:
                self.contexts[name] = self._build(name, loaded.options(self.dhParametersPath))
        self._addSubjectAltNames()
        log.info(
            "certificate directory {path}: {count} file(s), serving {names}; default {default}",
            path=self.path,
            count=len(files),
            names=", ".join(sorted(self.contexts)),
            default=self.default,
        )
        return self._serverOptions

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

    def _chooseDefault(self) -> str:
        fromFile = normalName(DEFAULT_FILE[: -len(".pem")])
        if fromFile in self.certificates:
            return fromFile
        if self.defaultName:
            wanted = normalName(self.defaultName)
            if wanted not in self.certificates:
                raise CertificateError(
                    f"default={self.defaultName}: no {wanted}.pem in {self.path}; "
                    "name one of its files (without .pem)"
                )
            return wanted
        return sorted(self.certificates)[0]

    def _build(self, name: str, options: CertificateOptions) -> SSL.Context:
        try:
            return options.getContext()
        except SSL.Error as e:
            raise CertificateError(
                f"cannot build a TLS context for {name} in {self.path}: {e}"
            ) from None

    def _addSubjectAltNames(self) -> None:
        byFile = dict(self.contexts)
        for fileName, loaded in sorted(self.certificates.items()):
            for name in loaded.names():
                self.contexts.setdefault(normalName(name), byFile[fileName])

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
