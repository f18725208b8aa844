"""
Restarts that keep-alive clients see, or not: txflip against gunicorn's HUP.

N keep-alive clients (urllib3, a pool of one connection each, retries off)
POST unique messages through a proxy that delays each direction by 20 ms,
idle 0.3-2.5 s between requests, while the server is restarted R times,
S seconds apart: txflip with SIGHUP (the demo app), as one process and with
--workers 2, gunicorn (2 gthread workers, keep-alive 10 s so that only restarts
close connections) with HUP and a tiny WSGI app storing POSTs in SQLite. Then
the same without restarts.

    python benchmarks/keepalive_restarts.py [--clients 32] [--restarts 10] [--seconds-between 2.5]

Prints a table: POSTs, failed POSTs (never retried), acknowledged POSTs not
stored, and new connections per restart (beyond each client's first).
Loopback only; run by hand, not a test. Every process started is stopped by
PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.delayproxy import DelayProxy  # noqa: E402
from tests.support.keepalive import acknowledgedSoFar, startPosters, stopPosters  # noqa: E402
from tests.support.procs import (  # noqa: E402
    childrenOf,
    freePort,
    pidAlive,
    readPidFile,
    twistdCommand,
    waitFor,
)

GAPS = (0.3, 2.5)
DELAY = 0.02

WSGI_APP = """
import json, os, sqlite3

PATH = os.environ["KEEPALIVE_BENCH_DB"]

def _db():
    db = sqlite3.connect(PATH, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS posts (message TEXT NOT NULL)")
    return db

def app(environ, start_response):
    pid = str(os.getpid()).encode()
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        message = json.loads(environ["wsgi.input"].read(length))["message"]
        db = _db()
        with db:
            db.execute("INSERT INTO posts VALUES (?)", (message,))
        db.close()
        body, status = b'{"ok": true}', "201 Created"
    else:
        db = _db()
        body = json.dumps([{"message": m} for (m,) in db.execute("SELECT message FROM posts")])
        db.close()
        body, status = body.encode(), "200 OK"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), ("X-Served-By", pid.decode())])
    return [body]
