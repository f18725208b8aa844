"""
The names txflip gives the listeners it stores in systemd's fd store
(C{FDNAME=}), and back: the listener key, made reversible within what systemd
allows in a name (printable ASCII without C{:}, at most 255 characters).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

NAME_PREFIX = "txflip."
FDNAME_MAX = 255
# "%" is the escape; everything outside this set is %XX-encoded (as UTF-8).
_KEEP = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ":%")


def nameForKey(key: str) -> str:
    """
    The C{FDNAME=} a listener is stored under. A key too long to fit gives the
    bare prefix: the socket is then found again by its address.
    """
    name = NAME_PREFIX + quote(key, safe=_KEEP, encoding="utf-8")
    return name if len(name) <= FDNAME_MAX else NAME_PREFIX


def isOurs(name: str) -> bool:
    """Whether C{name} was given by txflip."""
    return name.startswith(NAME_PREFIX)


def keyForName(name: str) -> str | None:
    """The listener key C{name} stands for; L{None} if it names none (then map by address)."""
    if not isOurs(name) or name == NAME_PREFIX:
        return None
    try:
        return unquote(name[len(NAME_PREFIX) :], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
