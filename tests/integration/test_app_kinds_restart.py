"""
Apps as their users write them, through restarts under a light load with no
failed request: a Flask app through WSGI (a request in a worker thread
finishes during the drain), a Klein app, and a .tac file.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.anyapps import FLASK, KLEIN, TAC
from tests.support.apps import appEnv, writeApp
from tests.support.procs import BackgroundGet, Flip, freePort, pidAlive, waitFor
from tests.support.together import restartsUnderLoad, startTogether

RESTARTS = 5


class AppKindRestartTests(TestCase):
    def _flip(self, module: str, template: str, app: str) -> tuple[Flip, int]:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, module, template, release=1, port=port)
        args = ["--app", app]
        if app.endswith(".tac"):
            os.rename(os.path.join(workdir, module + ".py"), os.path.join(workdir, app))
        else:
            args += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        env = dict(
            appEnv(workdir),
            SLOW_MARK=os.path.join(workdir, "slow-started"),
            SLOW_GATE=os.path.join(workdir, "slow-may-end"),
        )
        return Flip(self, args, workdir=workdir, env=env), port

    def test_flaskKleinAndTac(self):
        """
        A Flask app (WSGI), a Klein app and a .tac file, restarted side by side under
        load: no request fails. First, a Flask request running in a worker thread
        across a handoff finishes on the generation that took it, during its drain.
        """
        servers = {
            "Flask": self._flip("flaskapp", FLASK, "flaskapp:app"),
            "Klein": self._flip("kleinapp", KLEIN, "kleinapp:app"),
            ".tac": self._flip("server", TAC, "server.tac"),
        }
        first = startTogether([flip for flip, _ in servers.values()])[0]
        flask, flaskPort = servers["Flask"]
        slow = BackgroundGet("127.0.0.1", flaskPort, "/slow")
        waitFor(lambda: os.path.exists(flask.env["SLOW_MARK"]), "the slow request to start")
        os.kill(first, signal.SIGHUP)
        second = waitFor(lambda: (p := flask.pid()) not in (None, first) and p, "a new PID")
        flask.waitServing(second)
        self.assertTrue(pidAlive(first))
        open(flask.env["SLOW_GATE"], "w").close()
        slow.join()
        self.assertIsNone(slow.error)
        self.assertEqual((slow.response[0], json.loads(slow.response[2])["pid"]), (200, first))
        waitFor(lambda: not pidAlive(first), "the first Flask generation to exit")

        named = [(name, flip, port) for name, (flip, port) in servers.items()]
        restartsUnderLoad(self, named, RESTARTS)
