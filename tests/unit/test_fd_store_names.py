"""
The names listeners are stored under in systemd's fd store: valid for systemd
(printable ASCII without ":", at most 255 characters) and mapped back to
exactly the listener key they were made from.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from txflip.systemd.fdnames import FDNAME_MAX, NAME_PREFIX, isOurs, keyForName, nameForKey

KEYS = [
    "tcp:0.0.0.0:8080",
    "tcp:[::1]:8443",
    "tcp:localhost:0",
    "tcp:127.0.0.1:8080#1",
    "unix:/run/myapp/server.pid.control",
    "unix:/srv/my app/100%:done.sock",
    "unix:/srv/caf\u00e9/\u2603.sock",
]


def validForSystemd(name: str) -> bool:
    """What systemd's fdname_is_valid() accepts."""
    return len(name) <= FDNAME_MAX and all(" " <= c < "\x7f" and c != ":" for c in name)


class NameTests(TestCase):
    def test_roundTrip(self) -> None:
        for key in KEYS:
            name = nameForKey(key)
            self.assertTrue(validForSystemd(name), name)
            self.assertTrue(isOurs(name))
            self.assertEqual(keyForName(name), key)

    def test_readable(self) -> None:
        self.assertEqual(nameForKey("tcp:0.0.0.0:8080"), "txflip.tcp%3A0.0.0.0%3A8080")

    def test_tooLong(self) -> None:
        """A key that cannot fit gives the bare prefix, which names no key: found by address."""
        key = "unix:/" + "\u00e9" * 100
        self.assertEqual(nameForKey(key), NAME_PREFIX)
        self.assertIsNone(keyForName(NAME_PREFIX))

    def test_notOurs(self) -> None:
        """A .socket unit's FileDescriptorName= is not a stored listener."""
        for name in ("web", "myapp-activated.socket", "stored", ""):
            self.assertFalse(isOurs(name))
            self.assertIsNone(keyForName(name))

    def test_badEscape(self) -> None:
        self.assertIsNone(keyForName(NAME_PREFIX + "unix%3A/%FF"))
