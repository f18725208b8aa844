"""Loading the app named by C{--app}, and deciding what kind of app it is."""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass

from twisted.application.service import IService
from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import IResource


class AppError(Exception):
    """The app cannot be loaded; the message is one line and says why."""


@dataclass(frozen=True)
class LoadedApp:
    """An app and its kind: C{resource}, C{factory} or C{service}."""

    kind: str
    app: object


_TXFLIP = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_IMPORTLIB = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep


def _isUsers(filename: str) -> bool:
    """Whether a traceback frame is in the app's code: not importlib's, not txflip's."""
    if filename.startswith("<frozen "):
        return False
    path = os.path.abspath(filename)
    return not (path.startswith(_TXFLIP) or path.startswith(_IMPORTLIB))


def _where(error: BaseException) -> str:
    """C{" (at FILE:LINE)"}: the innermost line of the app's own code involved, if any."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f" (at {error.filename}:{error.lineno})"
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if _isUsers(frame.filename):
            return f" (at {frame.filename}:{frame.lineno})"
    return ""


def _describe(error: BaseException) -> str:
    """The exception in one line, and where in the app it was raised."""
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    return f"{type(error).__name__}: {text}{_where(error)}"


def _importProblem(error: BaseException, moduleName: str) -> str:
    """Why the app's module cannot be imported; how to fix it when the module is not found."""
    if (
        isinstance(error, ModuleNotFoundError)
        and error.name
        and (moduleName == error.name or moduleName.startswith(error.name + "."))
    ):
        return (
            f"no module named {error.name!r}: install it, or add the directory that holds "
            "it to PYTHONPATH"
        )
    return _describe(error)


def _importLongestPrefix(dotted: str) -> tuple[object, list[str]]:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        moduleName = ".".join(parts[:cut])
        try:
            return importlib.import_module(moduleName), parts[cut:]
        except ModuleNotFoundError as e:
            if e.name is not None and moduleName.startswith(e.name) and cut > 1:
                continue
            raise
    raise ModuleNotFoundError(f"No module named {parts[0]!r}", name=parts[0])


def lookUp(name: str) -> object:
    """The object named C{pkg.mod.attr} or C{pkg.mod:attr}."""
    if ":" in name:
        moduleName, _, attrPath = name.partition(":")
        try:
            obj = importlib.import_module(moduleName)
        except Exception as e:
            raise AppError(
                f"cannot import {moduleName!r} for --app {name}: {_importProblem(e, moduleName)}"
            ) from None
        attrs = attrPath.split(".") if attrPath else []
    else:
        try:
            obj, attrs = _importLongestPrefix(name)
        except Exception as e:
            raise AppError(f"cannot import --app {name}: {_importProblem(e, name)}") from None
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppError(
                f"--app {name}: {getattr(obj, '__name__', obj)!s} has no attribute {attr!r}"
            ) from None
    return obj


def _kindOf(obj: object) -> str | None:
    if IService.providedBy(obj):
        return "service"
    if IResource.providedBy(obj):
        return "resource"
    if IProtocolFactory.providedBy(obj):
        return "factory"
    return None


def loadApp(name: str) -> LoadedApp:
    """
    Load C{name}: a Resource, a protocol factory, an C{IService}, or a callable
    (a class included) that returns one of those when called with no argument.
    """
    obj = lookUp(name)
    kind = _kindOf(obj)
    if kind is None and callable(obj):
        try:
            obj = obj()
        except Exception as e:
            raise AppError(f"calling --app {name}() raised {_describe(e)}") from None
        kind = _kindOf(obj)
    if kind is None:
        raise AppError(
            f"--app {name} is a {type(obj).__name__}: name a Resource, a protocol factory, "
            "an IService, or a callable that returns one"
        )
    return LoadedApp(kind, obj)
