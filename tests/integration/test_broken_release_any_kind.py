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
    def _failed(self, flip: Flip, old: int, attempt: int, reason: str) -> None:
        """The generation SIGHUP number C{attempt} started failed for C{reason}; C{old} serves."""
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
        args = [
            ["--app", "release:app", "--listen", f"tcp:{ports[0]}:interface=127.0.0.1"],
            ["--app", "server.tac"],
            ["hello", "--port", f"tcp:{ports[2]}:interface=127.0.0.1"],
        ]
        module, tac, plugin = flips = [
            Flip(self, a, workdir=d, env=appEnv(d)) for a, d in zip(args, dirs, strict=True)
        ]
        olds = [flip.start(waitReady=False) for flip in flips]
        for flip, old in zip(flips, olds, strict=True):
            flip.waitServing(old)
        loads = [Load("127.0.0.1", p, kinds=("newConnection",), path="/") for p in ports]
        for load in loads:
            load.__enter__()
            self.addCleanup(load.stop)

        # One broken release of each kind, all at once.
        writeApp(dirs[0], "release", IMPORT_ERROR, release=2)
        writeFile(dirs[1], "server.tac", TAC_WITHOUT_APPLICATION)
        writePlugin(dirs[2], makeService='raise ValueError("no database configured")')
        for old in olds:
            os.kill(old, signal.SIGHUP)
        release = os.path.join(dirs[0], "release.py")
        broken = f"RuntimeError: release 2 is broken on purpose (at {release}:4)"
        self._failed(module, olds[0], 1, broken)
        self._failed(tac, olds[1], 1, "server.tac defines no `application`: add `application = ")
        impl = os.path.join(dirs[2], "hello_plugin_impl.py")
        raised = "the hello plugin raised ValueError: no database configured"
        self._failed(plugin, olds[2], 1, f"{raised} (at {impl}:18)")

        # A module whose WSGI app has the wrong signature, then a good release of another kind.
        writeApp(dirs[0], "release", WSGI_NEEDS_MORE)
        os.kill(olds[0], signal.SIGHUP)
        needs = "needs arguments (environ, start_response, settings)"
        self._failed(module, olds[0], 2, f"{needs} (defined at {release}:2)")
        writeApp(dirs[0], "release", KLEIN, release=3)
        module.restart()

        for load in loads:
            load.stop()
            self.assertEqual(load.failures(), {}, load.failureReport())
            self.assertGreater(load.totalRequests(), 10)
