"""
What --app decides an object is, and where its errors point: at the user's
file and line, never at txflip's.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import textwrap

from twisted.application.service import IService
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource
from twisted.web.wsgi import WSGIResource

from txflip.twistd.appload import AppError, isWSGIApp, loadApp, rejectTwistdAppOptions

USER_MODULE = """
from flask import Flask
from klein import Klein
from twisted.web.resource import Resource

flask = Flask(__name__)
klein = Klein()

def wsgiFunction(environ, start_response):
    return []

class WSGIObject:
    def __call__(self, environ, start_response, extra=None):
        return []

def createFlask():
    return Flask("made")

def resourceFactory():
    return Resource()

def anything(*args, **kwargs):
    return Resource()

def needsConfig(config, debug, verbose):
    return Resource()

def raisesWhenCalled():
    raise LookupError("no settings file")
"""

TAC_RAISES = """
from twisted.application import service
application = service.Application("x")
raise OSError("cannot open the database")
"""

TAC_GOOD = """
from twisted.application import service
application = service.Application("x")
"""


class AppKindTests(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.module = f"userapp_{id(self)}"
        self.path = self._write(self.module + ".py", USER_MODULE)
        sys.path.insert(0, self.directory)
        self.addCleanup(sys.path.remove, self.directory)
        self.addCleanup(sys.modules.pop, self.module, None)
        importlib.invalidate_caches()

    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def _load(self, attr: str):
        return loadApp(f"{self.module}:{attr}")

    def _lineOf(self, text: str) -> int:
        with open(self.path) as f:
            return next(n for n, line in enumerate(f, 1) if text in line)

    def test_wsgiApps(self):
        """Flask, a function and an object with the WSGI signature, and a factory's Flask."""
        for attr in ("flask", "wsgiFunction", "WSGIObject", "createFlask"):
            loaded = self._load(attr)
            self.assertEqual(loaded.kind, "resource", attr)
            self.assertIsInstance(loaded.app, WSGIResource, attr)
        # The class was called: the resource serves an instance of it.
        served = self._load("WSGIObject").app._application  # twisted.web.wsgi keeps no public name
        self.assertIsInstance(served, importlib.import_module(self.module).WSGIObject)

    def test_wsgiRule(self):
        """Exactly two required positional arguments; a callable that needs none is not WSGI."""
        module = importlib.import_module(self.module)
        self.assertTrue(isWSGIApp(module.WSGIObject()))
        self.assertFalse(isWSGIApp(module.anything))
        self.assertFalse(isWSGIApp(module.resourceFactory))
        self.assertFalse(isWSGIApp(module))

    def test_klein(self):
        loaded = self._load("klein")
        self.assertEqual(loaded.kind, "resource")
        self.assertTrue(IResource.providedBy(loaded.app))

    def test_factories(self):
        """A callable that can be called with no argument is, as before, called."""
        self.assertEqual(self._load("resourceFactory").kind, "resource")
        self.assertEqual(self._load("anything").kind, "resource")

    def test_needsArgumentsPointsAtTheDefinition(self):
        with self.assertRaises(AppError) as caught:
            self._load("needsConfig")
        self.assertIn("needs arguments (config, debug, verbose)", str(caught.exception))
        self.assertIn(
            f"(defined at {self.path}:{self._lineOf('def needsConfig')})", str(caught.exception)
        )

    def test_raisingCallablePointsAtUserCode(self):
        with self.assertRaises(AppError) as caught:
            self._load("raisesWhenCalled")
        message = str(caught.exception)
        self.assertIn("LookupError: no settings file", message)
        self.assertIn(f"(at {self.path}:{self._lineOf('raise LookupError')})", message)
        self.assertNotIn("txflip", message.replace(self.module, ""))

    def test_importErrorPointsAtUserCode(self):
        self._write(self.module + ".py", "import os\nx = 1 / 0\n")
        with self.assertRaises(AppError) as caught:
            self._load("app")
        self.assertIn(
            f"ZeroDivisionError: division by zero (at {self.path}:2)", str(caught.exception)
        )

    def test_syntaxErrorPointsAtUserCode(self):
        self._write(self.module + ".py", "import os\ndef broken(:\n")
        with self.assertRaises(AppError) as caught:
            self._load("app")
        self.assertIn(f"(at {self.path}:2)", str(caught.exception))

    def test_tacFile(self):
        loaded = loadApp(self._write("server.tac", TAC_GOOD))
        self.assertEqual(loaded.kind, "service")
        self.assertTrue(IService.providedBy(loaded.app))

    def test_tacRaisingPointsAtTheTac(self):
        path = self._write("server.tac", TAC_RAISES)
        with self.assertRaises(AppError) as caught:
            loadApp(path)
        self.assertIn(f"OSError: cannot open the database (at {path}:4)", str(caught.exception))

    def test_missingTac(self):
        with self.assertRaises(AppError) as caught:
            loadApp(os.path.join(self.directory, "nothere.tac"))
        self.assertIn("cannot read --app", str(caught.exception))
        self.assertIn("No such file or directory", str(caught.exception))


class TwistdAppOptionTests(TestCase):
    """twistd's -y, -s and -f, parsed by twistd itself, together with flip."""

    def _parsed(self, *args: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions([*args, "flip", "--no-control"])
        return options

    def test_refused(self):
        for flag, name in (("-y", "server.tac"), ("-s", "server.tas"), ("-f", "saved.tap")):
            with self.assertRaises(AppError) as caught:
                rejectTwistdAppOptions(self._parsed(flag, name))
            self.assertIn(f"{name} does nothing under flip", str(caught.exception))
            self.assertIn("--app", str(caught.exception))

    def test_defaultsAccepted(self):
        """twistd's default -f (twistd.tap) is not something the operator asked for."""
        rejectTwistdAppOptions(self._parsed())
        rejectTwistdAppOptions(None)

    def test_pluginArgumentsKept(self):
        """Everything after the plugin's name is the plugin's, unparsed until it runs."""
        flip = self._parsed("-n").subOptions
        self.assertIsNone(flip["plugin"])
        options = ServerOptions()
        options.parseOptions(
            ["flip", "--drain-timeout", "5", "web", "--path", ".", "--listen", "tcp:1"]
        )
        self.assertEqual(options.subOptions["plugin"].name, "web")
        self.assertEqual(options.subOptions["plugin"].args, ("--path", ".", "--listen", "tcp:1"))
        self.assertEqual(options.subOptions["listen"], [])
        self.assertRaises(usage.UsageError, ServerOptions().parseOptions, ["flip", "--nope"])


class SuccessorArgvTests(TestCase):
    def test_pluginArgumentsUnchanged(self):
        """The successor's twistd options go before flip; the plugin's arguments stay as given."""
        from txflip.twistd.compat import successorArgv

        argv = ["python", "twistd", "-n", "flip", "-p", "x.pid", "web", "--path", "flip"]
        self.assertEqual(
            successorArgv(argv, "/venv/python", ["--pidfile="]),
            [
                "/venv/python",
                "twistd",
                "-n",
                "--pidfile=",
                "flip",
                "-p",
                "x.pid",
                "web",
                "--path",
                "flip",
            ],
        )
