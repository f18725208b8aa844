"""
Throughput with --workers: txflip with 1 and 2 workers beside gunicorn with 1 and 2.

Every server answers GET / with the same six bytes ("hello\\n") and logs each
request to a file (Twisted's Site always does, through twistd's log;
gunicorn is given --access-logfile). For reference, plain Twisted runs too, as 1 and 2
processes that each listen on their own SO_REUSEPORT socket (the kernel
spreads the connections; no restarts). All six run warm and side by side; wrk
(one thread) runs against each in turn, keep-alive and new-connection rounds
alternating. Server CPU is the user + system time of every process of the
server (txflip's leader and workers, gunicorn's arbiter and workers) over the
round, per request; wrk's own CPU is beside it.

    python benchmarks/workers.py [--seconds 3] [--rounds 5] [--connections 16]

Prints a table, and the ratio of 2 processes to 1 for each server, round by round.
Loopback only; every process started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.procs import childrenOf, freePort, twistdCommand  # noqa: E402

TINY = """
from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello\\n"


resource = Hello()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\\n"]
"""

REUSEPORT = """
import os
import socket
import sys

# Twisted alone, for reference: N processes, each with its own SO_REUSEPORT
# socket on the same port, so the kernel spreads connections over them.
port, processes, logPath = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(processes - 1):
    if os.fork() == 0:
        break
listening = socket.socket()
listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
listening.bind(("127.0.0.1", port))
listening.listen(128)
listening.setblocking(False)

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.server import Site

from tiny import resource

