"""
C{--workers 2}: a generation is a leader and two workers. Restarts under load
replace every worker and lose nothing; a worker that dies is replaced alone;
a release whose worker cannot start is killed whole; SIGTERM drains every
worker; and wrk's connections are spread over both workers.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections import Counter

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.acmehelpers import ISSUED, AcmeTestMixin, fetchTLS
from tests.support.anyapps import ZONE, writeFile
from tests.support.apps import SERVED_BY_RELEASE, appEnv, writeApp
from tests.support.delayproxy import DelayProxy
from tests.support.dnsqueries import DNSQueries
from tests.support.load import Load
from tests.support.notifycapture import NotifyCapture
from tests.support.procs import (
    BackgroundGet,
    Flip,
    UNIXHTTPConnection,
    freePort,
    httpGet,
    pidAlive,
    readPidFile,
    shortTempDir,
    waitFor,
    waitUntil,
)
from tests.support.tlshelpers import (
    TestCA,
    certPEM,
    clientContext,
    keyPEM,
    writePublic,
)
from txflip.tls.privatefile import writePrivate

RELEASE = (
    SERVED_BY_RELEASE
    + """

if txflip.current().workerIndex == %(brokenWorker)s:
    # This release cannot start in one of its workers (a missing file, a port
    # it cannot reach): the leader and the other worker start fine.
    reactor.callWhenRunning(os._exit, 3)
"""
)


def workerPids(flip: Flip) -> list[int]:
    return [worker["pid"] for worker in flip.status()["workers"]]


def allServing(flip: Flip, count: int = 2) -> list[int] | None:
    """The workers' PIDs once every one of them serves, else None."""
    try:
        workers = flip.status()["workers"]
    except Exception:
        return None
    if len(workers) == count and all(w["state"] == "serving" for w in workers):
        return [w["pid"] for w in workers]
    return None


class WorkersCase(TestCase):
    def startDemo(self, *extra: str, workers: str = "2", env=None) -> tuple[Flip, int]:
        port = freePort()
        flip = Flip(
            self,
            ["--workers", workers, "--listen", f"tcp:{port}:interface=127.0.0.1", *extra],
            env=env,
        )
        flip.start()
        waitFor(lambda: allServing(flip), "both workers to serve")
        return flip, port

    def startRelease(self, *extra: str) -> tuple[Flip, int, str]:
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        port = freePort()
        writeApp(workdir, "release", RELEASE, release="1", brokenWorker="-1")
        flip = Flip(
            self,
            ["--app", "release.resource", "--workers", "2"]
            + ["--listen", f"tcp:{port}:interface=127.0.0.1", *extra],
            workdir=workdir,
            env=appEnv(workdir),
        )
        flip.start()
        waitFor(lambda: allServing(flip), "both workers to serve")
        return flip, port, workdir


