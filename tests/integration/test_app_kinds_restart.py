"""
Apps as their users write them, through restarts under a light load with no
failed request: a Flask app through WSGI (a request in a worker thread
finishes during the drain), a Klein app, and a .tac file.
"""

from __future__ import annotations

import json
import os
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import FLASK, KLEIN, TAC
from tests.support.apps import appEnv, writeApp
from tests.support.load import Load
from tests.support.procs import BackgroundGet, Flip, freePort, waitFor

RESTARTS = 3
KINDS = ("newConnection", "keepAliveGet")


def restartsUnderLoad(testCase, flip: Flip, port: int, restarts: int = RESTARTS) -> list[int]:
    """C{restarts} restarts under a light load; no request fails; each PID served."""
    with Load("127.0.0.1", port, kinds=KINDS, path="/") as load:
        pids = flip.restartsUnderLoad(load, restarts)
    testCase.assertEqual(load.failures(), {}, load.failureReport())
    served = set()
    for result in load.results():
        served.update(result.pids)
    testCase.assertTrue(set(pids) <= served, (pids, served))
    return pids


class AppKindRestartTests(TestCase):
    def _flip(self, module: str, template: str, app: str, *extra: str, **values) -> tuple:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, module, template, release=1, port=port, **values)
        args = ["--app", app, *extra]
        if not app.endswith(".tac"):
            args += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        env = dict(appEnv(workdir), SLOW_MARK=os.path.join(workdir, "slow-started"))
        return Flip(self, args, workdir=workdir, env=env), port

    def test_flaskThroughWSGI(self):
        """A Flask app: restarts lose nothing; a request in a worker thread finishes first."""
        flip, port = self._flip("flaskapp", FLASK, "flaskapp:app")
        first = flip.start()
        slow = BackgroundGet("127.0.0.1", port, "/slow")
        waitFor(lambda: os.path.exists(flip.env["SLOW_MARK"]), "the slow request to start")
        restartsUnderLoad(self, flip, port)
        slow.join()
        self.assertIsNone(slow.error)
        self.assertEqual(slow.response[0], 200)
        self.assertEqual(json.loads(slow.response[2])["pid"], first)

    def test_klein(self):
        """A Klein app, named as the Klein object itself."""
        flip, port = self._flip("kleinapp", KLEIN, "kleinapp:app")
        flip.start()
        restartsUnderLoad(self, flip, port)

    def test_tacFile(self):
        """A .tac file, given to --app by its path, listening by itself."""
        flip, port = self._flip("server", TAC, "server.tac")
        os.rename(os.path.join(flip.workdir, "server.py"), os.path.join(flip.workdir, "server.tac"))
        flip.start()
        restartsUnderLoad(self, flip, port)
