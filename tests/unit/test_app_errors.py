"""
An C{--app} that cannot be loaded: one line that names the problem and the
line of the app's own code involved, never a frame of importlib or txflip.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap

from twisted.trial.unittest import TestCase

from txflip.twistd.appload import AppError, loadApp

MODULES = {
    "needsdep.py": "import txflip_test_no_such_dependency\n",
    "badsyntax.py": "x = 1 +\n",
    "raisesatimport.py": """
        def configure():
            raise RuntimeError("no config file")

        configure()
    """,
    "factories.py": """
        def needsArgument(port):
            return port

        def raisesDeep():
            return _helper()

        def _helper():
            raise ValueError("bad setting")
    """,
}


class AppErrorTests(TestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="txflip-test-")
        package = os.path.join(directory, "errapp")
        os.mkdir(package)
        with open(os.path.join(package, "__init__.py"), "w"):
            pass
        self.files = {}
        for name, text in MODULES.items():
            path = os.path.join(package, name)
            with open(path, "w") as f:
                f.write(textwrap.dedent(text).lstrip("\n"))
            self.files[name] = path
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(self._forgetModules)

    def _forgetModules(self) -> None:
        for name in [m for m in sys.modules if m == "errapp" or m.startswith("errapp.")]:
            del sys.modules[name]

    def _error(self, name: str) -> str:
        message = str(self.assertRaises(AppError, loadApp, name))
        self.assertEqual(message.splitlines(), [message])
        self.assertNotIn("<frozen", message)
        self.assertNotIn("importlib", message)
        self.assertNotIn(os.path.join("txflip", ""), message)
        return message

    def test_noSuchModule(self):
        """A module that is not there: how to fix it, and no location at all."""
        message = self._error("txflip_test_nosuchmodule.site")
        self.assertIn("no module named 'txflip_test_nosuchmodule'", message)
        self.assertIn("PYTHONPATH", message)
        self.assertNotIn("(at ", message)

    def test_noSuchModuleWithColon(self):
        message = self._error("txflip_test_nosuchmodule:site")
        self.assertIn("no module named 'txflip_test_nosuchmodule'", message)
        self.assertNotIn("(at ", message)

    def test_missingDependency(self):
        """The app's module imports something missing: the import line is named."""
        message = self._error("errapp.needsdep.site")
        self.assertIn("No module named 'txflip_test_no_such_dependency'", message)
        self.assertIn(f"(at {self.files['needsdep.py']}:1)", message)

    def test_syntaxError(self):
        message = self._error("errapp.badsyntax:site")
        self.assertIn(f"SyntaxError: invalid syntax (at {self.files['badsyntax.py']}:1)", message)

    def test_raisesAtImport(self):
        message = self._error("errapp.raisesatimport.site")
        self.assertIn("RuntimeError: no config file", message)
        self.assertIn(f"(at {self.files['raisesatimport.py']}:2)", message)

    def test_callableRaises(self):
        """The innermost line of the app's code, not the line in txflip that called it."""
        message = self._error("errapp.factories.raisesDeep")
        self.assertIn("ValueError: bad setting", message)
        self.assertIn(f"(at {self.files['factories.py']}:8)", message)

    def test_callableNeedsArguments(self):
        """A callable that cannot be called with no argument: txflip's call is not named."""
        message = self._error("errapp.factories.needsArgument")
        self.assertIn("calling --app errapp.factories.needsArgument() raised TypeError", message)
        self.assertNotIn("(at ", message)
