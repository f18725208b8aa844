"""
Programs that run their own reactor get zero-downtime restarts: through
C{python -m txflip run}, unchanged, and through the API (the example in
docs/api.rst).
"""

from __future__ import annotations

import json
import os
import signal
import sys

from twisted.trial.unittest import TestCase

from tests.support.load import Load
from tests.support.procs import Flip, freePort, httpGet, pidAlive, waitFor
from tests.support.together import restartsUnderLightLoad

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
OWN_REACTOR = os.path.join(SUPPORT, "ownreactor.py")
API_EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(SUPPORT)), "docs", "examples", "hello_api.py"
)


class Program(Flip):
    """
    A program with its own reactor, run as C{command} instead of C{twistd flip}.

    Its L{log} is standard error, where flip's lines go while the program has
    not begun logging itself; L{output} is what the program wrote to standard
    output.
    """

    def __init__(self, testCase, command: list[str], logsToStdout: bool = False, **kw) -> None:
        super().__init__(testCase, [], **kw)
        self._command = [arg.replace("{pidFile}", self.pidFile) for arg in command]
        self._logsToStdout = logsToStdout

    def command(self) -> list[str]:
        return self._command

    def log(self) -> str:
        return self.output() if self._logsToStdout else self.stderr()

    def output(self) -> str:
        return Flip.log(self)


def launcher(*args: str) -> list[str]:
    """C{python -m txflip run --pid-file {pidFile} ARGS...}"""
    return [sys.executable, "-m", "txflip", "run", "--pid-file", "{pidFile}", *args]


SUPPORT_ON_PATH = {"PYTHONPATH": os.pathsep.join([SUPPORT, os.environ.get("PYTHONPATH", "")])}


def served(port: int) -> dict:
    status, headers, body = httpGet("127.0.0.1", port, "/")
    assert status == 200, (status, body)
    return json.loads(body)


