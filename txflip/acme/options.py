"""
The C{--acme-*} options of C{twistd flip}, and nothing else.

Kept free of heavy imports: C{txflip.twistd.options} imports this before socket
activation has read C{LISTEN_FDS}, and importing C{twisted.internet.endpoints}
(which treq does) would delete them (docs/design.rst, "Importing
twisted.internet.endpoints deletes LISTEN_FDS"). The options are checked
and used in L{txflip.acme.configure}.
"""

from __future__ import annotations

DAY = 86400

OPT_PARAMETERS = [
    [
        "acme-dir",
        None,
        None,
        "ACME store: account key and one PEM file per certificate (created, mode 0700).",
    ],
    ["acme-email", None, None, "Contact e-mail for the ACME account (optional)."],
    [
        "acme-directory",
        None,
        None,
        "ACME directory URL (default: Let's Encrypt; a private CA's URL, or pebble's).",
    ],
    [
        "acme-ca-bundle",
        None,
        None,
        "PEM file of the roots that sign the ACME directory's HTTPS certificate "
        "(default: the system's).",
    ],
    [
        "acme-challenge",
        None,
        None,
        "tls-alpn-01 (answered on --acme-listen, the default) or http-01 "
        "(answered on the plain --listen listeners); both, comma-separated, in order "
        "of preference.",
    ],
    ["acme-renew-days", None, "30", "Renew this many days before expiry."],
    ["acme-check-interval", None, str(DAY // 2), "Seconds between renewal checks."],
    ["acme-retry-min", None, "60", "Seconds before the first retry after a failure (doubles)."],
]
OPT_FLAGS = [["acme-staging", None, "Use Let's Encrypt's staging directory."]]


class AcmeOptionsMixin:
    """Adds the C{--acme-*} options to a L{usage.Options}."""

    def opt_acme_domain(self, names: str) -> None:
        """Names for one certificate, comma-separated (SAN); repeatable."""
        self.setdefault("acme-domain", []).append(names)

    def opt_acme_listen(self, description: str) -> None:
        """An HTTPS endpoint serving the app with the ACME certificates (e.g. tcp:443)."""
        self.setdefault("acme-listen", []).append(description)


def acmeRequested(options) -> bool:
    """
    Whether any C{--acme-*} option without a default, or an C{le:}/C{lets:}
    listener, was given. The ACME code (acme, josepy, treq and requests) is
    imported only then: it would add about a tenth of a second to every
    generation's start, and so to every handoff.
    """
    return acmeRequestedBy(options) is not None


def acmeRequestedBy(options) -> str | None:
    """The first option that asks for ACME (C{--acme-domain}, C{--listen le:...}), if any."""
    for name in (
        "acme-domain",
        "acme-listen",
        "acme-dir",
        "acme-email",
        "acme-directory",
        "acme-ca-bundle",
        "acme-challenge",
        "acme-staging",
    ):
        if options.get(name):
            return f"--{name}"
    for description in options.get("listen", []):
        if description.split(":", 1)[0] in ("le", "lets"):
            return f"--listen {description}"
    return None
