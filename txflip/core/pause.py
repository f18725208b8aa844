"""
The old generation's side of a sequential handover (C{--handover sequential}).

Some apps must never run twice at once: they allocate ids in memory from their
database, hold a lock, claim a role or run a scheduler. For them the new
generation builds its app while the old one serves, then waits; the old one
I{pauses}:

  1. it stops accepting: new connections wait in the kernel's accept queue,
     none is refused;
  2. it finishes every request in flight; each idle HTTP/1.x keep-alive
     connection is I{parked} (no longer read: a request that arrives waits
     in the kernel and moves with the connection), other connections are
     told to close (L{txflip.core.farewell}) and closed once idle;
  3. it stops its app (its services' C{stopService}, or a program's own
     shutdown), so that the database is written and roles are released.

Then the new generation starts its app. If it serves, the parked
connections move to it as after any handover. If it fails, L{Pause.resume}
starts the old app again, reads the parked connections again and accepts:
the listening sockets were never closed.

The pause is bounded: if in-flight work or the app's stop takes longer than
C{timeout}, the restart is given up and the old generation resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from txflip.core.drain import httpChannelOf, isTLS, lowestTransport
from txflip.core.farewell import Farewell, farewellFor
from txflip.core.log import log
from txflip.core.movable import listenerKeyOf, verdict
from txflip.core.twistedprivate import handlingRequest

CHECK_INTERVAL = 0.02


class PauseTimedOut(Exception):
    """In-flight work or the app's stop outlasted the pause timeout."""


class AppLifecycle:
    """
    How a generation stops its app and starts it again, for a sequential handover.

    @param stop: stops the app; may return a L{Deferred}.
    @param start: starts it again after a failed restart; may return a L{Deferred}.
    """

    def __init__(self, stop: Callable[[], object], start: Callable[[], object]) -> None:
        self.stop = stop
        self.start = start


