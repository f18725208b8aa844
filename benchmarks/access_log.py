"""
Requests per second with an access log: txflip's --access-log beside twistd web's --logfile.

The same app (GET / answers "hello\\n", benchmarks/workers.py's TINY) runs
under ``twistd -n web --class tiny.Hello --logfile FILE`` (Twisted's Site
writing its own access log, one write per line) and ``twistd -n flip --app
tiny.resource --access-log FILE``, both warm side by side (twistd web's file
rotates itself every megabyte); wrk (one thread)
runs against each in turn, keep-alive and new-connection rounds alternating.
At the end, the lines in each access log are counted against the requests wrk
made (and the curl that checked each server was up).

    python benchmarks/access_log.py [--seconds 5] [--rounds 3] [--connections 16]

Loopback only; every process started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workers import KINDS, TINY, launch, stopEverything, wrkRound  # noqa: E402

from tests.support.procs import freePort, twistdCommand  # noqa: E402

SERVERS = ("twistd web --logfile", "twistd flip --access-log")


def servers(workdir: str) -> dict[str, tuple[object, int, str]]:
    running = {}
    for name in SERVERS:
        port = freePort()
        logPath = os.path.join(workdir, name.split()[1] + "-access.log")
        listen = f"tcp:{port}:interface=127.0.0.1"
        if name.startswith("twistd web"):
            command = [*twistdCommand(), "-n", "--pidfile=", "web", "--class", "tiny.Hello"]
            command += ["--listen", listen, "--logfile", logPath]
        else:
            command = [*twistdCommand(), "-n", "--pidfile=", "flip", "--app", "tiny.resource"]
            command += ["--listen", listen, "--no-control", "--access-log", logPath]
        process = launch(name.split()[1], command, workdir, port, 1)
        running[name] = (process, port, logPath)
    return running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind per server")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    workdir = tempfile.mkdtemp(prefix="txflip-bench-")
    with open(os.path.join(workdir, "tiny.py"), "w") as f:
        f.write(textwrap.dedent(TINY))
    samples: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    try:
        running = servers(workdir)
        for _ in range(options.rounds):
            for kind in KINDS:
                for name, (process, port, _) in running.items():
                    sample = wrkRound(port, process.pid, kind, options.seconds, options.connections)
                    samples.setdefault((name, kind), []).append(sample)
    finally:
        stopEverything()
    logged = {}
    for name, (_, _, logPath) in running.items():
        # twistd web's --logfile rotates itself at 1 MB: count FILE, FILE.1, ...
        logged[name] = 0
        for path in glob.glob(glob.escape(logPath) + "*"):
            with open(path, "rb") as f:
                logged[name] += f.read().count(b"\n")
    shutil.rmtree(workdir, ignore_errors=True)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(
        f"wrk -t1 -c{options.connections}, {options.seconds}s rounds, {options.rounds} of each "
        f"kind per server, alternating; medians. {os.cpu_count()} cores, shared with wrk; "
        f"load average at the end: {load}."
    )
    print()
    print("CPU/req: user + system time of the server process per request (what a shared")
    print("machine disturbs least: req/s also depends on what else runs).")
    print()
    print(
        "| server | keep-alive req/s | CPU/req (us) | new connection req/s | CPU/req (us) "
        "| access-log lines |"
    )
    print("|---|---|---|---|---|---|")
    for name in SERVERS:
        cells = []
        for kind in KINDS:
            cells.append(f"{statistics.median(s[0] for s in samples[(name, kind)]):.0f}")
            cells.append(f"{statistics.median(s[1] for s in samples[(name, kind)]):.0f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {logged[name]} |")
    print()
    web, flip = SERVERS
    for kind in KINDS:
        pairs = list(zip(samples[(web, kind)], samples[(flip, kind)], strict=True))
        rates = [b[0] / a[0] for a, b in pairs]
        cpu = [a[1] / b[1] for a, b in pairs]
        print(
            f"{kind}: flip / web req/s {statistics.median(rates):.2f}x "
            f"({min(rates):.2f}-{max(rates):.2f}); web / flip CPU per request "
            f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}-{max(cpu):.2f}); round by round"
        )


if __name__ == "__main__":
    main()
