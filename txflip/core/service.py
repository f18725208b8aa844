"""
L{GenerationService}: a L{Generation} and the app it serves, as one C{IService}.

This is how a generation lives inside an C{Application} (twistd, a C{.tac}, or
any program that runs services): the app's listeners are handed over, its
C{startService} Deferred (if any) is its readiness, and the generation's
drain runs before the app's C{stopService}.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from txflip.core.generation import Generation
from txflip.core.log import log
from txflip.core.pause import AppLifecycle
from txflip.core.startfailure import reportStartFailure
from txflip.core.twistedprivate import forgetExitSignal, internetServerClass


def fatal(message: str, generation: Generation | None = None, controlFd: int | None = None):
    """
    The error for a generation that cannot start, to raise: reported the one
    way (L{reportStartFailure}: to the parent, the log and standard error), exit 1.
    """
    reportStartFailure(message, generation, controlFd)
    return SystemExit(1)


def _onlyListens(service: IService) -> bool:
    """Whether C{service} does nothing but listen (strports, endpoint and internet servers)."""
    from twisted.application.internet import StreamServerEndpointService

    return isinstance(service, StreamServerEndpointService | internetServerClass())


def _plainMultiService(service: IService, method: str) -> bool:
    """
    Whether C{service} is a C{MultiService} whose C{method} is C{MultiService}'s
    own, so that going through its children does all it would do. One that
    overrides it (Buildbot's master: it marks itself stopped in its database
    and lets its workers go) is called as it is; the listeners it stops are
    kept while the app is stopped (C{ListenerRegistry.keepWhenStopped}).
    """
    return isinstance(service, MultiService) and getattr(type(service), method) is getattr(
        MultiService, method
    )


def stopKeepingListeners(service: IService) -> Deferred:
    """
    Stop C{service} and every service under it, children first and in reverse
    order as C{MultiService} does, except those that only listen: their
    sockets stay open (paused), so that the next generation, or this app
    started again, serves them without a moment of refused connections.
    """
    if _onlyListens(service):
        return maybeDeferred(lambda: None)
    if _plainMultiService(service, "stopService"):
        Service.stopService(service)
        stopped = maybeDeferred(lambda: None)
        for child in reversed(list(service)):
            stopped.addCallback(lambda _, child=child: stopKeepingListeners(child))
        return stopped
    return maybeDeferred(service.stopService)


def startKeepingListeners(service: IService) -> Deferred:
    """Start again what L{stopKeepingListeners} stopped, in C{MultiService}'s order."""
    if _onlyListens(service):
        return maybeDeferred(lambda: None)
    if _plainMultiService(service, "startService"):
        Service.startService(service)
        started = maybeDeferred(lambda: None)
        for child in service:
            started.addCallback(lambda _, child=child: startKeepingListeners(child))
        return started
    return maybeDeferred(service.startService)


class GenerationService(Service):
    """
    Runs the app in this generation and hands it over to the next.

    @param endpoints: C{(description, endpoint, factory)} to listen on.
    @param appService: the app, when it is an C{IService}.
    """

    def __init__(
        self,
        reactor,
        generation: Generation,
        endpoints: list[tuple[str, object, object]] = (),
        appService: IService | None = None,
    ) -> None:
        self._reactor = reactor
        self.generation = generation
        self._endpoints = list(endpoints)
        self.appService = appService

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self.generation.install()
        for description, endpoint, factory in self._endpoints:
            failures: list[Failure] = []
            endpoint.listen(factory).addErrback(failures.append)
            if failures:
                raise fatal(f"cannot listen on {description}: {failures[0].value}", self.generation)
        if self.appService is not None:
            self._guarded("starting the app (privileged)", self.appService.privilegedStartService)

    def startService(self) -> None:
        Service.startService(self)
        if self.appService is not None:
            self.generation.app = AppLifecycle(self._stopApp, self._startAppAgain)
            turn = self.generation.startup.whenItsTurn()
            if turn.called:
                self._startApp()
            else:
                # A sequential handover: the app starts once the previous
                # generation's has stopped (txflip.core.pause).
                turn.addCallback(lambda _: self._startAppInTurn())
        self.generation.exiting.addCallback(lambda _: self._stopReactor())
        self._reactor.callWhenRunning(self.generation.start)

    def _startApp(self) -> None:
        started = self._guarded("starting the app", self.appService.startService)
        if isinstance(started, Deferred):
            self.generation.waitFor(started, "the app's startService Deferred")

    def _startAppInTurn(self) -> None:
        try:
            started = self.appService.startService()
        except Exception as e:
            self.generation.failStart(f"starting the app failed: {type(e).__name__}: {e}")
            return
        if isinstance(started, Deferred):
            self.generation.waitFor(started, "the app's startService Deferred")

    def _stopApp(self) -> Deferred:
        """Stop the app for a sequential handover (its services' stopService complete)."""
        return stopKeepingListeners(self.appService)

    def _startAppAgain(self) -> Deferred:
        """Start the app again: the next generation failed after this one's app stopped."""
        return startKeepingListeners(self.appService)

    def _guarded(self, what: str, call):
        try:
            return call()
        except SystemExit:
            raise
        except Exception as e:
            raise fatal(f"{what} failed: {type(e).__name__}: {e}", self.generation) from None

    def _stopReactor(self) -> None:
        if self._reactor.running:
            self._reactor.stop()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        stopped = self.generation.stop()
        if self.appService is not None:
            # Not twice: a sequential handover stopped it already.
            stopped.addCallback(
                lambda _: (
                    maybeDeferred(self.appService.stopService) if self.appService.running else None
                )
            )
            # An app that fails to stop is logged; the exit is still clean.
            stopped.addErrback(self._appStopFailed)
        stopped.addCallback(lambda _: self._cleanExit())
        return stopped

    def _appStopFailed(self, failure: Failure) -> None:
        log.error(
            "stopping the app failed: {error}; shutting down anyway",
            error=f"{failure.type.__name__}: {failure.getErrorMessage()}",
        )

    def _cleanExit(self) -> None:
        # twistd re-raises a SIGTERM/SIGINT that stopped the reactor, so the
        # process would die by that signal; a completed drain is a clean exit.
        forgetExitSignal(self._reactor)