class Pause:
    """
    One pause of C{generation} for its successor.

    @ivar appStopped: whether the app has been stopped (and must be started
        again if the restart fails).
    """

    def __init__(self, generation, timeout: float) -> None:
        self._generation = generation
        self._reactor = generation.reactor
        self._timeout = timeout
        self._parked: dict = {}  # protocol -> its idle timeout before parking
        self._loop: LoopingCall | None = None
        self._timer = None
        self._farewell: Farewell | None = None
        self._quiet: Deferred | None = None
        self._started = 0.0
        self.appStopped = False
        self.resumed = False

    @property
    def parked(self) -> int:
        return len(self._parked)

    def parkedConnections(self) -> list:
        """The protocols of the connections parked so far."""
        return list(self._parked)

    def start(self) -> Deferred:
        """
        Stop accepting, finish what is in flight, stop the app.

        @return: fires once the app has stopped; fails with L{PauseTimedOut}
            (or the app's own error) if the pause cannot complete.
        """
        generation = self._generation
        self._started = self._reactor.seconds()
        # The control socket goes on answering: txflip status shows the pause.
        generation.registry.pauseApp()
        generation.registry.keepWhenStopped = True
        deadline = self._started + self._timeout
        self._farewell = Farewell(self._reactor, 0.0, deadline, True)
        connections = generation.tracker.open()
        self._farewell.plan(c for c in connections if httpChannelOf(c) is None)
        log.info(
            "the next generation built its app; pausing for it: accepting nothing, "
            "finishing {count} connection(s), then stopping the app (at most {timeout:g}s)",
            count=len(connections),
            timeout=self._timeout,
        )
        self._quiet = Deferred()
        self._timer = self._reactor.callLater(self._timeout, self._timedOut)
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._reactor
        self._loop.start(CHECK_INTERVAL, now=True)
        return self._quiet.addCallback(lambda _: self._stopApp())

    def elapsed(self) -> float:
        return self._reactor.seconds() - self._started

    def status(self) -> dict:
        """How far the pause is, for C{txflip status}."""
        return {
            "ms": int(self.elapsed() * 1000),
            "parked": len(self._parked),
            "appStopped": self.appStopped,
            "timeoutSeconds": self._timeout,
        }

    def _check(self) -> None:
        waiting = 0
        remaining = self._generation.tracker.open()
        self._farewell.tellDue(r for r in remaining if httpChannelOf(r) is None)
        registry = self._generation.registry
        for protocol in remaining:
            if protocol in self._parked:
                continue
            if registry.isInternal(listenerKeyOf(lowestTransport(protocol), registry)):
                continue  # txflip's own control connections (a txflip reload waiting)
            seen = verdict(protocol)
            channel = httpChannelOf(protocol)
            if seen.kind == "movable":
                self._park(protocol, channel)
            elif seen.kind == "busy":
                waiting += 1
            elif channel is None:
                # Another protocol (a Buildbot worker's PB connection) has no
                # request to finish: the app's stop closes it. Wait only for
                # those told to close (WebSocket, drainStarted).
                if farewellFor(protocol, self._reactor) is not None:
                    waiting += 1
            elif isTLS(protocol) and not (channel.requests or handlingRequest(channel)):
                # An idle TLS connection cannot move: it closes now, before the app stops.
                lowestTransport(protocol).loseConnection()
                waiting += 1
            else:
                channel.persistent = False  # closes after the response in progress
                waiting += 1
        if not waiting:
            self._stopLoop()
            if not self._quiet.called:
                self._quiet.callback(None)

    def _park(self, protocol, channel) -> None:
        transport = lowestTransport(protocol)
        transport.stopReading()
        self._parked[protocol] = channel.setTimeout(None)

    def _stopLoop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _timedOut(self) -> None:
        self._stopLoop()
        if self._quiet is not None and not self._quiet.called:
            busy = len(self._generation.tracker.open()) - len(self._parked)
            self._quiet.errback(
                Failure(
                    PauseTimedOut(
                        f"{busy} connection(s) still busy after the pause timeout of "
                        f"{self._timeout:g}s (--pause-timeout)"
                    )
                )
            )

    def _stopApp(self) -> Deferred:
        app = self._generation.app
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if app is None:
            return _fired()
        log.info(
            "stopping the app for the next generation ({parked} idle connection(s) parked)",
            parked=len(self._parked),
        )
        self.appStopped = True
        stopping = maybeDeferred(app.stop)
        timer = self._reactor.callLater(self._timeout, stopping.cancel)

        def stopped(result):
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                log.error(
                    "stopping the app failed: {error}",
                    error=f"{result.type.__name__}: {result.getErrorMessage()}",
                )
                return result
            log.info("the app stopped after {ms} ms of pause", ms=int(self.elapsed() * 1000))
            return None

        return stopping.addBoth(stopped)

    def resume(self, why: str) -> Deferred:
        """
        The restart failed: start the app again if it was stopped, read the
        parked connections again, and accept.
        """
        if self.resumed:
            return _fired()
        self.resumed = True
        self._stopLoop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        app = self._generation.app
        starting = _fired()
        if self.appStopped and app is not None:
            log.info("starting the app again: {why}", why=why)
            starting = maybeDeferred(app.start)
            starting.addErrback(
                lambda f: log.error(
                    "starting the app again failed: {error}",
                    error=f"{f.type.__name__}: {f.getErrorMessage()}",
                )
            )
        return starting.addCallback(lambda _: self._unpark())

    def _unpark(self) -> None:
        for protocol, timeout in list(self._parked.items()):
            transport = lowestTransport(protocol)
            if transport is not None and not getattr(transport, "disconnected", False):
                httpChannelOf(protocol).setTimeout(timeout)
                transport.startReading()
        self._parked.clear()
        self._generation.registry.keepWhenStopped = False
        self._generation.registry.resumeAll()
        log.info("accepting again after {ms} ms of pause", ms=int(self.elapsed() * 1000))


def _fired() -> Deferred:
    d: Deferred = Deferred()
    d.callback(None)
    return d
