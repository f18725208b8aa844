"""
C{--handover sequential}: an app that must never run twice at once (ids handed
out from memory, a role claimed in its database) restarts under a POST load
with no failed request, every acknowledged row stored once, and the role held
by the serving generation; the same app under C{overlap} collides, which is
what the test is for.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.support.apps import appEnv, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.procs import (
    BackgroundGet,
    Flip,
    freePort,
    httpGet,
    shortTempDir,
    txflip,
    txflipCommand,
    waitFor,
)
from tests.support.singlewriter import SINGLE_WRITER_APP, SINGLE_WRITER_PROGRAM, Poster


class SingleWriterTests:
    """What holds for the single-writer app however it is run; see the two classes below."""

    restarts = 5
    template: str

    def flip(self, handover: str, **release):
        """Deploy release 1 (or C{release}) of the app and start it under C{handover}."""
        self.workdir = shortTempDir(self)
        self.db = os.path.join(self.workdir, "rows.sqlite3")
        self.port = freePort()
        self.deploy(**release)
        flip = self.launch(handover)
        flip.start()
        return flip

    def deploy(self, release: int = 1, broken: str = "", spared: int = 0) -> None:
        writeApp(
            self.workdir,
            "writer",
            self.template,
            db=self.db,
            port=self.port,
            broken=broken,
            spared=spared,
            release=release,
        )

    def underLoad(self, flip: Flip, restarts: int, port: int | None = None) -> list[Poster]:
        posters = [Poster(port or self.port, f"c{i}") for i in range(4)]
        for poster in posters:
            poster.start()
        try:
            waitFor(lambda: sum(len(p.stored) for p in posters) > 20, "POSTs to get going")
            for _ in range(restarts):
                before = sum(len(p.stored) for p in posters)
                flip.restart()
                waitFor(
                    lambda before=before: sum(len(p.stored) for p in posters) > before + 10,
                    "POSTs after a restart",
                )
        finally:
            for poster in posters:
                poster.stop()
        return posters

    def storedRows(self) -> dict[str, int]:
        with sqlite3.connect(self.db) as db:
            return {body: rowId for rowId, body in db.execute("select id, body from rows")}

    def roleHolder(self) -> str:
        return httpGet("127.0.0.1", self.port, "/role")[2].decode()

    def test_restartsUnderPostLoadLoseNothing(self) -> None:
        """Restarts under load: 0 failed or refused requests, each acknowledged row stored once."""
        flip = self.flip("sequential")
        posters = self.underLoad(flip, restarts=self.restarts)
        self.assertEqual([f for p in posters for f in p.failures], [])
        self.assertEqual(sum(p.refused for p in posters), 0)
        acknowledged = {body: rowId for p in posters for body, rowId in p.stored.items()}
        self.assertEqual(self.storedRows(), acknowledged)
        self.assertEqual(self.roleHolder(), str(flip.pid()), "the role is the serving PID's")

    def test_overlapCollides(self) -> None:
        """The same app under overlap: two generations hand out the same ids."""
        flip = self.flip("overlap")
        posters = self.underLoad(flip, restarts=2)
        failures = [f for p in posters for f in p.failures]
        self.assertTrue(
            any("UNIQUE constraint failed" in f for f in failures),
            f"no collision seen: {failures[:3]}",
        )

    def test_releaseBrokenAtBuildLeavesTheOldServing(self) -> None:
        """A release that cannot be built: the old app never stopped, and serves."""
        flip = self.flip("sequential")
        pid = flip.pid()
        self.deploy(release=2, broken="build")
        os.kill(pid, 1)
        flip.waitLog("cannot be built")
        flip.waitLog("keeps serving")
        self.assertEqual(httpGet("127.0.0.1", self.port, "/pid")[2].decode(), str(pid))
        self.assertNotIn("stopping the", flip.log())


class SequentialHandoverTests(SingleWriterTests, TestCase):
    """The single-writer app as a service under C{twistd flip --handover sequential}."""

    template = SINGLE_WRITER_APP

    def launch(self, handover: str) -> Flip:
        return Flip(
            self,
            ["--app", "writer.makeService", "--handover", handover],
            workdir=self.workdir,
            env=appEnv(self.workdir),
        )

    def test_throughADelayProxyNothingIsLost(self) -> None:
        """The same through a proxy adding 20 ms each way: parked connections move."""
        flip = self.flip("sequential")
        proxy = DelayProxy(("127.0.0.1", self.port), 0.02).start()
        self.addCleanup(proxy.stop)
        posters = self.underLoad(flip, restarts=2, port=proxy.port)
        self.assertEqual([f for p in posters for f in p.failures], [])
        acknowledged = {body: rowId for p in posters for body, rowId in p.stored.items()}
        self.assertEqual(self.storedRows(), acknowledged)
        self.assertEqual(proxy.connections, 4, "no client opened a second connection")

    def test_reloadAndStatusReportThePause(self) -> None:
        """
        txflip status shows the pause while a request holds it; txflip reload
        reports its phases and how long new connections waited, and exits 0.
        """
        flip = self.flip("sequential")
        slow = BackgroundGet("127.0.0.1", self.port, "/slow?seconds=2")
        waitFor(
            lambda: "1 in flight" in txflip("status", "--pid-file", flip.pidFile).stdout,
            "the slow request to be in flight",
        )
        reload = subprocess.Popen(
            txflipCommand("reload", "--pid-file", flip.pidFile),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(reload.kill)
        status = waitFor(
            lambda: (
                "paused:" in (out := txflip("status", "--pid-file", flip.pidFile).stdout) and out
            ),
            "txflip status to show the pause",
        )
        self.assertIn("finishing what is in flight", status)
        output, _ = reload.communicate(timeout=60)
        self.assertEqual(reload.returncode, 0, output)
        self.assertIn("built its app", output)
        self.assertIn("app stopped: generation 1", output)
        self.assertRegex(output, r"new connections waited at most \d+ ms \(sequential\)")
        slow.join()
        self.assertEqual(slow.response[2], b"slow done", "the request in flight was answered")

    def test_roleHeldByTheServingGeneration(self) -> None:
        """A role claimed at startService is the serving generation's after each restart."""
        flip = self.flip("sequential")
        for _ in range(2):
            pid = flip.restart()
            self.assertEqual(self.roleHolder(), str(pid))

    def test_releaseBrokenAtStartGetsTheOldAppBack(self) -> None:
        """The new app fails after the old one stopped: the old app starts again and serves."""
        flip = self.flip("sequential")
        pid = flip.pid()
        self.deploy(release=2, broken="start")
        os.kill(pid, 1)
        flip.waitLog("cannot start its database")
        flip.waitLog("accepting again after")
        self.assertEqual(httpGet("127.0.0.1", self.port, "/pid")[2].decode(), str(pid))
        self.assertEqual(self.roleHolder(), str(pid), "the old app claimed its role again")
        self.assertEqual(flip.pid(), pid)