# Each request is logged as under twistd: through the logger, to a file.
logFile = open(logPath, "a")
globalLogBeginner.beginLoggingTo([textFileLogObserver(logFile)], redirectStandardIO=False)
reactor.adoptStreamPort(listening.fileno(), socket.AF_INET, Site(resource))
listening.close()
reactor.run()
"""

KINDS = {"keep-alive": [], "new connection": ["-H", "Connection: close"]}
started: list[subprocess.Popen] = []


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time of C{pid} so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().split(")")[-1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """C{pid} and its children (a leader's workers, gunicorn's workers)."""
    return [pid, *childrenOf(pid)]


def answers(port: int) -> bool:
    try:
        out = subprocess.run(
            ["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            timeout=10,
        ).stdout
    except subprocess.TimeoutExpired:
        return False
    return out == b"hello\n"


def launch(name: str, command: list[str], workdir: str, port: int, processes: int):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([workdir, *sys.path[:1]]))
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=open(os.path.join(workdir, f"{name}.log"), "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(process)
    deadline = time.monotonic() + 120
    while not (answers(port) and len(tree(process.pid)) >= processes):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{name} did not start; see {workdir}/{name}.log")
        time.sleep(0.2)
    return process


def servers(workdir: str) -> dict[str, tuple[subprocess.Popen, int]]:
    running = {}
    for workers in (1, 2):
        port = freePort()
        command = [
            *twistdCommand(),
            "-n",
            "--pidfile=",
            "flip",
            "--app",
            "tiny.resource",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--pid-file",
            os.path.join(workdir, f"flip{workers}.pid"),
            "--workers",
            str(workers),
        ]
        # One process with --workers 1; a leader and its workers otherwise.
        processes = 1 if workers == 1 else 1 + workers
        name = f"txflip --workers {workers}"
        running[name] = (launch(f"flip{workers}", command, workdir, port, processes), port)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    for workers in (1, 2):
        port = freePort()
        command = [
            gunicorn,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            os.path.join(workdir, f"gunicorn{workers}-access.log"),
            "tiny:application",
        ]
        name = f"gunicorn -w {workers}"
        running[name] = (launch(f"gunicorn{workers}", command, workdir, port, 1 + workers), port)
    for processes in (1, 2):
        port = freePort()
        logPath = os.path.join(workdir, f"reuseport{processes}-access.log")
        command = [sys.executable, "reuseport.py", str(port), str(processes), logPath]
        name = f"Twisted, SO_REUSEPORT x{processes}"
        running[name] = (launch(f"reuseport{processes}", command, workdir, port, processes), port)
    return running


def wrkRound(port: int, pid: int, kind: str, seconds: int, connections: int):
    """
    One wrk round: (requests per second, server CPU microseconds per request,
    wrk's CPU microseconds per request, cores busy with both).
    """
    pids = tree(pid)
    before = sum(cpuSeconds(p) for p in pids)
    wrkBefore = _childrenCpu()
    started = time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            *KINDS[kind],
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    wall = time.monotonic() - started
    spent = sum(cpuSeconds(p) for p in pids) - before
    wrkSpent = _childrenCpu() - wrkBefore
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = max(int(re.search(r"(\d+) requests in", out).group(1)), 1)
    errors = re.search(r"Socket errors: (.*)|Non-2xx.*", out)
    if errors:
        print(f"  (wrk against port {port}, {kind}: {errors.group(0).strip()})", flush=True)
    return rate, spent / count * 1e6, wrkSpent / count * 1e6, (spent + wrkSpent) / wall


def _childrenCpu() -> float:
    """User plus system CPU of this script's waited-for children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stopEverything() -> None:
    for process in started:
        for pid in reversed(tree(process.pid)):
            try:
                os.kill(pid, signal.SIGTERM if pid == process.pid else signal.SIGKILL)
            except OSError:
                pass
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=3, help="length of one wrk round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind per server")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    workdir = tempfile.mkdtemp(prefix="txflip-bench-")
    with open(os.path.join(workdir, "tiny.py"), "w") as f:
        f.write(textwrap.dedent(TINY))
    with open(os.path.join(workdir, "reuseport.py"), "w") as f:
        f.write(textwrap.dedent(REUSEPORT))
    samples: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    try:
        running = servers(workdir)
        for _ in range(options.rounds):
            for kind in KINDS:
                for name, (process, port) in running.items():
                    sample = wrkRound(port, process.pid, kind, options.seconds, options.connections)
                    samples.setdefault((name, kind), []).append(sample)
    finally:
        stopEverything()
    # The servers' logs are kept only when something went wrong.
    shutil.rmtree(workdir, ignore_errors=True)

    def median(name: str, kind: str) -> list[float]:
        values = samples[(name, kind)]
        return [statistics.median(sample[i] for sample in values) for i in range(4)]

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(
        f"wrk -t1 -c{options.connections}, {options.seconds}s rounds, {options.rounds} of each "
        f"kind per server, alternating; medians. {os.cpu_count()} cores, shared with wrk; "
        f"load average at the end: {load}."
    )
    print("CPU/req: user + system time of the server's processes (wrk's beside it) per request;")
    print("busy: cores kept busy by the server and wrk together over the round.")
    print()
    print(
        "| server | keep-alive req/s | CPU/req (us) | wrk (us) | busy "
        "| new connection req/s | CPU/req (us) | wrk (us) | busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in running:
        cells = []
        for kind in KINDS:
            rate, cpu, wrk, busy = median(name, kind)
            cells += [f"{rate:.0f}", f"{cpu:.0f}", f"{wrk:.0f}", f"{busy:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("2 processes / 1: the median of the rounds' ratios (within a round the pair is measured")
    print("seconds apart), lowest and highest in brackets; CPU: of server CPU per request.")
    for one, two in (
        ("txflip --workers 1", "txflip --workers 2"),
        ("gunicorn -w 1", "gunicorn -w 2"),
        ("Twisted, SO_REUSEPORT x1", "Twisted, SO_REUSEPORT x2"),
    ):
        parts = []
        for kind in KINDS:
            ratios = [
                b[0] / a[0] for a, b in zip(samples[(one, kind)], samples[(two, kind)], strict=True)
            ]
            cpu = median(two, kind)[1] / median(one, kind)[1]
            parts.append(
                f"{kind} {statistics.median(ratios):.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f}), CPU {cpu:.2f}x"
            )
        print(f"{two} / {one.rsplit(' ', 1)[-1]}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
