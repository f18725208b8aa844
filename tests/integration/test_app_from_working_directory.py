"""
C{--app} finds modules in the working directory, as gunicorn and C{python -m}
do: a Django-style project run from its own directory needs no PYTHONPATH.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import TestCase

from tests.support.procs import Flip, freePort, httpGet, refusedAtStart

WSGI = """
import os

def application(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [("mysite pid %d" % os.getpid()).encode()]
"""


class WorkingDirectoryTests(TestCase):
    def test_projectFromItsDirectory(self) -> None:
        """--app mysite.wsgi:application from the project, PYTHONPATH without it: served."""
        project = tempfile.mkdtemp(prefix="txflip-test-")
        os.mkdir(os.path.join(project, "mysite"))
        for name, text in (("__init__.py", ""), ("wsgi.py", WSGI)):
            with open(os.path.join(project, "mysite", name), "w") as f:
                f.write(text)
        self.assertNotIn(project, os.environ.get("PYTHONPATH", ""))
        port = freePort()
        listen = f"tcp:{port}:interface=127.0.0.1"
        flip = Flip(
            self,
            ["--app", "mysite.wsgi:application", "--listen", listen],
            project,
            {"PYTHONDONTWRITEBYTECODE": "1"},
        )
        flip.start()
        second = flip.restart()
        self.assertEqual(httpGet("127.0.0.1", port)[2], f"mysite pid {second}".encode())

    def test_notThereSaysWhereItLooked(self) -> None:
        directory = tempfile.mkdtemp(prefix="txflip-test-")
        line = refusedAtStart(self, ["--app", "mysite.wsgi:application"], workdir=directory)
        self.assertIn(f"no module named 'mysite' (looked in {directory} too)", line)
        self.assertIn("start flip from the directory that holds it", line)
