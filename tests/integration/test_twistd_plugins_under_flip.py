"""
twistd's own plugins under flip, unchanged: `twistd -n flip web --path`,
`--wsgi` and `--resource-script`, each through restarts under a light load
with no failed request, and the plugins listed by `twistd -n flip --help`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import FLASK, writeFile, writePlugin
from tests.support.apps import appEnv, writeApp
from tests.support.procs import Flip, freePort, twistdCommand
from tests.support.together import restartsUnderLoad, startTogether

PID_RPY = """
import os
from twisted.web.resource import Resource

class PID(Resource):
    def getChild(self, name, request):
        return self
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return str(os.getpid()).encode()

resource = PID()
"""

RESTARTS = 5
WEB_ARGS = [("--path", "site"), ("--wsgi", "flaskapp.app"), ("--resource-script", "root.rpy")]


class WebPluginTests(TestCase):
    def _web(self, *webArgs: str) -> tuple[Flip, int]:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "flaskapp", FLASK, release=1)
        os.mkdir(os.path.join(workdir, "site"))
        writeFile(os.path.join(workdir, "site"), "index.rpy", PID_RPY)
        writeFile(workdir, "root.rpy", PID_RPY)
        args = ["web", *webArgs, "--listen", f"tcp:{port}:interface=127.0.0.1"]
        return Flip(self, args, workdir=workdir, env=appEnv(workdir)), port

    def test_pathWsgiAndResourceScript(self):
        """
        web --path (a directory whose .rpy scripts twisted.web runs), web --wsgi (a
        Flask app in twisted.web's own thread pool) and web --resource-script (one
        .rpy as the whole site), restarted side by side under load: no request fails.
        """
        servers = [self._web(*args) for args in WEB_ARGS]
        startTogether([flip for flip, _ in servers])
        named = [
            (" ".join(args), flip, port)
            for args, (flip, port) in zip(WEB_ARGS, servers, strict=True)
        ]
        restartsUnderLoad(self, named, RESTARTS)


class PluginListTests(TestCase):
    def test_helpListsPlugins(self):
        """`twistd -n flip --help` lists twistd's plugins and third-party ones, not flip."""
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        writePlugin(workdir)
        result = subprocess.run(
            [*twistdCommand(), "-n", "flip", "--help"],
            cwd=workdir,
            env=dict(os.environ, **appEnv(workdir)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        plugins = result.stdout.partition("\nPlugins")[2]
        names = [line.split()[0] for line in plugins.splitlines()[1:] if line.startswith("    ")]
        self.assertIn("web", names)
        self.assertIn("dns", names)
        self.assertIn("hello", names)
        self.assertNotIn("flip", names)
