"""
A broken release of each kind of app (a module, a .tac file, a twistd plugin)
leaves the old generation serving, under load, with no failed request; the
reason logged names the user's file and line, or the fix.
"""

from __future__ import annotations

import os
import signal
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import FLASK, KLEIN, TAC, TAC_WITHOUT_APPLICATION, writeFile, writePlugin
from tests.support.apps import appEnv, writeApp
from tests.support.load import Load
from tests.support.procs import Flip, freePort, waitFor

IMPORT_ERROR = """
import os
def helper():
    raise RuntimeError("release %(release)s is broken on purpose")
helper()
"""

WSGI_NEEDS_MORE = """
def app(environ, start_response, settings):
    start_response("200 OK", [])
    return [b"never"]
"""


class BrokenReleaseTests(TestCase):
    def _flip(self, args: list[str], workdir: str) -> Flip:
        flip = Flip(self, args, workdir=workdir, env=appEnv(workdir))
        flip.start()
        return flip

    def _fails(self, flip: Flip, attempt: int, reason: str) -> None:
        """SIGHUP: the new generation fails for C{reason}; the old one serves on."""
        old = flip.pid()
        os.kill(old, signal.SIGHUP)
        flip.waitLog("keeps serving", count=attempt)
        waitFor(lambda: flip.aliveGenerations() == [old], "the broken generation to be gone")
        self.assertEqual(flip.pid(), old)
        failed = [line for line in flip.log().splitlines() if "keeps serving" in line]
        self.assertIn(reason, failed[attempt - 1])

    def test_brokenReleasesOfEveryKind(self):
        dirs = [tempfile.mkdtemp(prefix="txflip-test-") for _ in range(3)]
        ports = [freePort() for _ in range(3)]
        writeApp(dirs[0], "release", FLASK, release=1)
        writeFile(dirs[1], "server.tac", TAC % {"port": ports[1]})
        writePlugin(dirs[2])
        module = self._flip(
            ["--app", "release:app", "--listen", f"tcp:{ports[0]}:interface=127.0.0.1"], dirs[0]
        )
        tac = self._flip(["--app", "server.tac"], dirs[1])
        plugin = self._flip(["hello", "--port", f"tcp:{ports[2]}:interface=127.0.0.1"], dirs[2])
        loads = [Load("127.0.0.1", p, kinds=("newConnection",), path="/") for p in ports]
        for load in loads:
            load.__enter__()
            self.addCleanup(load.stop)
        release = os.path.join(dirs[0], "release.py")

        writeApp(dirs[0], "release", IMPORT_ERROR, release=2)
        self._fails(module, 1, f"RuntimeError: release 2 is broken on purpose (at {release}:4)")
        writeApp(dirs[0], "release", WSGI_NEEDS_MORE)
        needs = "needs arguments (environ, start_response, settings)"
        self._fails(module, 2, f"{needs} (defined at {release}:2)")
        writeApp(dirs[0], "release", KLEIN, release=3)
        module.restart()

        writeFile(dirs[1], "server.tac", TAC_WITHOUT_APPLICATION)
        self._fails(tac, 1, "server.tac defines no `application`: add `application = ")

        writePlugin(dirs[2], makeService='raise ValueError("no database configured")')
        impl = os.path.join(dirs[2], "hello_plugin_impl.py")
        raised = "the hello plugin raised ValueError: no database configured"
        self._fails(plugin, 1, f"{raised} (at {impl}:18)")

        for load in loads:
            load.stop()
            self.assertEqual(load.failures(), {}, load.failureReport())
            self.assertGreater(load.totalRequests(), 10)
