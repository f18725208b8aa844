"""
Whether txflip's C{acme} extra is installed: the packages ACME needs and plain
HTTP does not (C{pip install 'txflip[acme]'}).

Nothing here imports them: asking must not import C{treq}, which imports
C{twisted.internet.endpoints} (docs/design.rst).
"""

from __future__ import annotations

import importlib.util

ACME_PACKAGES = ("acme", "josepy", "treq")
INSTALL = "pip install 'txflip[acme]'"


class AcmeExtraMissing(ImportError):
    """ACME was asked for without the acme extra; the message says how to install it."""


def missingPackage() -> str | None:
    """The first package of the acme extra that cannot be imported, or L{None}."""
    for name in ACME_PACKAGES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def requireAcmeExtra(what: str) -> None:
    """
    @param what: what asked for ACME (C{--acme-domain}, C{le:}), for the message.
    @raise AcmeExtraMissing: the extra is not installed.
    """
    missing = missingPackage()
    if missing is not None:
        raise AcmeExtraMissing(
            f"{what} needs txflip's acme extra, which is not installed "
            f"(no module named {missing!r}): {INSTALL}"
        )
