"""
The control socket and the C{txflip} command, against real flip processes:
reload and its phases, status, a stale socket after a crash, who may connect,
and a client that trusts only a server run by root or its own user.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import threading

from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import appEnv, writeJSONApp
from tests.support.procs import Flip, freePort, pidAlive, servedBy, txflip, waitFor


class ControlTestCase(TestCase):
    def startFlip(self, *extra: str, app: bool = True) -> Flip:
        self.port = freePort()
        flip = Flip(self, [], env=None)
        self.flip = flip
        args = ["--listen", f"tcp:{self.port}:interface=127.0.0.1", *extra]
        if app:
            args += ["--app", writeJSONApp(flip.workdir, 1)]
            flip.env.update(appEnv(flip.workdir))
        flip.args = args
        flip.start()
        self.control = flip.pidFile + ".control"
        return flip


class ReloadTests(ControlTestCase):
    def test_reloadSucceeds(self) -> None:
        """
        C{txflip reload} prints every phase and exits 0 once the new generation
        serves; the old one exits.
        """
        flip = self.startFlip()
        old = flip.pid()
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        new = flip.pid()
        self.assertNotEqual(new, old)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 6, result.stdout)
        self.assertEqual(
            lines[0], f"child started: generation 2 as PID {new} (parent: generation 1, PID {old})"
        )
        self.assertRegex(lines[1], rf"^ready after \d+ ms: PID {new}$")
        self.assertRegex(lines[2], rf"^serving: generation 2 \(PID {new}\) took over after \d+ ms$")
        self.assertIn(f"parent draining: generation 1 (PID {old})", lines[3])
        self.assertRegex(
            lines[4], r"^moved 0 keep-alive connection\(s\) to generation 2 in \d+ ms$"
        )
        self.assertEqual(lines[5], f"done: generation 2 (PID {new}) serves")
        self.assertEqual(servedBy(self.port), new)
        waitFor(lambda: not pidAlive(old), f"old PID {old} to exit")

    def test_brokenReleaseFailsThenFixedReleaseSucceeds(self) -> None:
        """
        A next release that raises at import makes C{txflip reload} exit 1
        with the reason; the old generation keeps serving. Once the release
        is fixed, the next reload succeeds.
        """
        flip = self.startFlip()
        old = flip.pid()
        writeJSONApp(flip.workdir, 2, broken="release 2 cannot find its config")
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("release 2 cannot find its config", result.stdout)
        self.assertIn(f"generation 1 (PID {old}) keeps serving", result.stdout)
        self.assertRegex(result.stdout.splitlines()[-1], r"^failed: generation 2 \(PID \d+\) ")
        self.assertEqual(flip.pid(), old)
        self.assertEqual(servedBy(self.port), old)

        status = json.loads(txflip("status", "--pid-file", flip.pidFile, "--json").stdout)
        self.assertEqual(status["lastRestart"]["outcome"], "failed")
        self.assertIn("release 2 cannot find its config", status["lastRestart"]["reason"])

        writeJSONApp(flip.workdir, 2)
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        new = flip.pid()
        self.assertNotEqual(new, old)
        self.assertIn(f"done: generation 2 (PID {new}) serves", result.stdout)
        status = json.loads(txflip("status", "-p", flip.pidFile, "--json").stdout)
        self.assertEqual(status["pid"], new)

    def test_timeoutEndsTheWait(self) -> None:
        """
        A release slower than C{--timeout}: the command says the timeout ended
        the wait and exits 124; a second reload meanwhile is refused.
        """
        flip = self.startFlip("--ready-timeout", "120")
        old = flip.pid()
        with open(os.path.join(flip.workdir, "jsonapp.py"), "a") as f:
            f.write("\nimport time\ntime.sleep(60)\n")
        result = txflip("reload", "--pid-file", flip.pidFile, "--timeout", "3")
        self.assertEqual(result.returncode, 124, result.stdout + result.stderr)
        self.assertIn("timed out after 3s waiting for the outcome", result.stderr)
        self.assertIn("last phase: started", result.stderr)
        second = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(second.returncode, 1, second.stdout + second.stderr)
        self.assertIn("refused: an upgrade is already in progress", second.stdout)
        self.assertEqual(servedBy(self.port), old)

    def test_noServer(self) -> None:
        """Without a server the command says what is missing and exits 2."""
        flip = Flip(self, [])
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"no control socket at {flip.pidFile}.control", result.stderr)
        self.assertEqual(result.stderr.count("\n"), 1)


class StatusTests(ControlTestCase):
    def test_statusAcrossSighup(self) -> None:
        """
        C{txflip status} names PID, generation, listeners and connections in
        flight; after a plain SIGHUP it reports the new generation.
        """
        flip = self.startFlip(app=False)
        first = flip.pid()
        result = txflip("status", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"pid:         {first}\n", result.stdout)
        self.assertIn("generation:  1\n", result.stdout)
        self.assertIn(f"listeners:   tcp:127.0.0.1:{self.port}\n", result.stdout)
        self.assertIn("last restart: none", result.stdout)

        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (servedBy(self.port, path="/sleep?seconds=4"), done.set()), daemon=True
        )
        thread.start()
        self.addCleanup(thread.join, 30)

        def inFlight():
            status = json.loads(txflip("status", "-p", flip.pidFile, "--json").stdout)
            return status["connections"] >= 1 and status

        status = waitFor(inFlight, "a connection in flight")
        self.assertEqual(status["state"], "serving")

        second = flip.restart()
        status = json.loads(txflip("status", "-p", flip.pidFile, "--json").stdout)
        self.assertEqual(status["pid"], second)
        self.assertEqual(status["generation"], 2)
        self.assertEqual(status["lastRestart"]["outcome"], "succeeded")
        self.assertEqual(status["lastRestart"]["reason"], f"took over from PID {first}")
        self.assertEqual(status["listeners"], [f"tcp:127.0.0.1:{self.port}"])


class StaleSocketTests(ControlTestCase):
    def test_staleSocketAfterACrash(self) -> None:
        """After SIGKILL leaves the socket file behind, the next start takes its place."""
        flip = self.startFlip(app=False)
        crashed = flip.pid()
        os.kill(crashed, signal.SIGKILL)
        waitFor(lambda: not pidAlive(crashed), f"PID {crashed} to die")
        self.assertTrue(os.path.exists(self.control))
        flip.start()
        status = json.loads(txflip("status", "-p", flip.pidFile, "--json").stdout)
        self.assertEqual(status["pid"], flip.pid())
        self.assertNotEqual(status["pid"], crashed)


class PermissionTests(ControlTestCase):
    def test_socketIsPrivateAcrossRestarts(self) -> None:
        """The control socket is mode 0600 and survives restarts as the same socket."""
        flip = self.startFlip(app=False)
        before = os.stat(self.control)
        self.assertTrue(stat.S_ISSOCK(before.st_mode))
        self.assertEqual(stat.S_IMODE(before.st_mode), 0o600)
        flip.restart()
        flip.restart()
        after = os.stat(self.control)
        self.assertEqual(stat.S_IMODE(after.st_mode), 0o600)
        self.assertEqual(after.st_ino, before.st_ino)
        self.assertEqual(txflip("status", "-p", flip.pidFile).returncode, 0)

    def connectAs(self, user: str) -> subprocess.CompletedProcess:
        """Ask for a restart from a process running as C{user}."""
        script = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(30)\n"
            "try:\n"
            "    s.connect(sys.argv[1])\n"
            "except OSError as e:\n"
            "    print('connect:', type(e).__name__); sys.exit(3)\n"
            "try:\n"
            "    s.sendall(b'reload\\n')\n"
            "except OSError:\n"
            "    pass\n"
            "data = b''\n"
            "while True:\n"
            "    chunk = s.recv(4096)\n"
            "    if not chunk: break\n"
            "    data += chunk\n"
            "print(data.decode())\n"
        )
        return subprocess.run(
            ["/usr/bin/python3", "-I", "-c", script, self.control],
            user=user,
            group="nogroup",
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )

    def test_otherUsersAreRefused(self) -> None:
        """
        Another user cannot connect (mode 0600); if the mode is loosened by
        hand, the peer-credential check still refuses, and nothing restarts.
        """
        if os.geteuid() != 0:
            self.skipTest("needs root to run a client as another user")
        try:
            pwd.getpwnam("nobody")
            grp.getgrnam("nogroup")
        except KeyError:
            self.skipTest("no user nobody / group nogroup to run the client as")
        if not os.access("/usr/bin/python3", os.X_OK):
            self.skipTest("no /usr/bin/python3 to run the client as nobody")
        flip = self.startFlip(app=False)
        os.chmod(flip.workdir, 0o711)
        old = flip.pid()

        result = self.connectAs("nobody")
        self.assertEqual(result.returncode, 3, result.stdout + result.stderr)
        self.assertIn("connect: PermissionError", result.stdout)

        os.chmod(self.control, 0o666)
        result = self.connectAs("nobody")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        answer = json.loads(result.stdout)
        self.assertEqual(answer["phase"], "refused")
        self.assertIn("may not control this server: only uid 0 and root may", answer["reason"])
        flip.waitLog("control socket: refused PID")
        self.assertEqual(flip.pid(), old)
        self.assertNotIn("starting generation 2", flip.log())


class ClientTrustTests(TestCase):
    def test_refusesAServerRunByAnotherUser(self):
        """A control socket planted by another user is not believed."""
        if os.geteuid() != 0:
            raise SkipTest("needs root, to run the planted server as nobody")
        if not os.path.exists("/usr/bin/python3"):
            raise SkipTest("no /usr/bin/python3 to run the planted server as nobody")
        directory = tempfile.mkdtemp(prefix="txflip-test-")
        os.chmod(directory, 0o777)
        path = os.path.join(directory, "flip.pid.control")
        planted = subprocess.Popen(
            [
                "/usr/bin/python3",
                "-I",
                "-c",
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.bind(sys.argv[1])\n"
                "s.listen(1)\n"
                "print('up', flush=True)\n"
                "s.settimeout(60)\n"
                "c, _ = s.accept()\n"
                'c.sendall(b\'{"phase": "done", "ok": true}\\n\')\n'
                "c.recv(1)\n",
                path,
            ],
            user=65534,
            group=65534,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(planted.wait, 30)
        self.addCleanup(planted.kill)
        self.assertEqual(planted.stdout.readline().strip(), b"up")
        result = txflip("status", "--control", path)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("neither root nor you: not trusting it", result.stderr)
