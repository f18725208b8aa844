"""
Loading the app named by C{--app}, and deciding what kind of app it is.

C{--app} names a file or an object. A file (a name ending in C{.tac}, or with
a C{/} in it) is loaded as C{twistd -y} loads it, and its C{application}
served. An object is, in this order:

  1. a Resource, a protocol factory or an C{IService}: served as it is;
  2. an object with a C{.resource()} method (a Klein app): that Resource;
  3. a WSGI app (Flask, Django, any callable whose signature needs exactly two
     positional arguments, C{environ} and C{start_response}): served through
     L{WSGIResource} on the reactor's thread pool;
  4. any other callable (a class included) that can be called with no
     argument: called, and its result taken through 1 to 3.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import sysconfig
import traceback
import types
from dataclasses import dataclass

from twisted.application.service import IService
from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import IResource

_KINDS = "a Resource, a protocol factory, an IService, a WSGI app, a Klein app"


class AppError(Exception):
    """The app cannot be loaded; the message is one line and says why."""


@dataclass(frozen=True)
class LoadedApp:
    """
    An app and its kind: C{resource}, C{factory} or C{service}.

    @ivar name: how the operator named it, for messages (C{--app site:app},
        C{the web plugin}).
    """

    kind: str
    app: object
    name: str = "--app"


# Where an error happened: in the user's code, never in txflip's or importlib's.

_TXFLIP = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_IMPORTLIB = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep
_LIBRARIES = tuple(
    {os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "purelib")}
)


def _isOurs(filename: str) -> bool:
    """Whether a traceback frame is txflip's or importlib's, never worth naming."""
    if filename.startswith("<frozen "):
        return True
    path = os.path.abspath(filename)
    return path.startswith(_TXFLIP) or path.startswith(_IMPORTLIB)


def _where(error: BaseException) -> str:
    """
    C{" (at FILE:LINE)"}: the innermost line of the app's own code involved, else
    the innermost outside txflip and importlib (a library's), else nothing.
    """
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f" (at {error.filename}:{error.lineno})"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not _isOurs(f.filename)]
    users = [f for f in frames if not os.path.abspath(f.filename).startswith(_LIBRARIES)]
    chosen = (users or frames or [None])[-1]
    return "" if chosen is None else f" (at {chosen.filename}:{chosen.lineno})"


def _defined(obj: object) -> str:
    """C{" (defined at FILE:LINE)"}, for errors about an object rather than an exception."""
    try:
        target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
        return f" (defined at {inspect.getsourcefile(target)}:{inspect.getsourcelines(target)[1]})"
    except (TypeError, OSError):
        return ""


def errorText(error: BaseException) -> str:
    """The exception in one line, and where in the app it was raised."""
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    return " ".join(f"{type(error).__name__}: {text}".split()) + _where(error)


def _importProblem(error: BaseException, moduleName: str) -> str:
    """Why the app's module cannot be imported; how to fix it when the module is not found."""
    if (
        isinstance(error, ModuleNotFoundError)
        and error.name
        and (moduleName == error.name or moduleName.startswith(error.name + "."))
    ):
        here = os.getcwd()
        looked = f" (looked in {here} too)" if here in sys.path or "" in sys.path else ""
        return (
            f"no module named {error.name!r}{looked}: install it, start flip from the "
            "directory that holds it, or add that directory to PYTHONPATH"
        )
    return errorText(error)


# Finding the object.


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
        except (Exception, SystemExit) as e:
            raise AppError(
                f"cannot import {moduleName!r} for --app {name}: {_importProblem(e, moduleName)}"
            ) from None
        attrs = attrPath.split(".") if attrPath else []
    else:
        try:
            obj, attrs = _importLongestPrefix(name)
        except (Exception, SystemExit) as e:
            raise AppError(f"cannot import --app {name}: {_importProblem(e, name)}") from None
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppError(
                f"--app {name}: {getattr(obj, '__name__', obj)!s} has no attribute {attr!r}"
            ) from None
    return obj


# What kind of app it is.


def _kindOf(obj: object) -> str | None:
    if IService.providedBy(obj):
        return "service"
    if IResource.providedBy(obj):
        return "resource"
    if IProtocolFactory.providedBy(obj):
        return "factory"
    return None


def _signature(obj: object) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def isWSGIApp(obj: object) -> bool:
    """
    Whether C{obj} is a WSGI app: a callable that needs exactly two positional
    arguments (C{environ}, C{start_response}) and cannot be called without them.
    """
    if not callable(obj) or isinstance(obj, types.ModuleType):
        return False
    signature = _signature(obj)
    return signature is not None and _binds(signature, 2) and not _binds(signature, 0)


def hasResourceMethod(obj: object) -> bool:
    """Whether C{obj} is an instance with a C{.resource()} method, as a Klein app is."""
    if inspect.isclass(obj) or isinstance(obj, types.ModuleType):
        return False
    method = getattr(obj, "resource", None)
    if not inspect.ismethod(method):
        return False
    signature = _signature(method)
    return signature is None or _binds(signature, 0)


def _wsgiResource(app: object, reactor):
    from twisted.web.wsgi import WSGIResource

    if reactor is None:
        from twisted.internet import reactor
    # The reactor's pool stops "during" shutdown, after the drain (a "before"
    # shutdown trigger) has let requests in its threads finish.
    return WSGIResource(reactor, reactor.getThreadPool(), app)


def _serve(name: str, obj: object, reactor, mayCall: bool) -> LoadedApp:
    kind = _kindOf(obj)
    if kind is not None:
        return LoadedApp(kind, obj, f"--app {name}")
    if hasResourceMethod(obj):
        try:
            resource = obj.resource()
        except (Exception, SystemExit) as e:
            raise AppError(f"--app {name}: .resource() raised {errorText(e)}") from None
        if not IResource.providedBy(resource):
            raise AppError(
                f"--app {name}: .resource() returned a {type(resource).__name__}, not a Resource"
            )
        return LoadedApp("resource", resource, f"--app {name}")
    if isWSGIApp(obj):
        return LoadedApp("resource", _wsgiResource(obj, reactor), f"--app {name} (WSGI)")
    if mayCall and callable(obj) and not isinstance(obj, types.ModuleType):
        signature = _signature(obj)
        if signature is not None and not _binds(signature, 0):
            raise AppError(
                f"calling --app {name}() raised TypeError: it needs arguments "
                f"{signature}{_defined(obj)}; name {_KINDS}, "
                "or a callable that takes no argument and returns one"
            )
        try:
            made = obj()
        except (Exception, SystemExit) as e:
            raise AppError(f"calling --app {name}() raised {errorText(e)}") from None
        return _serve(name, made, reactor, mayCall=False)
    if isinstance(obj, types.ModuleType):
        raise AppError(
            f"--app {name} is a module: name the app in it, e.g. --app {name}:app "
            f"({_KINDS}, or a callable that returns one)"
        )
    returned = "" if mayCall else " (returned when called)"
    raise AppError(
        f"--app {name} is a {type(obj).__name__}{returned}: name {_KINDS}, "
        "or a callable that returns one"
    )


# .tac files.


def isAppFile(name: str) -> bool:
    """Whether C{--app name} names a file (C{server.tac}, C{deploy/app.py}), not an object."""
    return name.endswith(".tac") or "/" in name or os.sep in name


def loadAppFile(path: str) -> LoadedApp:
    """Run a C{.tac} file as C{twistd -y} does and take its C{application}."""
    from twisted.application.service import loadApplication
    from twisted.persisted import sob

    try:
        open(path).close()
    except OSError as e:
        raise AppError(f"cannot read --app {path}: {e.strerror or e}") from None
    try:
        application = loadApplication(path, "python")
    except KeyError as e:
        frames = traceback.extract_tb(e.__traceback__)
        if e.args == ("application",) and frames and frames[-1].filename == sob.__file__:
            raise AppError(
                f"--app {path} defines no `application`: add "
                '`application = service.Application("myapp")` and set your services\' '
                "parent to it, as twistd -y expects"
            ) from None
        raise AppError(f"--app {path} raised {errorText(e)}") from None
    except Exception as e:
        raise AppError(f"--app {path} raised {errorText(e)}") from None
    try:
        return LoadedApp("service", IService(application), f"--app {path}")
    except TypeError:
        raise AppError(
            f"--app {path}: `application` is a {type(application).__name__}; "
            'make it service.Application("myapp")'
        ) from None


def importFromWorkingDirectory() -> None:
    """
    Put the working directory first on C{sys.path}, as C{python -m} and
    gunicorn do, so that C{--app mysite.wsgi:application} run from the project
    finds C{mysite} (the installed C{twistd} script puts only its own directory
    there). The directory as resolved: a generation started after a deploy
    switched a C{current} symlink imports, lazily too, from its own release.
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def loadApp(name: str, reactor=None) -> LoadedApp:
    """Load what C{--app name} names (see the module's docstring for the rules)."""
    if isAppFile(name):
        return loadAppFile(name)
    return _serve(name, lookUp(name), reactor, mayCall=True)


# twistd's own ways of naming an app.

_TWISTD_APP_OPTIONS = (("python", "-y/--python"), ("source", "-s/--source"), ("file", "-f/--file"))


def rejectTwistdAppOptions(parent) -> None:
    """
    twistd runs a plugin rather than its C{-y}, C{-s} or C{-f} app: refuse
    them together with C{flip}, which would otherwise serve something else.
    """
    if parent is None:
        return
    for option, flags in _TWISTD_APP_OPTIONS:
        value = parent.get(option)
        if not value or (option == "file" and value == _twistdDefault(parent, option)):
            continue
        fix = (
            f"give it to flip as --app {value}"
            if option == "python"
            else "name the app's module or .tac file with flip's --app"
        )
        raise AppError(f"twistd {flags} {value} does nothing under flip: {fix}")


def _twistdDefault(parent, option: str):
    for cls in type(parent).__mro__:
        for name, _short, default, *_ in cls.__dict__.get("optParameters", []):
            if name == option:
                return default
    return None
