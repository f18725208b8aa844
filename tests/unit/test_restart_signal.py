"""
The restart signal routed to the generation: a real signal sent to this
process, its handler, and the work it schedules on the running reactor; which
names C{--restart-signal} takes; and the warning once the app takes the signal.

The generation is a stand-in with a real L{Events} hub, whose refusal the
test sets: the point is when the refusal is taken, not why.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txflip.core.events import Events
from txflip.core.signals import RestartSignalDispatch, TakeoverWatch, flipHandles, restartSignal


class StandInGeneration:
    def __init__(self, refusing: str | None = None) -> None:
        self.events = Events()
        self.refusing = refusing
        self.upgrades: list[str] = []
        self.refused: list[dict] = []
        self.events.subscribe(
            lambda name, fields: self.refused.append(fields) if name == "upgrade-refused" else None
        )

    def refusal(self) -> str | None:
        return self.refusing

    def upgrade(self, source: str) -> None:
        self.upgrades.append(source)


def captureLog(testCase: TestCase) -> list[str]:
    """Every log line from now to the end of the test, formatted."""
    logs: list[str] = []
    observer = lambda event: logs.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return logs


def keepHandler(testCase: TestCase, signum: int) -> None:
    """Put back, after the test, the handler C{signum} has now."""
    testCase.addCleanup(signal.signal, signum, signal.getsignal(signum))


class SighupTests(TestCase):
    signum = signal.SIGHUP

    def setUp(self) -> None:
        keepHandler(self, self.signum)
        self.dispatch = RestartSignalDispatch(reactor, self.signum)
        self.dispatch.install()
        self.logs = captureLog(self)

    def hangUp(self) -> Deferred:
        """Send the signal to this process; fire once the reactor has run what it scheduled."""
        os.kill(os.getpid(), self.signum)
        done: Deferred = Deferred()
        # The handler ran at once and scheduled its work with callFromThread;
        # this is scheduled after it.
        reactor.callFromThread(done.callback, None)
        return done

    def test_upgradeStarts(self) -> None:
        generation = self.dispatch.generation = StandInGeneration()

        def check(_):
            self.assertEqual(generation.upgrades, ["SIGHUP"])
            self.assertEqual(generation.refused, [])

        return self.hangUp().addCallback(check)

    def test_refusedWithTheReasonItHadAtTheSignal(self) -> None:
        """What the generation refused when the signal came decides, not what it says later."""
        generation = self.dispatch.generation = StandInGeneration(
            "an upgrade is already in progress"
        )
        d = self.hangUp()
        generation.refusing = None

        def check(_):
            self.assertEqual(generation.upgrades, [])
            self.assertEqual(
                generation.refused,
                [{"source": "SIGHUP", "reason": "an upgrade is already in progress"}],
            )
            refusals = [line for line in self.logs if "SIGHUP refused" in line]
            self.assertEqual(len(refusals), 1)
            self.assertTrue(refusals[0].endswith("an upgrade is already in progress"))

        return d.addCallback(check)

    def test_beforeServing(self) -> None:
        """A SIGHUP before the generation serves is refused, and does not kill the process."""

        def check(_):
            refusals = [line for line in self.logs if "SIGHUP refused" in line]
            self.assertEqual(len(refusals), 1)
            self.assertTrue(refusals[0].endswith("this generation is not serving yet"))

        return self.hangUp().addCallback(check)


class OtherRestartSignalTests(TestCase):
    def setUp(self) -> None:
        keepHandler(self, signal.SIGUSR2)
        keepHandler(self, signal.SIGHUP)
        self.hupBefore = signal.getsignal(signal.SIGHUP)
        self.dispatch = RestartSignalDispatch(reactor, signal.SIGUSR2)
        self.dispatch.install()
        self.logs = captureLog(self)

    def test_upgradeStartsNamingTheSignal(self) -> None:
        """SIGUSR2 starts the upgrade, named as its source; SIGHUP's handler is left alone."""
        generation = self.dispatch.generation = StandInGeneration()
        os.kill(os.getpid(), signal.SIGUSR2)
        done: Deferred = Deferred()
        reactor.callFromThread(done.callback, None)

        def check(_):
            self.assertEqual(generation.upgrades, ["SIGUSR2"])
            self.assertIs(signal.getsignal(signal.SIGHUP), self.hupBefore)
            self.assertTrue(flipHandles(signal.SIGUSR2))

        return done.addCallback(check)

    def test_refusalNamesTheSignal(self) -> None:
        os.kill(os.getpid(), signal.SIGUSR2)
        done: Deferred = Deferred()
        reactor.callFromThread(done.callback, None)

        def check(_):
            refusals = [line for line in self.logs if "refused" in line]
            self.assertEqual(len(refusals), 1)
            self.assertIn("SIGUSR2 refused: this generation is not serving yet", refusals[0])

        return done.addCallback(check)