"""


@dataclass
class Row:
    server: str
    restarts: int
    posts: int
    failed: int
    lost: int
    newConnections: int
    seconds: float
    sample: str


class Server:
    """One server under test: start, restart, read what it stored, stop."""

    name = ""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.port = freePort()
        self.pidFile = os.path.join(workdir, "server.pid")
        self.process: subprocess.Popen | None = None
        self.seen: set[int] = set()

    def launch(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=dict(os.environ, **env),
            stdout=open(os.path.join(self.workdir, "server.log"), "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.seen.add(self.process.pid)
        waitFor(lambda: self.answers(), f"{self.name} to answer", 60)

    def answers(self) -> bool:
        try:
            self.stored()
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return True

    def stored(self) -> set[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/guestbook", headers={"Connection": "close"})
            return {entry["message"] for entry in json.loads(conn.getresponse().read())}
        finally:
            conn.close()

    def restart(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pids = set(self.seen)
        for pid in list(pids):
            pids.update(childrenOf(pid))
        for pid in pids:
            if pidAlive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.process is not None:
            self.process.wait(timeout=10)


class Txflip(Server):
    name = "txflip SIGHUP"
    extraArgs: tuple[str, ...] = ()

    def start(self) -> None:
        self.launch(
            [
                *twistdCommand(),
                "-n",
                "flip",
                "--pid-file",
                self.pidFile,
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                *self.extraArgs,
            ],
            {
                "TXFLIP_DEMO_DB": os.path.join(self.workdir, "demo.sqlite3"),
                "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            },
        )

    def restart(self) -> None:
        old = readPidFile(self.pidFile)
        os.kill(old, signal.SIGHUP)
        new = waitFor(lambda: (p := readPidFile(self.pidFile)) not in (None, old) and p, "new PID")
        self.seen.add(new)


class TxflipWorkers(Txflip):
    name = "txflip --workers 2 SIGHUP"
    extraArgs = ("--workers", "2")


class Gunicorn(Server):
    name = "gunicorn gthread HUP"

    def start(self) -> None:
        with open(os.path.join(self.workdir, "benchapp.py"), "w") as f:
            f.write(textwrap.dedent(WSGI_APP))
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.launch(
            [
                gunicorn,
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "8",
                "--keep-alive",
                "10",
                "--graceful-timeout",
                "30",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--pid",
                self.pidFile,
                "benchapp:app",
            ],
            {
                "KEEPALIVE_BENCH_DB": os.path.join(self.workdir, "posts.sqlite3"),
                "PYTHONPATH": self.workdir,
            },
        )

    def restart(self) -> None:
        master = readPidFile(self.pidFile)
        self.seen.add(master)
        before = set(childrenOf(master))
        self.seen.update(before)
        os.kill(master, signal.SIGHUP)
        waitFor(lambda: set(childrenOf(master)) - before, "new gunicorn workers")
        self.seen.update(childrenOf(master))


def run(server: Server, clients: int, rounds: int, between: float, restarting: bool) -> Row:
    """C{rounds} restarts (if asked) C{between} seconds apart under load, then one more period."""
    server.start()
    proxy = DelayProxy(("127.0.0.1", server.port), delay=DELAY).start()
    stop, posters = startPosters("127.0.0.1", proxy.port, clients, gaps=GAPS)
    try:
        waitFor(lambda: acknowledgedSoFar(posters) >= clients, "every client's first POST")
        started = time.monotonic()
        for round in range(rounds + 1):
            time.sleep(max(0.0, started + between * (round + 1) - time.monotonic()))
            if restarting and round < rounds:
                server.restart()
        seconds = time.monotonic() - started
        stopPosters(stop, posters)
        acknowledged = {m for p in posters for m in p.result.acknowledged}
        failures = [f for p in posters for f in p.result.failures]
        stored = server.stored()
        return Row(
            server=server.name if restarting else server.name.split()[0] + ", no restarts",
            restarts=rounds if restarting else 0,
            posts=sum(len(p.result.acknowledged) + len(p.result.failures) for p in posters),
            failed=len(failures),
            lost=len(acknowledged - stored),
            newConnections=proxy.connections - clients,
            seconds=seconds,
            sample=failures[0].split(": ", 1)[1][:60] if failures else "",
        )
    finally:
        stop.set()
        proxy.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seconds-between", type=float, default=2.5)
    args = parser.parse_args()
    rows = []
    for kind, restarting in (
        (Txflip, True),
        (TxflipWorkers, True),
        (Gunicorn, True),
        (Txflip, False),
    ):
        workdir = tempfile.mkdtemp(prefix="keepalive-bench-")
        try:
            server = kind(workdir)
            rows.append(run(server, args.clients, args.restarts, args.seconds_between, restarting))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{args.clients} keep-alive POST clients (urllib3, one connection each, no retries), "
        f"{DELAY * 1000:g} ms each way, idle {GAPS[0]}-{GAPS[1]} s between requests; "
        f"{args.restarts} restarts {args.seconds_between:g} s apart\n"
    )
    header = (
        f"{'server':<27}{'seconds':>8}{'POSTs':>7}{'failed':>8}{'lost':>6}"
        f"{'new conns/restart':>19}"
        "  first failure"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        perRestart = f"{row.newConnections / row.restarts:.1f}" if row.restarts else "-"
        extra = "" if row.restarts else f" ({row.newConnections} in all)"
        print(
            f"{row.server:<27}{row.seconds:>8.1f}{row.posts:>7}{row.failed:>8}{row.lost:>6}"
            f"{perRestart + extra:>19}  {row.sample}"
        )


if __name__ == "__main__":
    main()
