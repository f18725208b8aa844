"""
Twisted's private names, which Twisted may rename in any release: every one
txflip uses is listed in txflip/core/twistedprivate.py, exists in the
installed Twisted, and is used by no other module of txflip.
"""

from __future__ import annotations

import ast
import importlib
import os

import twisted
from twisted.trial.unittest import TestCase

from tests.unit.test_import_rules import PACKAGE
from txflip.core.twistedprivate import PRIVATE_NAMES, PrivateName

HOME = os.path.join(PACKAGE, "core", "twistedprivate.py")


def resolve(dotted: str):
    """The module or class C{dotted} names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(dotted)


def missing(names: tuple[PrivateName, ...]) -> list[str]:
    """One line for each name the installed Twisted lacks, saying what breaks."""
    problems = []
    for private in names:
        where = f"{private.owner}.{private.name}"
        try:
            holder = private.instance() if private.instance else resolve(private.owner)
        except Exception as e:
            problems.append(f"cannot look for {where}: {type(e).__name__}: {e}")
            continue
        if not hasattr(holder, private.name):
            problems.append(
                f"Twisted {twisted.__version__} has no {where}, which txflip uses for "
                f"{private.purpose}: change txflip/core/twistedprivate.py"
            )
    return problems


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != HOME:
                yield path, ast.parse(open(path, encoding="utf-8").read(), path)


def _definedIn(cls: ast.ClassDef) -> list[tuple[str, int]]:
    """The attributes a class body and its methods define: class attributes, methods, C{self.x}."""
    found = []
    for item in cls.body:
        if isinstance(item, ast.FunctionDef):
            found.append((item.name, item.lineno))
        for target in getattr(item, "targets", [getattr(item, "target", None)]):
            if isinstance(target, ast.Name):
                found.append((target.id, item.lineno))
    for node in ast.walk(cls):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            found.append((node.attr, node.lineno))
    return found


def usesIn(tree: ast.AST, names: set[str], ours: set[str]) -> set[tuple[int, str]]:
    """C{(line, name)} for each use of C{names} in C{tree}; C{ours}: txflip's class names."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base).split(".")[-1] for base in node.bases}
            if bases - ours - {"object", "Exception", "ValueError"}:
                found.update((line, name) for name, line in _definedIn(node) if name in names)
            continue
        name = None
        if isinstance(node, ast.Attribute) and node.attr in names:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                name = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in names
        ):
            name = node.args[1].value
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
            name = next((a.name for a in node.names if a.name in names), None)
        if name is not None:
            found.add((node.lineno, name))
    return found


NOT_TWISTED = {"_exit", "_fields", "_replace", "_asdict", "_make"}
"""Private-looking names of other libraries' that txflip may use: os._exit, namedtuple's."""


def _ownNames(trees) -> set[str]:
    """What txflip names itself: its classes' attributes and methods, C{self.x}, C{_txflip*}."""
    own: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                own.update(name for name, _ in _definedIn(node))
            elif isinstance(node, ast.FunctionDef):
                own.add(node.name)
    return own


def unlistedPrivateUses(listed: set[str], trees=None) -> list[str]:
    """
    C{file:line name} wherever a module reaches for a private name on
    something other than C{self} (or imports one from Twisted) that txflip
    does not define itself and that is not in C{listed}.

    @param trees: C{(path, tree)} to scan; default, txflip's modules.
    """
    trees = list(_modules()) if trees is None else trees
    own = _ownNames(trees)
    found = []
    for path, tree in trees:
        where = os.path.relpath(path, os.path.dirname(PACKAGE))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Attribute):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    names = [node.attr]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                names = [node.args[1].value]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
                names = [alias.name for alias in node.names]
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                if not private or name.startswith("_txflip") or name in NOT_TWISTED:
                    continue
                if name not in own and name not in listed:
                    found.append(f"{where}:{node.lineno} {name}")
    return sorted(set(found))


