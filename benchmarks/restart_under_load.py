"""
Restarts under load: txflip against a plain twistd stop-and-start.

Runs the demo app, puts the three clients of the restart tests on it (a new
connection per request, keep-alive GETs, keep-alive POSTs that never retry),
and restarts it N times: with SIGHUP under flip, and with SIGTERM followed by a
new start under plain `twistd web`. Then measures steady throughput of both
with wrk (no restarts), and the bare start-up time of Python + Twisted + the app.

    python benchmarks/restart_under_load.py [--restarts 10] [--seconds-between 2]

Prints a table. Loopback only; every loop is bounded; every process started is
stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.load import Load  # noqa: E402
from tests.support.procs import freePort, pidAlive, readPidFile, twistdCommand, waitFor  # noqa: E402

APP = "txflip.demo.makeResource"
started: list[subprocess.Popen] = []
seenPids: set[int] = set()


def launch(args: list[str], workdir: str) -> subprocess.Popen:
    env = dict(os.environ, TXFLIP_DEMO_DB=os.path.join(workdir, "demo.sqlite3"))
    process = subprocess.Popen(
        [*twistdCommand(), "-n", "--pidfile=", *args],
        cwd=workdir,
        env=env,
        stdout=open(os.path.join(workdir, "out.log"), "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(process)
    seenPids.add(process.pid)
    return process


def servedBy(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/sleep?seconds=0", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return int(response.getheader("X-Served-By"))
    except (OSError, http.client.HTTPException, TypeError, ValueError):
        return None


def pollUntil(predicate, what: str, deadline: float = 60.0, interval: float = 0.005):
    """Poll every C{interval} seconds (no back-off, so timings stay exact)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"gave up after {deadline}s waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def split(load: Load, windows: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    inside, outside = [], []
    for result in load.results():
        for at, latency in result.latencies:
            began = at - latency
            hit = any(start <= at and began <= end for start, end in windows)
            (inside if hit else outside).append(latency)
    return inside, outside


def startFlip() -> tuple[int, str]:
    """Run the demo under flip; return its port and PID file once it answers."""
    workdir = tempfile.mkdtemp(prefix="txflip-bench-")
    port = freePort()
    pidFile = os.path.join(workdir, "flip.pid")
    launch(
        [
            "flip",
            "--app",
            APP,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--pid-file",
            pidFile,
        ],
        workdir,
    )
    pollUntil(lambda: servedBy(port), "flip to answer")
    return port, pidFile


def sighup(port: int, pidFile: str) -> float:
    """Restart flip; return seconds from SIGHUP to the first response of the new PID."""
    old = readPidFile(pidFile)
    seenPids.add(old)
    started = time.monotonic()
    os.kill(old, signal.SIGHUP)
    new = pollUntil(lambda: (p := servedBy(port)) not in (None, old) and p, "new PID")
    handoff = time.monotonic() - started
    seenPids.add(new)
    pollUntil(lambda: not pidAlive(old), "old PID to exit", 120)
    return handoff


def runFlip(restarts: int, between: float) -> dict:
    port, pidFile = startFlip()
    windows, handoffs = [], []
    with Load("127.0.0.1", port, deadline=600) as load:
        time.sleep(between)
        for _ in range(restarts):
            begin = time.time()
            handoffs.append(sighup(port, pidFile))
            windows.append((begin, time.time()))
            time.sleep(between)
    return summarise("txflip (SIGHUP)", load, windows, handoffs)


def runPlain(restarts: int, between: float) -> dict:
    workdir = tempfile.mkdtemp(prefix="txflip-bench-")
    port = freePort()
    args = ["web", "--listen", f"tcp:{port}:interface=127.0.0.1", "--class", APP]
    process = launch(args, workdir)
    waitFor(lambda: servedBy(port), "twistd web to answer")
    windows, handoffs = [], []
    with Load("127.0.0.1", port, deadline=600) as load:
        time.sleep(between)
        for _ in range(restarts):
            begin = time.time()
            t0 = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            process = launch(args, workdir)
            waitFor(lambda p=process: servedBy(port) == p.pid, "the new twistd to answer", 60)
            handoffs.append(time.monotonic() - t0)
            windows.append((begin, time.time()))
            time.sleep(between)
    return summarise("plain twistd stop+start", load, windows, handoffs)


def summarise(name: str, load: Load, windows, handoffs) -> dict:
    inside, outside = split(load, windows)
    failures = load.failures()
    return {
        "name": name,
        "requests": load.totalRequests(),
        "failures": sum(failures.values()),
        "kinds": ", ".join(f"{k} {v}" for k, v in failures.most_common()) or "-",
        "p99in": percentile(inside, 0.99) * 1000,
        "p99out": percentile(outside, 0.99) * 1000,
        "handoff": statistics.median(handoffs) * 1000 if handoffs else float("nan"),
        "restarts": len(windows),
    }


