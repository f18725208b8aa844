"""
Bad input about what to serve: one line on stderr that says what is wrong and
how to fix it, a non-zero exit, and nothing left running.
"""

from __future__ import annotations

import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import MULTICAST, TAC_WITHOUT_APPLICATION, writeFile
from tests.support.apps import appEnv, writeApp
from tests.support.procs import freePort, refusedAtStart


class BadAppInputTests(TestCase):
    def _refused(self, *args: str, twistdArgs: tuple[str, ...] = (), workdir=None) -> str:
        workdir = workdir or tempfile.mkdtemp(prefix="txflip-test-")
        return refusedAtStart(
            self, ["--no-control", *args], twistdArgs, workdir=workdir, env=appEnv(workdir)
        )

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
