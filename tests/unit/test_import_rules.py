"""
The architecture, held against the code: which parts of txflip may import which.

The rules (docs/design.rst lists them too):

  1. The restart core (txflip.core) imports none of txflip's other parts.
  2. The child side of a handoff never imports the parent side.
  3. The `txflip` command-line client imports no Twisted.
  4. No module imports itself through others: the modules form no cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

import txflip

PACKAGE = os.path.dirname(os.path.abspath(txflip.__file__))
OUTSIDE_THE_CORE = (
    "txflip.twistd",
    "txflip.systemd",
    "txflip.control",
    "txflip.tls",
    "txflip.acme",
    "txflip.workers",
    "txflip.host",
    "txflip.launcher",
)


def moduleName(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")]
    name = relative.replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def importsOf(path: str) -> set[str]:
    """Every module C{path} imports, at the top or inside a function."""
    return _importsIn(ast.parse(open(path, encoding="utf-8").read(), path))


def _typeCheckingOnly(tree: ast.AST) -> set[int]:
    """The ids of nodes under C{if TYPE_CHECKING:}: imports that never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _importsIn(tree: ast.AST) -> set[str]:
    """What C{tree} imports when it runs, function-level imports included."""
    found: set[str] = set()
    neverRun = _typeCheckingOnly(tree)
    for node in ast.walk(tree):
        if id(node) in neverRun:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """txflip's own modules and what each imports."""
    modules: dict[str, set[str]] = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[moduleName(path)] = importsOf(path)
    return modules


def reachable(start: str, modules: dict[str, set[str]]) -> set[str]:
    """The txflip modules C{start} imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in modules.get(current, ()):
            if imported in modules and imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Every set of txflip modules that import each other round (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(modules[module]):
            if imported not in modules or imported == module:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class ImportRuleTests(TestCase):
    def setUp(self) -> None:
        self.modules = graph()

    def test_graphIsRead(self) -> None:
        """The walk finds the modules and their arrows (else every rule would pass)."""
        self.assertIn("txflip.core.generation", self.modules)
        self.assertIn("txflip.core.parent", self.modules["txflip.core.generation"])
        self.assertIn("txflip.control.server", reachable("txflip.host", self.modules))

    def test_coreImportsNoOtherPart(self) -> None:
        forbidden = {
            (module, imported)
            for module, imports in self.modules.items()
            if within(module, ("txflip.core",))
            for imported in imports
            if within(imported, OUTSIDE_THE_CORE)
        }
        self.assertEqual(forbidden, set())

    def test_childSideNeverImportsParentSide(self) -> None:
        self.assertNotIn("txflip.core.parent", reachable("txflip.core.child", self.modules))

    def test_clientImportsNoTwistedStatically(self) -> None:
        for module in {"txflip.control.client", *reachable("txflip.control.client", self.modules)}:
            twisted = {i for i in self.modules[module] if within(i, ("twisted",))}
            self.assertEqual(twisted, set(), f"{module} imports Twisted")

    def test_clientImportsNoTwistedWhenRun(self) -> None:
        """Run the way the console script and `python -m txflip status` run it."""
        code = (
            "import sys\n"
            "import txflip.__main__, txflip.control.client\n"
            "print(sorted(m for m in sys.modules if m == 'twisted' or m.startswith('twisted.')))\n"
        )
        env = dict(os.environ, PYTHONPATH=os.path.dirname(PACKAGE))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        self.assertEqual(out.stdout.strip(), "[]")

    def test_noImportCycles(self) -> None:
        """Lazy imports inside functions count: they are cycles that bite later."""
        self.assertEqual(cycles(self.modules), [], "these modules import each other")

    def test_cycleRuleCatchesALazyCycle(self) -> None:
        """A function-level import back from txflip.core.state would be caught."""
        source = "def f():\n    from txflip.core.generation import Generation\n"
        self.assertIn("txflip.core.generation", _importsIn(ast.parse(source)))
        self.modules["txflip.core.state"] |= _importsIn(ast.parse(source))
        self.assertTrue(
            any(
                {"txflip.core.generation", "txflip.core.state"} <= set(c)
                for c in cycles(self.modules)
            ),
            cycles(self.modules),
        )

    def test_typeCheckingImportsAreNoCycle(self) -> None:
        """An import under C{if TYPE_CHECKING:} never runs: it makes no arrow."""
        source = "if TYPE_CHECKING:\n    from txflip.core.generation import Generation\n"
        self.assertEqual(_importsIn(ast.parse(source)), set())

    def test_ruleCatchesAForbiddenArrow(self) -> None:
        """A core module that imported the control socket would be caught."""
        self.modules["txflip.core.drain"] = {*self.modules["txflip.core.drain"], "txflip.control"}
        with self.assertRaises(self.failureException):
            self.test_coreImportsNoOtherPart()
