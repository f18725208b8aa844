"""The C{twistd flip} command line, and the service it builds."""

from __future__ import annotations

import math
import sys

from twisted.python import usage

from txflip.acme.options import OPT_FLAGS as ACME_FLAGS
from txflip.acme.options import OPT_PARAMETERS as ACME_PARAMETERS
from txflip.acme.options import AcmeOptionsMixin, acmeRequested, acmeRequestedBy
from txflip.core import pidfile
from txflip.core.signals import restartSignal
from txflip.host import ConfigError, Host, HostSettings
from txflip.systemd import activation
from txflip.twistd.appload import (
    AppError,
    importFromWorkingDirectory,
    rejectTwistdAppOptions,
)

DEMO_APP = "txflip.demo.makeResource"
DEFAULT_LISTEN = "tcp:8080"


def _positiveSeconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a finite number above 0")
    return value


class FlipOptions(AcmeOptionsMixin, usage.Options):
    """Options of C{twistd flip}."""

    synopsis = "[--app NAME] [--listen ENDPOINT ...] [--pid-file PATH] [PLUGIN [its options]]"
    longdesc = (
        "Serve a Twisted app and restart it without downtime on SIGHUP: the running "
        "generation starts a new one with the same command line, hands it the listening "
        "sockets, and drains once the new one is ready. SIGTERM and SIGINT drain and exit."
    )
    optParameters = [
        [
            "app",
            "a",
            None,
            "The app: a .tac file, or pkg.mod.attr or pkg.mod:attr naming a Resource, a "
            "protocol factory, an IService, a WSGI app, a Klein app, or a callable returning "
            "one. Default: the txflip demo.",
        ],
        [
            "pid-file",
            "p",
            None,
            "PID file, rewritten atomically by each generation once it serves "
            "(default: twistd's --pidfile, which flip then manages).",
        ],
        ["ready-timeout", None, "60", "Seconds a new generation has to become ready."],
        ["drain-timeout", None, "30", "Seconds to finish connections in flight before aborting."],
        [
            "handover",
            None,
            "overlap",
            "overlap: the new generation starts its app while the old one serves; "
            "sequential: the old one finishes what is in flight and stops its app first "
            "(apps that must never run twice at once).",
        ],
        [
            "pause-timeout",
            None,
            "30",
            "With --handover sequential: seconds the old generation may take to finish "
            "in-flight work and stop its app before the restart is given up.",
        ],
        [
            "close-spread",
            None,
            "3",
            "Seconds over which long-lived connections (WebSockets) are told to close "
            "when the drain starts (at most half the drain timeout).",
        ],
        [
            "workers",
            "w",
            "1",
            "Processes per generation, all serving every listener: a number, or auto "
            "(one per usable core). Above 1, the process started leads them and serves nothing.",
        ],
        [
            "https-port",
            None,
            None,
            "The port --redirect-http sends clients to "
            "(default: the port of the first ssl:, flip-tls: or tls: --listen, else 443).",
        ],
        [
            "restart-signal",
            None,
            "HUP",
            "The signal that starts the next generation: HUP, USR1 or USR2 (for an app "
            "that handles SIGHUP itself). `txflip reload` restarts whatever it is.",
        ],
        [
            "control",
            None,
            None,
            "The control socket for `txflip reload` and `txflip status` "
            "(default: the PID file's path plus .control).",
        ],
        [
            "access-log",
            None,
            None,
            "Log every HTTP request to this file (Combined Log Format), appended to by "
            "every generation; SIGUSR1 reopens it (and --logfile) after a rotation.",
        ],
        [
            "rollback-window",
            None,
            "0",
            "Seconds after a restart during which the previous generation keeps its app "
            "running, not accepting, so that `txflip rollback` can give it the traffic back.",
        ],
        [
            "rollback-on-5xx",
            None,
            "0",
            "Within --rollback-window, roll a new generation back by itself once at least "
            "this fraction (e.g. 0.5) of its first 20 or more HTTP responses were 5xx.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve /metrics (Prometheus text format) on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1; handed over like any listener, counters kept "
            "across restarts.",
        ],
        *ACME_PARAMETERS,
    ]
    optFlags = [
        ["no-control", None, "Do not open a control socket."],
        [
            "fd-store",
            None,
            "Keep the listening sockets in systemd's fd store (FileDescriptorStoreMax=), "
            "so they outlive a crash or a full restart; implied by $FDSTORE (systemd 254+).",
        ],
        [
            "app-notify",
            None,
            "The app speaks sd_notify: give it a NOTIFY_SOCKET of flip's own and take its "
            "READY=1 as its readiness.",
        ],
        *ACME_FLAGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["redirect-http"] = []

    def parseArgs(self, *args: str) -> None:
        """A twistd plugin to run, and its own options (parsed once flip starts it)."""
        from txflip.twistd.plugins import PluginCommand

        self["plugin"] = PluginCommand(args[0], tuple(args[1:])) if args else None

    def getUsage(self, width: int | None = None) -> str:
        from txflip.twistd.plugins import pluginListing

        return super().getUsage(width) + pluginListing(width)

    def opt_listen(self, description: str) -> None:
        """An endpoint to serve on (tcp:, tcp6:, unix:, ...); repeatable. Default: tcp:8080."""
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_version(self) -> None:
        """Print txflip's version and exit."""
        # usage.Options' own --version would print Twisted's.
        from txflip import __version__

        print(f"txflip {__version__}")
        sys.exit(0)

    def opt_redirect_http(self, description: str) -> None:
        """A plain-HTTP endpoint that redirects to HTTPS (301/308); repeatable."""
        self["redirect-http"].append(description)


def _seconds(options: FlipOptions, name: str, orZero: bool = False) -> float:
    try:
        if orZero and float(options[name]) == 0:
            return 0.0
        return _positiveSeconds(options[name])
    except ValueError:
        least = "0 or more" if orZero else "above 0"
        raise ConfigError(f"--{name} {options[name]!r}: give a number of seconds {least}") from None


def _fraction(options: FlipOptions, name: str) -> float:
    try:
        value = float(options[name])
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(
            f"--{name} {options[name]!r}: give a fraction of the responses above 0 and at "
            "most 1, e.g. 0.5"
        )
    return value


def _workers(options: FlipOptions) -> int:
    from txflip.workers.role import parseWorkers

    try:
        return parseWorkers(str(options["workers"]))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _parseEndpoint(reactor, description: str, option: str = "--listen"):
    from twisted.internet.endpoints import serverFromString

    try:
        return serverFromString(reactor, description)
    except (OSError, ImportError) as e:
        # ssl: reads its certificate files while parsing.
        raise ConfigError(f"cannot use {option} {description!r}: {_oneLine(e)}") from None
    except Exception as e:
        if type(e).__module__.startswith("OpenSSL"):
            raise ConfigError(f"cannot use {option} {description!r}: {_oneLine(e)}") from None
        raise ConfigError(
            f"bad {option} {description!r}: {_oneLine(e)}; "
            "use Twisted's endpoint syntax, e.g. tcp:8080, "
            "tcp6:8080:interface=\\:\\:1, unix:/run/app.sock"
        ) from None


def _oneLine(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _redirectEndpoints(reactor, options: FlipOptions, listen: list[str], acme=None) -> list:
    """
    The C{--redirect-http} listeners: plain HTTP answering with a redirect to
    HTTPS, and ACME HTTP-01 challenges when ACME is configured.
    """
    if not options["redirect-http"]:
        return []
    from txflip.tls.redirect import DEFAULT_HTTPS_PORT, httpsPortOf, redirectSite

    port = options["https-port"]
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--https-port {port!r}: give a port number, e.g. --https-port 443")
    httpsPort = int(port) if port else httpsPortOf(listen) or (acme and acme.httpsPort())
    site = redirectSite(httpsPort or DEFAULT_HTTPS_PORT)
    if acme is not None:
        site.redirect.challengeResponder = acme.challengeResource()
    return [
        (d, _parseEndpoint(reactor, d, "--redirect-http"), site) for d in options["redirect-http"]
    ]


def makeService(options: FlipOptions):
    """Build this generation's L{GenerationService} from C{twistd flip}'s options."""
    from twisted.internet import reactor

    from txflip.core.service import fatal

    # Before anything imports the app: a stray SIGHUP would kill a plain twistd.
    try:
        host = Host(reactor, restartSignal(options["restart-signal"]))
    except (ValueError, ConfigError) as e:
        raise fatal(str(e)) from None
    try:
        return _makeService(options, reactor, host)
    except (ConfigError, AppError, pidfile.PIDFileError) as e:
        raise fatal(str(e), host.generation, controlFd=host.controlFd) from None


def _makeService(options: FlipOptions, reactor, host: Host):
    from txflip.core.service import GenerationService
    from txflip.twistd.compat import (
        openLogFilesForAppending,
        reopenLogFiles,
        sameFile,
        successorArgv,
        takeOverTwistd,
    )

    twistd = takeOverTwistd(getattr(options, "parent", None))
    rejectTwistdAppOptions(getattr(options, "parent", None))
    if twistd.logfile:
        openLogFilesForAppending()
    settings = HostSettings(
        pidFile=options["pid-file"] or twistd.pidfile,
        readyTimeout=_seconds(options, "ready-timeout"),
        drainTimeout=_seconds(options, "drain-timeout"),
        closeSpread=_seconds(options, "close-spread", orZero=True),
        control=options["control"],
        noControl=bool(options["no-control"]),
        fdStore=bool(options["fd-store"]),
        appNotify=bool(options["app-notify"]),
        argv=successorArgv(list(sys.orig_argv), sys.executable, twistd.successorOptions),
        workers=_workers(options),
        handover=options["handover"],
        pauseTimeout=_seconds(options, "pause-timeout"),
        accessLog=options["access-log"],
        metrics=options["metrics"],
        rollbackWindow=_seconds(options, "rollback-window", orZero=True),
        rollbackOn5xx=_fraction(options, "rollback-on-5xx"),
    )
    generation = host.startGeneration(settings)
    if twistd.logfile:
        generation.logs.files.add(f"the log file {twistd.logfile}", reopenLogFiles)
    generation.logShownOnStderr = twistd.logsToStdout and sameFile(sys.__stdout__, sys.__stderr__)

    acme = None
    if acmeRequested(options):
        from txflip.acme.extra import AcmeExtraMissing, requireAcmeExtra

        try:
            requireAcmeExtra(acmeRequestedBy(options))
        except AcmeExtraMissing as e:
            raise ConfigError(str(e)) from None
        from txflip.acme.configure import configure as configureAcme

        try:
            acme = configureAcme(reactor, options)
        except usage.UsageError as e:
            raise ConfigError(str(e)) from None

    importFromWorkingDirectory()
    from txflip.twistd.plugins import loadServed

    loaded = loadServed(options["app"], options.get("plugin"), reactor, default=DEMO_APP)
    appService = loaded.app if loaded.kind == "service" else None
    if appService is not None and settings.workers > 1 and host.workerRole is None:
        # --workers: the leader opens the app's listeners and never runs it (txflip.workers).
        from txflip.workers.leader import ListeningOnly

        appService = ListeningOnly(appService)
    if acme and (problem := acme.appProblem(loaded.kind, bool(options["redirect-http"]))):
        raise ConfigError(problem)
    endpoints = _endpoints(reactor, options, loaded, host.activated, acme)
    if host.workerRole is not None:
        from txflip.workers.worker import leaveIssuanceToTheLeader

        leaveIssuanceToTheLeader()
    return GenerationService(reactor, generation, endpoints, appService)


def _endpoints(reactor, options: FlipOptions, loaded, activated, acme) -> list:
    """C{(description, endpoint, factory)} for every listener flip opens for the app."""
    listen = list(options["listen"])
    if not listen and loaded.kind != "service" and not (acme and acme.listen):
        listen = activated.defaultListen() or [DEFAULT_LISTEN]
    try:
        listen = [activated.resolve(description) for description in listen]
    except activation.ActivationError as e:
        raise ConfigError(str(e)) from None
    factory = None
    if loaded.kind == "resource":
        from twisted.web.server import Site

        factory = Site(acme.wrap(loaded.app) if acme else loaded.app)
    elif loaded.kind == "factory":
        factory = loaded.app
    if listen and factory is None:
        raise ConfigError(
            f"{loaded.name} is a service that listens by itself; "
            "drop flip's --listen, or name a Resource or protocol factory"
        )
    endpoints = [(d, _parseEndpoint(reactor, d), factory) for d in listen]
    if acme and acme.listen:
        if factory is None:
            raise ConfigError(
                f"{loaded.name} is a service that listens by itself; "
                "--acme-listen needs a Resource or protocol factory"
            )
        endpoints += acme.endpoints(reactor, factory, _parseEndpoint)
    return endpoints + _redirectEndpoints(reactor, options, listen, acme)


Options = FlipOptions