class LauncherTests(TestCase):
    def restartUnderLoad(self, program: Program, port: int, count: int) -> list[int]:
        """Start C{program}, restart it C{count} times under load; every PID, first included."""
        return [program.start(), *restartsUnderLightLoad(self, program, port, count)]

    def test_moduleThatRunsTheReactorRestartsUnderLoad(self) -> None:
        """
        python -m txflip run -m MODULE ARGS: 3 restarts under load, no failed
        request; every generation's program gets its arguments unchanged, its
        own options and C{--} included, and flip's lines are on stderr.
        """
        port = freePort()
        theirs = ["-c", "homeserver.yaml", "--pid-file", "theirs.pid", str(port), "--", "x y"]
        program = Program(self, launcher("-m", "ownreactor", *theirs), env=SUPPORT_ON_PATH)
        pids = self.restartUnderLoad(program, port, 3)
        self.assertEqual(served(port), {"pid": pids[-1], "argv": theirs, "sighups": 0})
        self.assertIn(f"[txflip gen 4 pid {pids[-1]}] serving", program.stderr())
        self.assertFalse(os.path.exists(os.path.join(program.workdir, "theirs.pid")))

    def test_scriptUsingReactDrainsOnSigterm(self) -> None:
        """A react() script: restarts, then SIGTERM drains, exits and removes the PID file."""
        port = freePort()
        program = Program(self, launcher(OWN_REACTOR, "-c", "x y", str(port), "--react", "--"))
        pids = self.restartUnderLoad(program, port, 2)
        self.assertIn(f"[txflip gen 3 pid {pids[-1]}] serving", program.log())
        self.assertEqual(served(port)["argv"], ["-c", "x y", str(port), "--react", "--"])
        os.kill(pids[-1], signal.SIGTERM)
        waitFor(lambda: not pidAlive(pids[-1]), "the last generation to exit")
        self.assertFalse(os.path.exists(program.pidFile))
        self.assertIn("generation exits (shut down)", program.log())

    def test_programThatBeginsLoggingGetsFlipsLinesAndNoWarning(self) -> None:
        """
        A program that begins Twisted's logging itself (Synapse) is the only
        one to: no "selected twice" warning, and flip's lines, those logged
        before it began included, are in its log and no longer on stderr.
        """
        port = freePort()
        program = Program(
            self, launcher("-m", "ownreactor", str(port), "--log"), True, env=SUPPORT_ON_PATH
        )
        program.start()
        second = program.restart()
        output = program.output()
        self.assertIn(f"[txflip gen 2 pid {second}] generation 2 starting, handed", output)
        self.assertIn(f"[txflip gen 2 pid {second}] serving", output)
        self.assertNotIn("] serving", program.stderr())
        self.assertNotIn("selected twice", output + program.stderr())

    def test_restartSignalLeavesSighupToTheProgram(self) -> None:
        """--restart-signal USR2: USR2 restarts, SIGHUP reaches the program's own handler."""
        port = freePort()
        program = Program(
            self,
            launcher("--restart-signal", "usr2", "-m", "ownreactor", str(port), "--own-sighup"),
            env=SUPPORT_ON_PATH,
        )
        first = program.start()
        os.kill(first, signal.SIGHUP)
        waitFor(lambda: served(port)["sighups"] == 1, "the program to get SIGHUP")
        os.kill(first, signal.SIGUSR2)
        second = waitFor(lambda: (p := program.pid()) != first and p, "the next generation")
        program.waitServing(second)
        waitFor(lambda: not pidAlive(first), "generation 1 to exit")
        self.assertEqual(served(port)["pid"], second)
        self.assertIn(f"[txflip gen 1 pid {first}] SIGUSR2: starting generation 2", program.log())
        self.assertNotIn("installed its own", program.log())

    def test_badUsageIsOneLine(self) -> None:
        program = Program(self, [sys.executable, "-m", "txflip", "run", "--ready-timeout", "0"])
        program.start(waitReady=False)
        program.process.wait(timeout=60)
        self.assertEqual(program.process.returncode, 2)
        lines = program.stderr().strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("--ready-timeout", lines[0])
        self.assertIn("above 0", lines[0])

    def test_badRestartSignalIsOneLine(self) -> None:
        program = Program(self, launcher("--restart-signal", "INT", OWN_REACTOR, "8080"))
        program.start(waitReady=False)
        program.process.wait(timeout=60)
        self.assertEqual(program.process.returncode, 2)
        [line] = program.stderr().strip().splitlines()
        self.assertIn("txflip run: error: --restart-signal INT: flip drains and exits on", line)


class ApiExampleTests(TestCase):
    def test_exampleFromTheDocsRestartsUnderLoad(self) -> None:
        """docs/examples/hello_api.py, as docs/api.rst shows it: restarts with no failed request."""
        port = freePort()
        program = Program(self, [sys.executable, API_EXAMPLE, str(port), "{pidFile}"])
        first = program.start(waitReady=False)
        waitFor(lambda: program.pid() == first, "the example's PID file")
        with Load("127.0.0.1", port, kinds=("newConnection", "keepAliveGet"), path="/") as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            pids = [first]
            for _ in range(2):
                os.kill(pids[-1], signal.SIGHUP)
                pids.append(
                    waitFor(lambda: (p := program.pid()) not in pids and p, "the next generation")
                )
                waitFor(lambda: not pidAlive(pids[-2]), "the previous generation to exit")
        self.assertEqual(load.failures(), {}, load.failureReport())
        status, headers, body = httpGet("127.0.0.1", port, "/")
        self.assertEqual(body.decode(), f"hello from generation 3, PID {pids[-1]}\n")
        os.kill(pids[-1], signal.SIGTERM)
        waitFor(lambda: not pidAlive(pids[-1]), "the example to exit after SIGTERM")
        self.assertFalse(os.path.exists(program.pidFile))
