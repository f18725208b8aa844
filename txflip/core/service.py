"""
L{GenerationService}: a L{Generation} and the app it serves, as one C{IService}.

This is how a generation lives inside an C{Application} (twistd, a C{.tac}, or
any program that runs services): the app's listeners are handed over, its
C{startService} Deferred (if any) is its readiness, and the generation's
drain runs before the app's C{stopService}.
"""

from __future__ import annotations

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from txflip.core.generation import Generation
from txflip.core.log import log
from txflip.core.startfailure import reportStartFailure
from txflip.core.twistedprivate import forgetExitSignal


def fatal(message: str, generation: Generation | None = None, controlFd: int | None = None):
    """
    The error for a generation that cannot start, to raise: reported the one
    way (L{reportStartFailure}: to the parent, the log and standard error), exit 1.
    """
    reportStartFailure(message, generation, controlFd)
    return SystemExit(1)


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
            started = self._guarded("starting the app", self.appService.startService)
            if isinstance(started, Deferred):
                self.generation.waitFor(started, "the app's startService Deferred")
        self.generation.exiting.addCallback(lambda _: self._stopReactor())
        self._reactor.callWhenRunning(self.generation.start)

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
            stopped.addCallback(lambda _: maybeDeferred(self.appService.stopService))
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
