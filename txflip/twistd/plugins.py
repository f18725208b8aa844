"""
Any twistd plugin under flip: C{twistd flip [flip options] PLUGIN [its options]}.

The plugin's options are parsed, and its service made, only when flip builds
its own service: after the SIGHUP handler is in place and the reactor's
C{listen*} methods hand sockets over, and on the error path that tells a
predecessor why its successor cannot start. Its service listens by itself,
through the reactor, so every address it asks for is handed over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from twisted.python import usage

from txflip.twistd.appload import AppError, LoadedApp, errorText, loadApp

FLIP = "flip"


@dataclass(frozen=True)
class PluginCommand:
    """The plugin named after flip's options, and the arguments that follow it."""

    name: str
    args: tuple[str, ...] = ()


def servicePlugins() -> dict:
    """Every twistd plugin (C{IServiceMaker}) by its name, except flip itself."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    found: dict = {}
    for plugin in getPlugins(IServiceMaker):
        if plugin.tapname != FLIP:
            found.setdefault(plugin.tapname, plugin)
    return dict(sorted(found.items()))


def pluginListing(width: int | None = None) -> str:
    """The plugins, for C{twistd flip --help}."""
    width = width or int(os.environ.get("COLUMNS", "80"))
    entries = [
        {"long": name, "short": None, "doc": plugin.description, "optType": "command"}
        for name, plugin in servicePlugins().items()
    ]
    if not entries:
        return ""
    heading = "\nPlugins (after flip's options: PLUGIN [its options], e.g. web --path .):\n"
    return heading + "".join(usage.docMakeChunks(entries, width))


def makePluginService(command: PluginCommand) -> LoadedApp:
    """Parse the plugin's arguments and make its service, as twistd would."""
    where = f"the {command.name} plugin"
    plugin = servicePlugins().get(command.name)
    if plugin is None and command.name == FLIP:
        raise AppError("flip cannot run inside flip: name another plugin, or the app with --app")
    if plugin is None:
        raise AppError(
            f"no twistd plugin named {command.name!r}: `twistd --help` lists them "
            "(flip's own options go before the plugin's name)"
        )
    try:
        options = plugin.options()
        options.parseOptions(list(command.args))
    except usage.UsageError as e:
        raise AppError(
            f"{where}: {e}; `twistd -n flip {command.name} --help` lists its options"
        ) from None
    except Exception as e:
        raise AppError(f"{where}: its options raised {errorText(e)}") from None
    try:
        service = plugin.makeService(options)
    except Exception as e:
        raise AppError(f"{where} raised {errorText(e)} making its service") from None
    return LoadedApp("service", service, where)


def loadServed(app: str | None, plugin, reactor=None, default: str | None = None) -> LoadedApp:
    """
    What this generation serves: the twistd C{plugin} (a L{PluginCommand}),
    else C{--app app}, else C{default}.
    """
    if plugin is not None and app is not None:
        raise AppError(
            f"--app {app} and the {plugin.name} plugin both name what to serve: give one of them"
        )
    if plugin is not None:
        return makePluginService(plugin)
    return loadApp(app or default, reactor)