class RestartTests(WorkersCase):
    def test_restartsUnderLoadReplaceEveryWorker(self) -> None:
        """
        Two SIGHUPs under new-connection, keep-alive and POST load, on TCP (also
        through a 20 ms delay proxy) and unix: no failed request, every
        acknowledged POST stored, all workers of each generation replaced and
        gone, and only workers ever answer.
        """
        unixPath = os.path.join(tempfile.mkdtemp(prefix="txflip-test-"), "web.sock")
        flip, port = self.startDemo("--listen", f"unix:{unixPath}")
        proxy = DelayProxy(("127.0.0.1", port), delay=0.02).start()
        self.addCleanup(proxy.stop)
        leaders = [flip.pid()]
        generations = [workerPids(flip)]
        delayed = Load("127.0.0.1", proxy.port, kinds=("keepAliveGet", "keepAlivePost"))
        with Load("127.0.0.1", port) as load, delayed:
            waitFor(lambda: delayed.totalRequests() > 10, "load through the proxy to get going")
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            for _ in range(2):
                before = load.totalRequests(), delayed.totalRequests()
                leaders.append(flip.restart())
                generations.append(waitFor(lambda: allServing(flip), "the new workers to serve"))
                waitFor(
                    lambda b=before: (
                        load.totalRequests() > b[0] + 20 and delayed.totalRequests() > b[1] + 5
                    ),
                    "requests after a restart",
                )
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertEqual(delayed.failures(), {}, delayed.failureReport())
        everyWorker = [pid for pids in generations for pid in pids]
        self.assertEqual(len(set(everyWorker)), 6, generations)
        self.assertEqual(len(set(leaders)), 3)
        waitFor(
            lambda: flip.aliveGenerations() == sorted([leaders[-1], *generations[-1]]),
            "only the last leader and its workers left",
        )
        served = set()
        for result in load.results() + delayed.results():
            served.update(result.pids)
        self.assertFalse(served & set(leaders), "a leader answered a request")
        self.assertTrue(served <= set(everyWorker), served - set(everyWorker))
        acknowledged = [
            entry for r in load.results() + delayed.results() for entry in r.acknowledged
        ]
        self.assertGreater(len(acknowledged), 10)
        _, _, body = httpGet("127.0.0.1", port, "/guestbook")
        stored = {(entry["message"], entry["id"]) for entry in json.loads(body)}
        self.assertEqual(set(acknowledged) - stored, set())
        connection = UNIXHTTPConnection(unixPath)
        connection.request("GET", "/sleep?seconds=0")
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.assertIn(json.loads(response.read())["pid"], generations[-1])
        connection.close()
        self.assertEqual(flip.status()["generation"], 3)

    def test_brokenReleaseIsKilledWhole(self) -> None:
        """
        A release one of whose workers exits at start: the new leader and its
        other worker are killed, the old generation serves on with both of its
        workers, and no request fails.
        """
        flip, port, workdir = self.startRelease()
        leader, workers = flip.pid(), workerPids(flip)
        writeApp(workdir, "release", RELEASE, release="2", brokenWorker="1")
        with Load("127.0.0.1", port, kinds=("newConnection", "keepAliveGet"), path="/") as load:
            waitFor(lambda: load.totalRequests() > 20, "load to get going")
            os.kill(leader, signal.SIGHUP)
            flip.waitLog("failed: worker 1 (PID ")
            before = load.totalRequests()
            waitFor(lambda: load.totalRequests() > before + 20, "requests after the failure")
        self.assertEqual(load.failures(), {}, load.failureReport())
        self.assertRegex(
            flip.log(),
            rf"\[txflip gen 1 pid {leader}\] generation 2 \(PID \d+\) failed: worker 1 "
            r"\(PID \d+\) exited with code 3 before it was ready",
        )
        self.assertEqual(readPidFile(flip.pidFile), leader)
        self.assertEqual(allServing(flip), workers)
        waitFor(
            lambda: flip.aliveGenerations() == sorted([leader, *workers]),
            "the broken release's processes to be gone",
        )
        self.assertEqual(flip.status()["lastRestart"]["outcome"], "failed")
        self.assertEqual(httpGet("127.0.0.1", port, "/")[2], b"release 1")


