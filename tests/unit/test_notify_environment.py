"""
Reading systemd's notification variables, carrying them to the next generation,
and the notification socket's address.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from txflip.systemd import notify as sdnotify


class EnvironmentTests(TestCase):
    def test_takenAndRemoved(self) -> None:
        """The variables are read once and removed, so nothing the app starts sees them."""
        env = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}
        settings = sdnotify.takeFromEnvironment(env, pid=42)
        self.assertEqual(settings, sdnotify.NotifySettings("/run/n", 2000000))
        self.assertEqual(env, {})

    def test_watchdogForAnotherProcess(self) -> None:
        """WATCHDOG_PID naming another process means the watchdog is not ours to feed."""
        env = {"NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "41"}
        self.assertEqual(sdnotify.takeFromEnvironment(env, pid=42).watchdogUsec, None)

    def test_carriedToTheNextGeneration(self) -> None:
        """The next generation gets the settings in txflip's variable, not systemd's."""
        carried = sdnotify.NotifySettings("@n", 500000).childEnvironment()
        self.assertEqual(list(carried), [sdnotify.ENV_CARRIED])
        env = dict(carried, WATCHDOG_PID="1")
        self.assertEqual(
            sdnotify.takeFromEnvironment(env, pid=99), sdnotify.NotifySettings("@n", 500000)
        )
        self.assertEqual(env, {})

    def test_addresses(self) -> None:
        self.assertEqual(sdnotify.socketAddress("@abc"), b"\0abc")
        self.assertEqual(sdnotify.socketAddress("/run/systemd/notify"), "/run/systemd/notify")
        self.assertRaises(ValueError, sdnotify.socketAddress, "vsock:2:1234")
