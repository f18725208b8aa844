"""
The C{--acme-*} options of C{twistd flip}: checked, and turned into ACME listeners.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from twisted.python import usage

from txflip.acme import service as acmeservice
from txflip.acme.challenges import HTTP01, TLSALPN01, WithChallenges
from txflip.acme.client import LETSENCRYPT, LETSENCRYPT_STAGING
from txflip.acme.endpoint import AcmeServerEndpoint
from txflip.acme.store import StoreError, checkName, splitPEM

DAY = acmeservice.DAY
# The option definitions live in txflip.acme.options, which options.py imports
# early: this module imports treq, and so twisted.internet.endpoints, which must
# not be imported before socket activation has read LISTEN_FDS, since importing it
# deletes them from os.environ (docs/design.rst).


@dataclass
class FlipAcme:
    """What the options asked for: listeners and the HTTP-01 wrapper."""

    manager: acmeservice.AcmeManager | None
    listen: list[str] = field(default_factory=list)
    answerHttp: bool = False

    def wrap(self, resource):
        if not self.answerHttp:
            return resource
        return WithChallenges(resource, acmeservice.AnyStoreResponder())

    def challengeResource(self):
        """The HTTP-01 answers for a plain-HTTP listener that serves nothing else."""
        from txflip.acme.challenges import HTTP01Resource

        return HTTP01Resource(acmeservice.AnyStoreResponder())

    def httpsPort(self) -> int | None:
        """The port of the first C{--acme-listen}, for redirects to HTTPS."""
        for description in self.listen:
            prefix, _, rest = description.partition(":")
            if prefix in ("tcp", "tcp6"):
                first = rest.split(":", 1)[0]
                if first.isdigit():
                    return int(first)
        return None

    def appProblem(self, kind: str, redirectHttp: bool = False) -> str | None:
        """Why nothing can answer the challenges asked for, or None."""
        onlyHttp = acmeservice.settings.challengeTypes == (HTTP01,)
        if onlyHttp and kind != "resource" and not redirectHttp:
            return (
                "--acme-challenge http-01 is answered by wrapping a Resource app, and this "
                "app is a " + kind + "; add --redirect-http tcp:80 (which answers it), "
                "or use --acme-challenge tls-alpn-01"
            )
        return None

    def endpoints(self, reactor, factory, parse):
        result = []
        for description in self.listen:
            sub = parse(reactor, description)
            result.append(
                (
                    f"acme:{description}",
                    AcmeServerEndpoint(reactor, self.manager, sub),
                    factory,
                )
            )
        return result


def _number(options, name: str) -> float:
    try:
        value = float(options[name])
    except ValueError:
        value = -1
    if not (value > 0 and math.isfinite(value)):
        raise usage.UsageError(f"--{name} {options[name]!r}: give a number above 0")
    return value


def configure(reactor, options) -> FlipAcme | None:
    """
    Check the C{--acme-*} options and set up this process's ACME settings.

    @raise usage.UsageError: with a one-line message, for bad input.
    """
    domains = options.get("acme-domain") or []
    listens = options.get("acme-listen") or []
    usesEndpoint = any(d.split(":", 1)[0] in ("le", "lets") for d in options["listen"])
    if not domains and not listens and not usesEndpoint:
        for name in ("acme-dir", "acme-email", "acme-directory", "acme-ca-bundle"):
            if options.get(name):
                raise usage.UsageError(f"--{name} needs --acme-domain (or an le: listener)")
        return None
    s = acmeservice.settings
    directory = options.get("acme-directory")
    if options.get("acme-staging"):
        if directory:
            raise usage.UsageError("give --acme-staging or --acme-directory, not both")
        directory = LETSENCRYPT_STAGING
    if directory:
        parsed = urlparse(directory)
        if parsed.scheme != "https" or not parsed.netloc:
            raise usage.UsageError(
                f"--acme-directory {directory!r}: give the https:// URL of an ACME directory"
            )
    s.directoryUrl = directory
    bundle = options.get("acme-ca-bundle")
    if bundle:
        try:
            with open(bundle, "rb") as f:
                if not splitPEM(f.read())[1]:
                    raise usage.UsageError(f"--acme-ca-bundle {bundle}: no PEM certificate in it")
        except OSError as e:
            raise usage.UsageError(f"--acme-ca-bundle {bundle}: {e.strerror}") from None
        s.caBundle = os.path.abspath(bundle)
    email = options.get("acme-email")
    if email is not None and ("@" not in email or any(c in email for c in " \t\n,:")):
        raise usage.UsageError(f"--acme-email {email!r}: give one e-mail address")
    s.email = email
    challenge = options.get("acme-challenge") or TLSALPN01
    kinds = tuple(k.strip() for k in challenge.split(",") if k.strip())
    if not kinds or any(k not in (HTTP01, TLSALPN01) for k in kinds):
        raise usage.UsageError(
            f"--acme-challenge {challenge!r}: give tls-alpn-01, http-01, or both comma-separated"
        )
    s.challengeTypes = kinds
    s.renewBefore = _number(options, "acme-renew-days") * DAY
    s.checkInterval = _number(options, "acme-check-interval")
    s.retryMin = _number(options, "acme-retry-min")
    s.retryMax = max(s.retryMax, s.retryMin)

    manager = None
    if domains or listens:
        if not options.get("acme-dir"):
            raise usage.UsageError(
                "--acme-domain needs --acme-dir, the directory to keep certificates in"
            )
        if not domains:
            raise usage.UsageError(
                "--acme-listen needs at least one --acme-domain (the names to certify)"
            )
        if not listens and not usesEndpoint:
            raise usage.UsageError(
                "--acme-domain needs --acme-listen ENDPOINT (e.g. tcp:443) to serve HTTPS on"
            )
        specs = []
        for entry in domains:
            try:
                specs.append(tuple(checkName(n) for n in entry.split(",") if n.strip()))
            except ValueError as e:
                raise usage.UsageError(f"--acme-domain {entry!r}: {e}") from None
        try:
            manager = acmeservice.managerFor(
                reactor, options["acme-dir"], s.directoryUrl or LETSENCRYPT
            )
        except StoreError as e:
            raise usage.UsageError(str(e)) from None
        for spec in specs:
            manager.addSpec(spec)
        path = os.path.realpath(options["acme-dir"])
        s.extraNames[path] = specs
    return FlipAcme(manager, list(listens), answerHttp=True)