class SelfHealingTests(WorkersCase):
    def test_killedWorkerIsReplacedAlone(self) -> None:
        """
        SIGKILL to one worker under load: only requests that worker held can
        fail, nothing is refused, a worker with the same sockets takes its slot
        and the log names its PID, how it ended and its generation; no restart.
        """
        flip, port = self.startDemo()
        leader = flip.pid()
        victim, survivor = workerPids(flip)
        kinds = ("newConnection", "newConnection", "keepAliveGet")
        with Load("127.0.0.1", port, kinds=kinds) as load:
            waitFor(lambda: load.totalRequests() > 50, "load to get going")
            os.kill(victim, signal.SIGKILL)
            replaced = waitFor(
                lambda: (pids := allServing(flip)) and victim not in pids and pids,
                "a replacement to serve",
            )
            before = load.totalRequests()
            waitFor(lambda: load.totalRequests() > before + 50, "requests after the replacement")
        failures = load.failures()
        self.assertNotIn("ConnectionRefusedError", failures, load.failureReport())
        self.assertLessEqual(sum(failures.values()), len(kinds), load.failureReport())
        self.assertEqual(replaced[1], survivor)
        self.assertIn(
            f"[txflip gen 1 pid {leader}] worker 0 (PID {victim}) of generation 1 was killed "
            "by signal 9; starting a replacement in 0.5s (failure 1 in a row)",
            flip.log(),
        )
        self.assertNotIn("starting generation 2", flip.log())
        self.assertEqual(readPidFile(flip.pidFile), leader)
        worker = flip.status()["workers"][0]
        self.assertEqual((worker["restarts"], worker["pid"]), (1, replaced[0]))
        self.assertEqual(flip.status()["generation"], 1)
        waitFor(
            lambda: (flip.status()["workers"][0]["requests"] or 0) > 0,
            "the replacement to report the requests it served",
            10,
        )

    def test_sigtermDrainsEveryWorker(self) -> None:
        """
        SIGTERM to the leader while a TLS request is under way in a worker: it
        is answered, every process exits, the leader with status 0, and the PID
        file and the unix socket are removed. systemd hears the leader alone:
        READY=1 with its PID once both workers serve, STOPPING=1 at the end.
        """
        notifyAddress = os.path.join(shortTempDir(self), "notify")
        capture = NotifyCapture(self, notifyAddress)
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        ca = TestCA(workdir)
        key, cert = ca.issue(["localhost", "127.0.0.1"])
        keyPath = os.path.join(workdir, "key.pem")
        writePrivate(keyPath, keyPEM(key))
        certPath = writePublic(os.path.join(workdir, "cert.pem"), certPEM(cert))
        chainPath = writePublic(os.path.join(workdir, "chain.pem"), certPEM(ca.intermediate))
        tlsPort = freePort()
        unixPath = os.path.join(workdir, "web.sock")
        flip, port = self.startDemo(
            "--listen",
            f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
            f":extraCertChain={chainPath}",
            "--listen",
            f"unix:{unixPath}",
            env={"NOTIFY_SOCKET": notifyAddress},
        )
        leader, workers = flip.pid(), workerPids(flip)
        ready = capture.waitFor(lambda m: "READY" in m[1], "READY=1")[0]
        self.assertEqual((ready[0], ready[1].get("MAINPID")), (leader, str(leader)))
        log = flip.log()
        self.assertLess(
            log.index("all 2 workers of generation 1 are ready"),
            log.index(f"pid {leader}] serving ("),
            "the leader serves (and says READY=1) only once every worker is ready",
        )
        connection = http.client.HTTPSConnection(
            "127.0.0.1", tlsPort, timeout=30, context=clientContext(ca.caFile)
        )
        connection.request("GET", "/sleep?seconds=2")
        waitFor(lambda: "sleeping 2.0s for a request" in flip.log(), "the slow request to start")
        slow = BackgroundGet("127.0.0.1", port, "/sleep?seconds=2")
        flip.waitLog("sleeping 2.0s for a request", count=2)
        os.kill(leader, signal.SIGTERM)
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.assertIn(json.loads(response.read())["pid"], workers)
        slow.join()
        self.assertIsNone(slow.error, slow.error)
        self.assertEqual(flip.process.wait(timeout=60), 0)
        waitFor(lambda: not any(pidAlive(p) for p in workers), "every worker to exit")
        self.assertFalse(os.path.exists(flip.pidFile))
        self.assertFalse(os.path.exists(unixPath))
        for pid in workers:
            self.assertIn(f"[txflip gen 1 pid {pid}] generation exits (shut down)", flip.log())
        capture.waitFor(lambda m: "STOPPING" in m[1], "STOPPING=1")
        self.assertEqual({sender for sender, _, _ in capture.messages}, {leader})


