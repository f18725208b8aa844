"""
The package as it is built and installed: the wheel and sdist hold every module
and plugin, twistd finds the plugin, and both commands know txflip's version.
(That nothing shadows Twisted's packages is in tests/unit/test_package_layout.py.)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.procs import twistdCommand
from txflip import __version__

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sourceFiles(*tops: str) -> set[str]:
    """Every C{.py} file under C{tops} in the source tree, relative to it."""
    found = set()
    for top in tops:
        for directory, dirnames, filenames in os.walk(os.path.join(TOP, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if name.endswith(".py"):
                    found.add(os.path.relpath(os.path.join(directory, name), TOP))
    return found


class PluginTests(TestCase):
    def test_twistdListsFlip(self):
        """C{twistd --help} lists flip, with no complaint about the plugin cache."""
        result = subprocess.run(
            [*twistdCommand(), "--help"], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("flip ", result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("Unable", result.stderr)


class CheckoutTests(TestCase):
    def test_demoFilesIgnored(self):
        """What README's demo command leaves in a checkout is ignored by git."""
        if shutil.which("git") is None or not os.path.exists(os.path.join(TOP, ".git")):
            raise SkipTest("not a git checkout")
        left = [
            "txflip-demo.sqlite3",
            "txflip-demo.sqlite3-wal",
            "txflip-demo.sqlite3-shm",
            "demo.pid",
            "demo.pid.control",
        ]
        result = subprocess.run(
            ["git", "check-ignore", "--no-index", *left],
            cwd=TOP,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.stdout.split(), left, result.stderr)


class VersionTests(TestCase):
    def test_txflipVersion(self):
        """C{txflip --version} prints txflip's version, and the command imports no Twisted."""
        result = subprocess.run(
            [sys.executable, "-m", "txflip", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stdout), (0, f"txflip {__version__}\n"))
        imported = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, txflip.control.client; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(imported.stdout, "[]\n", imported.stderr)

    def test_twistdFlipVersion(self):
        """C{twistd flip --version} prints txflip's version, not Twisted's."""
        result = subprocess.run(
            [*twistdCommand(), "flip", "--version"], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"txflip {__version__}\n")


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"needs {' and '.join(absent)} installed: run tox -e packaging"
    return None


class DistributionTests(TestCase):
    skip = _missing("build", "twine")

    def _build(self) -> tuple[str, str]:
        """Build the sdist, and the wheel from it, out of a copy of the source tree."""
        scratch = tempfile.mkdtemp(prefix="txflip-build-")
        self.addCleanup(shutil.rmtree, scratch, True)
        source = os.path.join(scratch, "src")
        shutil.copytree(
            TOP,
            source,
            ignore=shutil.ignore_patterns(
                *(".git", ".tox", ".venv", "build", "dist", "*.egg-info", "__pycache__"),
                "_trial_temp*",
            ),
        )
        dist = os.path.join(scratch, "dist")
        result = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", dist, source],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
        names = sorted(os.listdir(dist))
        self.assertEqual(
            names, [f"txflip-{__version__}-py3-none-any.whl", f"txflip-{__version__}.tar.gz"]
        )
        return tuple(os.path.join(dist, name) for name in names)

    def test_wheelAndSdist(self):
        """
        The wheel holds every module of every subpackage and all the plugin
        files (and no __init__.py of Twisted's packages), the sdist also holds
        the tests and the docs, and C{twine check} passes on both.
        """
        wheel, sdist = self._build()
        with zipfile.ZipFile(wheel) as z:
            inWheel = set(z.namelist())
            entryPoints = z.read(f"txflip-{__version__}.dist-info/entry_points.txt").decode()
        expected = sourceFiles("txflip", "twisted/plugins")
        self.assertIn("twisted/plugins/txflip_tls_endpoints.py", expected)
        self.assertIn("txflip/acme/__init__.py", expected)
        self.assertEqual(sorted(expected - inWheel), [])
        self.assertEqual(
            sorted(n for n in inWheel if n.startswith("twisted/")),
            sorted(n for n in expected if n.startswith("twisted/")),
        )
        self.assertIn("txflip = txflip.__main__:main", entryPoints)

        with tarfile.open(sdist) as t:
            prefix = f"txflip-{__version__}/"
            inSdist = {name.removeprefix(prefix) for name in t.getnames()}
        self.assertEqual(sorted(sourceFiles("txflip", "twisted", "tests") - inSdist), [])
        for relative in ("pyproject.toml", "README.md", "tox.ini", "docs/conf.py"):
            self.assertIn(relative, inSdist)
        self.assertNotIn("twisted/plugins/dropin.cache", inSdist)

        check = subprocess.run(
            [sys.executable, "-m", "twine", "check", "--strict", wheel, sdist],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(check.stdout.count("PASSED"), 2, check.stdout)