class ProgramSequentialHandoverTests(SingleWriterTests, TestCase):
    """
    The same app as a program that runs its own reactor and opens its database
    in C{main()}, as Synapse does: C{python -m txflip run --handover sequential}.
    """

    restarts = 3
    template = SINGLE_WRITER_PROGRAM

    def launch(self, handover: str) -> Flip:
        from tests.integration.test_own_reactor_programs import Program

        return Program(
            self,
            [sys.executable, "-m", "txflip", "run", "--pid-file", "{pidFile}"]
            + ["--handover", handover, "-m", "writer"],
            workdir=self.workdir,
            env=appEnv(self.workdir),
        )

    def test_reloadReportsTheNewGeneration(self) -> None:
        """The old program stops, and its control connection with it: reload still knows."""
        flip = self.flip("sequential")
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        waitFor(lambda: flip.pid() != flip.process.pid, "the new PID in the PID file")
        self.assertIn(f"serving: generation 2 (PID {flip.pid()}) took over", result.stdout)

    def test_releaseBrokenAtStartGetsTheOldAppBack(self) -> None:
        """The new program fails after the old one stopped: the old one runs its program again."""
        flip = self.flip("sequential")
        pid = flip.pid()
        # Release 2 fails to open its database in every process but the old one,
        # whose program runs again (execv keeps the PID) from the same files.
        self.deploy(release=2, broken="start", spared=pid)
        result = txflip("reload", "--pid-file", flip.pidFile)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(f"generation 1 (PID {pid}) runs its program again", result.stdout)
        flip.waitLog("running generation 1's program again")
        waitFor(lambda: flip.log().count(f"pid {pid}] serving") >= 2, "the program again")
        self.assertEqual(httpGet("127.0.0.1", self.port, "/pid")[2].decode(), str(pid))
        self.assertEqual(self.roleHolder(), str(pid))
        self.assertEqual(flip.pid(), pid)