def usesElsewhere(names: set[str]) -> list[str]:
    """
    C{file:line name} wherever a module other than twistedprivate reaches for
    one of C{names}: as an attribute of anything but C{self}, in
    C{getattr}/C{hasattr}/C{setattr}, imported, or defined (set on C{self},
    overridden) in a subclass of a class txflip did not write, Twisted's.
    """
    trees = list(_modules())
    ours = {n.name for _, tree in trees for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    found = []
    for path, tree in trees:
        where = os.path.relpath(path, os.path.dirname(PACKAGE))
        found.extend(f"{where}:{line} {name}" for line, name in usesIn(tree, names, ours))
    return sorted(set(found))


class PrivateNameTests(TestCase):
    def test_installedTwistedHasEveryName(self) -> None:
        self.assertEqual(missing(PRIVATE_NAMES), [])

    def test_aMissingNameSaysWhatBreaks(self) -> None:
        gone = PrivateName("twisted.web.http.HTTPChannel", "_renamedAway", "testing the check")
        self.assertEqual(
            missing((gone,)),
            [
                f"Twisted {twisted.__version__} has no twisted.web.http.HTTPChannel._renamedAway, "
                "which txflip uses for testing the check: change txflip/core/twistedprivate.py"
            ],
        )

    def test_anInstanceAttributeIsLookedForOnAnInstance(self) -> None:
        """C{_dataBuffer} is set in C{__init__}: the class alone lacks it."""
        [entry] = [p for p in PRIVATE_NAMES if p.name == "_dataBuffer"]
        self.assertFalse(hasattr(resolve(entry.owner), entry.name))
        self.assertEqual(missing((entry,)), [])

    def test_noOtherModuleUsesThem(self) -> None:
        names = {private.name for private in PRIVATE_NAMES}
        self.assertEqual(usesElsewhere(names), [], "use txflip.core.twistedprivate instead")

    def test_everyPrivateNameReachedIsListed(self) -> None:
        """A private name of Twisted's that a module starts to use must be listed (and moved)."""
        listed = {private.name for private in PRIVATE_NAMES}
        self.assertEqual(
            unlistedPrivateUses(listed), [], "add it to txflip.core.twistedprivate and use it there"
        )
        source = (
            "from twisted.internet.base import _ThreePhaseEvent\n"
            "class Ours:\n"
            "    def __init__(self):\n"
            "        self._mine = 1\n"
            "def f(connection, ours):\n"
            "    connection._txflipMark = ours._mine\n"
            "    return connection._noSuchName or getattr(connection, '_anotherName')\n"
        )
        trees = [(os.path.join(PACKAGE, "x.py"), ast.parse(source))]
        self.assertEqual(
            unlistedPrivateUses(listed, trees),
            [
                "txflip/x.py:1 _ThreePhaseEvent",
                "txflip/x.py:7 _anotherName",
                "txflip/x.py:7 _noSuchName",
            ],
        )

    def test_scanFindsEachKindOfUse(self) -> None:
        """What the modules did before txflip.core.twistedprivate, the scan finds."""
        source = (
            "from twisted.web.client import _HTTP11ClientFactory\n"
            "class Port(unix.Port):\n"
            "    def release(self):\n"
            "        self._shouldShutdown = False\n"
            "    def _logConnectionLostMsg(self):\n"
            "        pass\n"
            "class Ours:\n"
            "    def __init__(self):\n"
            "        self._channel = None\n"
            "def busy(channel):\n"
            "    return channel._dataBuffer or getattr(channel, '_buffer', b'')\n"
        )
        names = {p.name for p in PRIVATE_NAMES}
        self.assertEqual(
            usesIn(ast.parse(source), names, {"Ours"}),
            {
                (1, "_HTTP11ClientFactory"),
                (4, "_shouldShutdown"),
                (5, "_logConnectionLostMsg"),
                (11, "_dataBuffer"),
                (11, "_buffer"),
            },
        )