class RestartSignalNameTests(TestCase):
    def test_namesWithOrWithoutSig(self) -> None:
        for name in ("HUP", "USR1", "USR2", "SIGUSR2", "usr2", "sigHup"):
            self.assertIn(restartSignal(name), (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2))
        self.assertEqual(restartSignal("sigusr2"), signal.SIGUSR2)

    def assertRefused(self, name: str, *words: str) -> str:
        with self.assertRaises(ValueError) as caught:
            restartSignal(name)
        message = str(caught.exception)
        self.assertEqual(message.splitlines(), [message])
        self.assertTrue(message.startswith(f"--restart-signal {name}: "), message)
        for word in (*words, "give HUP, USR1 or USR2"):
            self.assertIn(word, message)
        return message

    def test_unknownName(self) -> None:
        self.assertRefused("USR3", "no such signal")
        self.assertRefused("12", "no such signal")

    def test_signalsFlipUsesOtherwise(self) -> None:
        self.assertRefused("TERM", "flip drains and exits on SIGTERM")
        self.assertRefused("SIGINT", "flip drains and exits on SIGINT")
        self.assertRefused("CHLD", "SIGCHLD")
        self.assertRefused("KILL", "cannot be caught")

    def test_signalsSentByOthers(self) -> None:
        """A terminal sends WINCH, the kernel PIPE: restarting on them would surprise."""
        for name in ("WINCH", "PIPE", "SEGV", "QUIT"):
            self.assertRefused(name, "nothing but you or a supervisor sends")


class TakeoverWatchTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.flipHandles = True
        self.watch = TakeoverWatch(
            self.clock,
            signal.SIGHUP,
            "restart with `txflip reload --pid-file /run/app.pid`",
            handled=lambda signum: self.flipHandles,
        )
        self.logs = captureLog(self)

    def warnings(self) -> list[str]:
        return [line for line in self.logs if "handler" in line]

    def test_takenBeforeServing(self) -> None:
        """An app that took the signal as it was built is seen at the first check."""
        self.flipHandles = False
        self.watch.start()
        [line] = self.warnings()
        self.assertIn("the app installed its own SIGHUP handler", line)
        self.assertIn("SIGHUP no longer restarts", line)
        self.assertIn("restart with `txflip reload --pid-file /run/app.pid`", line)
        self.assertIn("--restart-signal USR2", line)

    def test_takenLaterWarnsOnce(self) -> None:
        self.watch.start()
        self.clock.advance(TakeoverWatch.interval)
        self.assertEqual(self.warnings(), [])
        self.flipHandles = False
        self.clock.advance(TakeoverWatch.interval - 0.1)
        self.assertEqual(self.warnings(), [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.warnings()), 1)
        self.clock.advance(TakeoverWatch.interval * 10)
        self.assertEqual(len(self.warnings()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopped(self) -> None:
        self.watch.start()
        self.watch.stop()
        self.flipHandles = False
        self.clock.advance(TakeoverWatch.interval * 3)
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_suggestsAnotherSignalThanItsOwn(self) -> None:
        watch = TakeoverWatch(
            self.clock, signal.SIGUSR2, "restart with `txflip reload`", lambda s: False
        )
        watch.check()
        [line] = self.warnings()
        self.assertIn("own SIGUSR2 handler", line)
        self.assertIn("--restart-signal USR1", line)


class FlipHandlesTests(TestCase):
    def test_anyDispatchIsFlips(self) -> None:
        """Whichever dispatch installed it (the host's, handleSignals'), the handler is flip's."""
        keepHandler(self, signal.SIGUSR1)
        RestartSignalDispatch(reactor, signal.SIGUSR1).install()
        self.assertTrue(flipHandles(signal.SIGUSR1))
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        self.assertFalse(flipHandles(signal.SIGUSR1))
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self.assertFalse(flipHandles(signal.SIGUSR1))