def idleHandoff(runs: int = 5) -> float:
    """Median seconds from SIGHUP to the first response of the new PID, with no other load."""
    port, pidFile = startFlip()
    times = [sighup(port, pidFile) for _ in range(runs)]
    os.kill(readPidFile(pidFile), signal.SIGTERM)
    return statistics.median(times)


def bareStartup(runs: int = 5) -> float:
    """Median seconds from exec to first response of plain twistd web with the demo app."""
    times = []
    for _ in range(runs):
        workdir = tempfile.mkdtemp(prefix="txflip-bench-")
        port = freePort()
        t0 = time.monotonic()
        process = launch(
            ["web", "--listen", f"tcp:{port}:interface=127.0.0.1", "--class", APP], workdir
        )
        pollUntil(lambda port=port: servedBy(port), "twistd web to answer")
        times.append(time.monotonic() - t0)
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return statistics.median(times)


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time of C{pid} so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(")")[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steadyThroughput(rounds: int, seconds: int) -> dict[str, tuple[float, float]] | None:
    """
    Requests per second and server CPU microseconds per request, flip against
    plain twistd web, both warm and running side by side, wrk rounds alternating.

    @return: name -> (median rate, median CPU per request), or None without wrk.
    """
    if shutil.which("wrk") is None:
        return None
    servers = {}
    for name, args in (
        ("txflip", ["flip", "--app", APP, "--listen", "tcp:PORT:interface=127.0.0.1"]),
        ("plain twistd", ["web", "--listen", "tcp:PORT:interface=127.0.0.1", "--class", APP]),
    ):
        workdir = tempfile.mkdtemp(prefix="txflip-bench-")
        port = freePort()
        full = [a.replace("PORT", str(port)) for a in args]
        if name == "txflip":
            full += ["--pid-file", os.path.join(workdir, "flip.pid")]
        process = launch(full, workdir)
        pollUntil(lambda port=port: servedBy(port), f"{name} to answer")
        servers[name] = (process, port)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, (process, port) in servers.items():
            before = cpuSeconds(process.pid)
            out = subprocess.run(
                ["wrk", "-t2", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/sleep?seconds=0"],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            ).stdout
            spent = cpuSeconds(process.pid) - before
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            count = int(re.search(r"(\d+) requests in", out).group(1))
            samples[name].append((rate, spent / count * 1e6))
    for process, _ in servers.values():
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {
        name: (statistics.median(r for r, _ in values), statistics.median(c for _, c in values))
        for name, values in samples.items()
    }


def stopEverything() -> None:
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    for pid in seenPids:
        if pid and pidAlive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seconds-between", type=float, default=2.0)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--throughput-rounds", type=int, default=5)
    options = parser.parse_args()
    try:
        rows = [
            runFlip(options.restarts, options.seconds_between),
            runPlain(options.restarts, options.seconds_between),
        ]
        startup = bareStartup()
        idle = idleHandoff()
        steady = steadyThroughput(options.throughput_rounds, options.wrk_seconds)
    finally:
        stopEverything()

    print()
    print(f"Restarts under mixed load ({options.restarts} restarts, 3 clients)")
    print()
    print(
        "| server | restarts | requests | failed | failures by kind "
        "| p99 in windows (ms) | p99 outside (ms) | handoff median (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['restarts']} | {r['requests']} | {r['failures']} | {r['kinds']} "
            f"| {r['p99in']:.1f} | {r['p99out']:.1f} | {r['handoff']:.0f} |"
        )
    print()
    handoff = rows[0]["handoff"] / 1000
    print(
        f"bare start-up of Python + Twisted + the demo app, idle (median of 5): "
        f"{startup * 1000:.0f} ms"
    )
    print(
        f"txflip handoff, idle (SIGHUP -> first response from the new PID, median of 5): "
        f"{idle * 1000:.0f} ms = {idle / startup:.2f}x bare start-up (target <= 1.2x)"
    )
    print(
        f"txflip handoff under the mixed load (median of {rows[0]['restarts']}): "
        f"{handoff * 1000:.0f} ms = {handoff / startup:.2f}x idle bare start-up; the new "
        f"generation starts while the old one and the clients keep both cores busy"
    )
    print(
        f"p99 inside / outside restart windows under txflip: "
        f"{rows[0]['p99in'] / rows[0]['p99out']:.2f}x (target <= 2x)"
    )
    if steady is None:
        print("steady throughput: wrk not available")
    else:
        (flipRate, flipCpu), (plainRate, plainCpu) = steady["txflip"], steady["plain twistd"]
        print(
            f"steady throughput, both servers warm, wrk -t2 -c16 {options.wrk_seconds}s rounds "
            f"alternating, median of {options.throughput_rounds}: txflip {flipRate:.0f} req/s, "
            f"plain twistd {plainRate:.0f} req/s, ratio {flipRate / plainRate:.3f} "
            f"(target >= 0.97); server CPU per request {flipCpu:.0f} us vs {plainCpu:.0f} us"
        )


if __name__ == "__main__":
    main()
