"""
Reading systemd's socket-activation variables and resolving C{systemd:} listen strings.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from txflip.systemd import activation


class EnvironmentTests(TestCase):
    def test_notForThisProcess(self) -> None:
        """LISTEN_PID naming another process: nothing adopted, the variables still removed."""
        env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
        self.assertFalse(activation.takeActivation(env, pid=2))
        self.assertEqual(env, {})

    def test_descriptions(self) -> None:
        """Each passed socket's address becomes the endpoint the registry adopts it by."""
        self.assertEqual(
            activation.descriptionForKey("tcp:127.0.0.1:80"), "tcp:80:interface=127.0.0.1"
        )
        self.assertEqual(activation.descriptionForKey("tcp:[::]:443"), "tcp6:443:interface=\\:\\:")
        self.assertEqual(activation.descriptionForKey("unix:/run/a.sock"), "unix:/run/a.sock")
        found = activation.Activation([], ["tcp:127.0.0.1:80", "tcp:[::]:443"], ["http", "https"])
        self.assertEqual(
            found.resolve("systemd:domain=INET6:name=https"), "tcp6:443:interface=\\:\\:"
        )
        self.assertEqual(found.resolve("systemd:index=0"), "tcp:80:interface=127.0.0.1")
        self.assertEqual(found.resolve("tcp:8080"), "tcp:8080")
        error = self.assertRaises(activation.ActivationError, found.resolve, "systemd:name=web")
        self.assertIn("no socket named 'web' (names: http, https)", str(error))
