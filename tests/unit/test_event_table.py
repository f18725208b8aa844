"""
The event table (txflip.core.events.EVENTS) against the code: every event
emitted is in it, with the fields it is emitted with, every event an observer
waits for is in it, and it names nothing that is never emitted.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import TestCase

from tests.unit.test_import_rules import PACKAGE
from txflip.core.events import EVENTS


def _trees():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield path, ast.parse(open(path, encoding="utf-8").read(), path)


def emitted() -> dict[str, set[tuple[str, frozenset[str]]]]:
    """Each event name C{emit}ted in txflip: where, and with which fields."""
    found: dict[str, set] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                fields = frozenset(k.arg for k in node.keywords)
                where = f"{os.path.relpath(path, PACKAGE)}:{node.lineno}"
                found.setdefault(node.args[0].value, set()).add((where, fields))
    return found


def observed() -> dict[str, str]:
    """
    Each event name an observer (a function of C{name} and C{fields}) compares
    its C{name} with, and where.
    """
    found: dict[str, str] = {}
    for path, tree in _trees():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            if [a.arg for a in function.args.args if a.arg != "self"] != ["name", "fields"]:
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)):
                    continue
                if node.left.id != "name":
                    continue
                for right in node.comparators:
                    values = right.elts if isinstance(right, ast.Tuple | ast.Set) else [right]
                    for value in values:
                        if isinstance(value, ast.Constant) and isinstance(value.value, str):
                            found[value.value] = f"{os.path.relpath(path, PACKAGE)}:{node.lineno}"
    return found


class EventTableTests(TestCase):
    def test_scanFindsEmitsAndObservers(self) -> None:
        """The scans see the code (else every check below would pass)."""
        self.assertIn("successor-died", emitted())
        self.assertIn("serving", observed())

    def test_everyEmittedEventIsInTheTable(self) -> None:
        missing = {name: sorted(w for w, _ in uses) for name, uses in emitted().items()}
        missing = {name: where for name, where in missing.items() if name not in EVENTS}
        self.assertEqual(missing, {}, "emitted but missing from txflip.core.events.EVENTS")

    def test_fieldsMatchTheTable(self) -> None:
        wrong = {
            where: sorted(fields)
            for name, uses in emitted().items()
            if name in EVENTS
            for where, fields in uses
            if fields != set(EVENTS[name])
        }
        self.assertEqual(wrong, {}, "emitted with other fields than EVENTS lists")

    def test_everyObservedEventIsInTheTable(self) -> None:
        unknown = {name: where for name, where in observed().items() if name not in EVENTS}
        self.assertEqual(unknown, {}, "observed but missing from txflip.core.events.EVENTS")

    def test_tableNamesOnlyEmittedEvents(self) -> None:
        self.assertEqual(set(EVENTS) - set(emitted()), set())