class FairnessTests(WorkersCase):
    def test_wrkConnectionsAreSpreadOverTheWorkers(self) -> None:
        """wrk, keep-alive then a new connection per request: no worker below half its share."""
        if shutil.which("wrk") is None:
            raise SkipTest("wrk is not installed")
        flip, port = self.startDemo()
        url = f"http://127.0.0.1:{port}/sleep?seconds=0"

        def requests() -> list[int] | None:
            counts = [w["requests"] for w in flip.status()["workers"]]
            return None if None in counts else counts

        for extra in ([], ["-H", "Connection: close"]):
            before = waitFor(requests, "the workers' first counts")
            out = subprocess.run(
                ["wrk", "-t1", "-c8", "-d2s", *extra, url],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            sent = int(re.search(r"(\d+) requests in", out).group(1))
            self.assertGreater(sent, 100, out)

            def counted(before=before, sent=sent):
                served = [n - b for n, b in zip(requests(), before, strict=True)]
                return sum(served) >= sent and served

            served = waitFor(counted, "the workers' counts to reach wrk's")
            for count in served:
                self.assertGreaterEqual(count, sum(served) / 4, (extra, served))

    def test_longLivedConnectionsOpenedOneByOneAreSpread(self) -> None:
        """
        Sixty keep-alive clients arriving 20 ms apart and staying: no worker
        holds fewer than two thirds of its share. Without the balance, the
        worker the kernel favours took 39 to 47 of the 60.
        """
        flip, port = self.startDemo()
        clients = []
        self.addCleanup(lambda: [client.close() for client in clients])
        for _ in range(60):
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            clients.append(client)
            client.request("GET", "/sleep?seconds=0")
            response = client.getresponse()
            self.assertEqual((response.status, json.loads(response.read())["slept"]), (200, 0.0))
            time.sleep(0.02)

        def held() -> list[int] | None:
            counts = [w["connections"] for w in flip.status()["workers"]]
            return counts if None not in counts and sum(counts) == len(clients) else None

        counts = waitFor(held, "the workers to report all 60 connections")
        for count in counts:
            self.assertGreaterEqual(count, len(clients) / 3, counts)

    def test_aWorkerDrainingAfterSIGTERMHoldsNobodyBack(self) -> None:
        """
        A worker sent SIGTERM drains by itself, holding few connections: the
        other, holding many, must go on taking the new ones, not be held.
        """
        flip, port = self.startDemo()
        clients: dict[int, list[http.client.HTTPConnection]] = {}
        everyone: list[http.client.HTTPConnection] = []
        self.addCleanup(lambda: [client.close() for client in everyone])
        # Twelve or more, until both workers hold some: the kernel alone picks
        # (the balance counts a connection only once settled), and now and
        # then gives one worker all twelve.
        for _ in range(60):
            if len(everyone) >= 12 and len(clients) == 2:
                break
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            everyone.append(client)
            client.request("GET", "/sleep?seconds=0")
            clients.setdefault(json.loads(client.getresponse().read())["pid"], []).append(client)
            time.sleep(0.02)
        self.assertEqual(len(clients), 2, "both workers hold connections")
        # The worker with fewer connections gets a slow request, so its drain
        # lasts, then SIGTERM; the other keeps its idle keep-alive clients.
        draining, busy = sorted(clients, key=lambda pid: len(clients[pid]))
        self.assertGreaterEqual(len(clients[busy]), 6)
        slow = clients[draining][0]
        slow.request("GET", "/sleep?seconds=6")
        os.kill(draining, signal.SIGTERM)
        waitFor(
            lambda: f"pid {draining}] shutting down: closing listeners and draining" in flip.log(),
            "the worker to start draining",
        )

        def drainingHolds() -> int | None:
            worker = next(w for w in flip.status()["workers"] if w["pid"] == draining)
            return worker["connections"]

        # Its idle clients closed, it holds the slow request alone: the fewest.
        waitFor(lambda: drainingHolds() == 1, "the draining worker to hold only the slow request")
        # The leader decides on a hold at each report: before each request,
        # wait for the report that counts the one before it.
        answered = Counter({pid: len(held) for pid, held in clients.items()})
        for _ in range(5):
            status, headers, _ = httpGet("127.0.0.1", port, "/sleep?seconds=0", timeout=3)
            self.assertEqual(status, 200)
            pid = int(headers["X-Served-By"])
            answered[pid] += 1

            def reported(pid=pid) -> dict | None:
                worker = next((w for w in flip.status()["workers"] if w["pid"] == pid), None)
                return worker if worker and (worker["requests"] or 0) >= answered[pid] else None

            worker = waitFor(reported, f"PID {pid} to report {answered[pid]} requests")
            self.assertFalse(worker["held"], f"PID {pid} is held while the other drains")
        self.assertEqual(slow.getresponse().status, 200, "the slow request is answered")
        self.assertNotIn("file descriptor cannot be a negative integer", flip.log())


class AcmeTests(AcmeTestMixin, WorkersCase):
    def test_theLeaderIssuesAndEveryWorkerServesTheRenewal(self) -> None:
        """
        ACME (pebble, HTTP-01) with --workers 2 renewing at every check: only
        the leader asks the CA for certificates, and both workers serve the
        first one and a renewed one, picked up from the store.
        """
        self.setUpAcme()
        flip = self.flip(
            "http-01",
            extra=["--workers", "2", "--acme-renew-days", "100000", "--acme-check-interval", "1"],
        )
        leader = flip.start()
        workers = waitFor(lambda: allServing(flip), "both workers to serve")
        flip.waitLog(ISSUED, deadline=60)
        root = self.rootFile()
        first = int(
            re.search(rf"{ISSUED} for a\.test, b\.test: serial ([0-9a-f]+)", flip.log())[1], 16
        )
        seen: dict[int, set[int]] = {pid: set() for pid in workers}

        def bothServeARenewal() -> bool:
            for _ in range(4):
                try:
                    status, body, cert = fetchTLS(
                        self.tlsPort, "a.test", cafile=root, path="/sleep?seconds=0"
                    )
                except ssl.SSLCertVerificationError:
                    # A worker serves the fallback until it reads the store (2 s at most).
                    return False
                self.assertEqual(status, 200, body[:200])
                # The body is as sent (chunked): find the PID in it.
                seen[int(re.search(rb'"pid": (\d+)', body)[1])].add(cert.serial_number)
            return all(serials - {first} for serials in seen.values())

        waitFor(bothServeARenewal, "both workers to serve a renewed certificate", 90)
        requests = re.findall(
            r"\[txflip gen 1 pid (\d+)\] ACME: requesting a certificate", flip.log()
        )
        self.assertGreaterEqual(len(requests), 2)
        self.assertEqual(set(requests), {str(leader)})
        for pid in workers:
            self.assertIn(
                f"[txflip gen 1 pid {pid}] ACME: now serving the stored by another process "
                "certificate",
                flip.log(),
            )


class ServiceAppTests(WorkersCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_dnsPluginOverUDPAndTCPThroughARestart(self):
        """
        twisted.names' dns plugin, an app that listens by itself on UDP and TCP,
        with --workers 2: the leader opens both sockets, each worker serves
        both, and a restart under UDP and TCP queries loses none.
        """
        workdir = tempfile.mkdtemp(prefix="txflip-test-")
        zone = writeFile(workdir, "example.test.zone", ZONE)
        port = freePort()
        flip = Flip(
            self,
            ["--workers", "2", "dns", "--interface", "127.0.0.1", "--port", str(port)]
            + ["--bindzone", zone],
            workdir=workdir,
        )
        yield deferToThread(flip.start)
        first = yield deferToThread(waitFor, lambda: allServing(flip), "both workers to serve")
        queries = DNSQueries(port)
        try:
            yield waitUntil(lambda: queries.total() > 20, "answers from the first generation")
            before = dict(queries.answered)
            leader = yield deferToThread(flip.restart)
            second = yield deferToThread(waitFor, lambda: allServing(flip), "the new workers")
            yield waitUntil(
                lambda: all(queries.answered[k] > before[k] + 5 for k in before),
                "UDP and TCP answers from the new generation",
            )
        finally:
            yield queries.stop()
        self.assertEqual(queries.failures, [])
        self.assertFalse(set(first) & set(second))
        log = flip.log()
        for generation, pids in ((1, first), (2, second)):
            for pid in pids:
                self.assertIn(
                    f"[txflip gen {generation} pid {pid}] adopted inherited listener "
                    f"udp:127.0.0.1:{port}",
                    log,
                )
        self.assertEqual(flip.pid(), leader)
