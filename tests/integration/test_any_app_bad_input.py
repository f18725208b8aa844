"""
Bad input about what to serve: one line on stderr that says what is wrong and
how to fix it, a non-zero exit, and nothing left running.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import MULTICAST, TAC_WITHOUT_APPLICATION, writeFile
from tests.support.apps import appEnv, writeApp
from tests.support.procs import freePort, twistdCommand


class BadAppInputTests(TestCase):
    def _refused(self, *args: str, twistdArgs: tuple[str, ...] = (), workdir=None) -> str:
        workdir = workdir or tempfile.mkdtemp(prefix="txflip-test-")
        result = subprocess.run(
            [*twistdCommand(), "-n", *twistdArgs, "flip", "--no-control", *args],
            cwd=workdir,
            env=dict(os.environ, **appEnv(workdir)),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertTrue(errors[0].startswith("twistd flip: error: "), errors[0])
        self.assertFalse(os.path.exists(os.path.join(workdir, "twistd.pid")))
        return errors[0]

    def test_multicast(self):
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeApp(workdir, "announce", MULTICAST, port=freePort())
        line = self._refused("--app", "announce.makeService", workdir=workdir)
        self.assertIn("listenMulticast", line)
        self.assertIn("not supported under txflip", line)

    def test_pluginNotFound(self):
        line = self._refused("nosuchplugin", "--port", "8080")
        self.assertIn("no twistd plugin named 'nosuchplugin': `twistd --help` lists them", line)

    def test_tacWithoutApplication(self):
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeFile(workdir, "server.tac", TAC_WITHOUT_APPLICATION)
        line = self._refused("--app", "server.tac", workdir=workdir)
        self.assertIn("server.tac defines no `application`", line)

    def test_twistdYWithFlip(self):
        """twistd -y with flip would serve the demo instead: refused, pointing at --app."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writeFile(workdir, "server.tac", TAC_WITHOUT_APPLICATION)
        line = self._refused(twistdArgs=("-y", "server.tac"), workdir=workdir)
        self.assertIn("twistd -y/--python server.tac does nothing under flip", line)
        self.assertIn("--app server.tac", line)

    def test_appAndPlugin(self):
        line = self._refused("--app", "txflip.demo.makeResource", "web", "--path", ".")
        self.assertIn("give one of them", line)
