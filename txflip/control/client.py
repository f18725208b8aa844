"""
The C{txflip} command: ask a running C{twistd flip} for a restart and report
how it ended, or print its status, over its control socket.

Exit codes of C{txflip reload}: 0 the new generation serves; 1 the restart
failed or was refused (the old generation keeps serving); 2 the server could
not be asked (no control socket, not allowed, bad usage); 124 the timeout
ended the wait before the outcome was known.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

from txflip._version import __version__
from txflip.control.paths import defaultControlPath

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 2
EXIT_TIMEOUT = 124
DEFAULT_TIMEOUT = 120.0
FULL_QUEUE_RETRY_SECONDS = 2.0
"""How long a full queue (a burst of clients) is retried before giving up."""


class Unreachable(Exception):
    """The control socket could not be used; the message says why and what to do."""


def controlPath(args: argparse.Namespace) -> str:
    if args.control:
        return args.control
    if args.pid_file:
        return defaultControlPath(args.pid_file)
    raise Unreachable(
        "say which server: --pid-file FILE (as given to twistd flip) or --control PATH"
    )


def connect(path: str, timeout: float, retryFor: float = FULL_QUEUE_RETRY_SECONDS) -> socket.socket:
    """
    Connect to the control socket at C{path}.

    A unix socket whose queue is full refuses at once (C{EAGAIN}) rather than
    waiting: that is retried with a growing pause for C{retryFor} seconds (the
    last try at the end of them), since a burst of clients drains in milliseconds.
    """
    giveUpAt = time.monotonic() + min(retryFor, timeout)
    pause = 0.005
    while True:
        try:
            return _connectOnce(path, timeout)
        except BlockingIOError:
            remaining = giveUpAt - time.monotonic()
            if remaining <= 0:
                raise Unreachable(
                    f"the control socket {path} is not accepting: its queue stayed full "
                    f"for {min(retryFor, timeout):g}s; try again, or check that the server "
                    "is not stuck"
                ) from None
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)


def _connectOnce(path: str, timeout: float) -> socket.socket:
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    skt.settimeout(timeout)
    try:
        skt.connect(path)
    except BlockingIOError:
        skt.close()
        raise
    except FileNotFoundError:
        skt.close()
        raise Unreachable(
            f"no control socket at {path}: is twistd flip running with this PID file "
            "(and without --no-control)?"
        ) from None
    except PermissionError:
        skt.close()
        raise Unreachable(
            f"permission denied on {path}: run as the user the server runs as, or as root"
        ) from None
    except ConnectionRefusedError:
        skt.close()
        raise Unreachable(f"nothing listens on {path}: the server is not running") from None
    except OSError as e:
        skt.close()
        raise Unreachable(f"cannot connect to {path}: {e.strerror or e}") from None
    serverUid = struct.unpack(
        "3i", skt.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )[1]
    if serverUid not in (0, os.geteuid()):
        skt.close()
        raise Unreachable(
            f"{path} is served by uid {serverUid}, neither root nor you: not trusting it"
        )
    return skt


def messages(skt: socket.socket, deadline):
    """
    Yield each JSON line the server sends until it closes; raise TimeoutError
    at the deadline (a monotonic time, or a callable returning the latest one).
    """
    buffer = b""
    while True:
        remaining = (deadline() if callable(deadline) else deadline) - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        skt.settimeout(remaining)
        try:
            data = skt.recv(65536)
        except TimeoutError:
            raise
        except OSError:
            data = b""
        if not data:
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise Unreachable(
                        f"the control socket answered something that is not txflip's: {line[:80]!r}"
                    ) from None


def describe(message: dict) -> str:
    phase = message.get("phase")
    if phase == "started":
        return (
            f"child started: generation {message['childGeneration']} as PID "
            f"{message['childPid']} (parent: generation {message['generation']}, "
            f"PID {message['pid']})"
        )
    if phase == "ready":
        return f"ready after {message['ms']} ms: PID {message['childPid']}"
    if phase == "prepared":
        return (
            f"prepared after {message['ms']} ms: PID {message['childPid']} built its app; "
            "the old generation accepts nothing (connections wait), finishes what is in "
            "flight and stops its app"
        )
    if phase == "app-stopped":
        return (
            f"app stopped: generation {message['generation']} (PID {message['pid']}) "
            f"stopped its app after {message['ms']} ms; the new one starts its own"
        )
    if phase == "serving":
        paused = message.get("pauseMs")
        return (
            f"serving: generation {message['childGeneration']} (PID {message['childPid']}) "
            f"took over after {message['ms']} ms"
            + (f"; new connections waited at most {paused} ms (sequential)" if paused else "")
        )
    if phase == "draining":
        return (
            f"parent draining: generation {message['generation']} (PID {message['pid']}), "
            f"{message['connections']} connection(s) in flight"
        )
    if phase == "moved":
        return describeMoved(message)
    if phase == "done":
        return f"done: generation {message['childGeneration']} (PID {message['childPid']}) serves"
    if phase == "watching":
        return (
            f"watching: generation {message['childGeneration']} (PID {message['childPid']}) "
            f"is rolled back if {message['ratio']:g} of its responses are 5xx within "
            f"{message['seconds']:g}s (--rollback-on-5xx)"
        )
    if phase == "failed" and message.get("rolledBack"):
        return (
            f"failed: {message['reason']}; generation {message['generation']} "
            f"(PID {message['pid']}) serves again"
        )
    if phase == "failed" and message.get("refused"):
        return (
            f"failed: {message['reason']}; generation {message['generation']} "
            f"(PID {message['pid']}) keeps serving"
        )
    if phase == "failed":
        return (
            f"failed: generation {message['childGeneration']} (PID {message['childPid']}) "
            f"{message['reason']}; generation {message['generation']} (PID {message['pid']}) "
            "keeps serving"
        )
    return f"{phase}: {message.get('reason', '')}".rstrip(": ")


def describeMoved(message: dict) -> str:
    """The C{moved} phase: how many connections moved (of each kind), and why the others stay."""
    stayed = message.get("stayed") or {}
    kinds = message.get("movedKinds") or {}
    moved = f"{message.get('moved', 0)} keep-alive connection(s)"
    if set(kinds) - {"HTTP/1.x"}:
        byKind = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        moved = f"{message.get('moved', 0)} connection(s) ({byKind})"
    text = f"moved {moved} to generation {message.get('childGeneration')} in {message.get('ms')} ms"
    if message.get("failure"):
        text += f" (moving was given up: {message['failure']})"
    if message.get("waiting"):
        text += (
            f"; {message['waiting']} busy connection(s) move or close once their "
            "request is answered"
        )
    if message.get("arriving"):
        text += (
            f"; connections still arriving from generation {message.get('generation', 1) - 1} "
            f"move on to generation {message.get('childGeneration')} as they come"
        )
    if stayed:
        reasons = ", ".join(f"{count} {why}" for why, count in sorted(stayed.items()))
        text += (
            f"; {sum(stayed.values())} stay with generation {message.get('generation')}, "
            f"closed there as they finish: {reasons}"
        )
    return text


def reload(args: argparse.Namespace) -> int:
    path = controlPath(args)
    deadline = [time.monotonic() + args.timeout]
    skt = connect(path, args.timeout)
    lastPhase = None
    succeeded = False
    started: dict = {}
    try:
        skt.sendall(b"reload\n")
        for message in messages(skt, lambda: deadline[0]):
            lastPhase = message.get("phase")
            if lastPhase == "started":
                started = message
            print(json.dumps(message) if args.json else describe(message), flush=True)
            if lastPhase == "serving":
                succeeded = True
            if lastPhase == "watching":
                # --rollback-on-5xx: the outcome comes at the end of the window.
                succeeded = False
                deadline[0] = max(deadline[0], time.monotonic() + message["seconds"] + 30)
            if lastPhase == "done":
                return EXIT_OK
            if lastPhase in ("failed",):
                return EXIT_FAILED
            if lastPhase in ("refused", "error"):
                return EXIT_UNREACHABLE
    except TimeoutError:
        if succeeded:
            # The new release serves: that is the outcome; the old one drains on.
            print(
                f"done: the new generation serves (the old one still drains after "
                f"{args.timeout:g}s; txflip status shows the new one)",
                flush=True,
            )
            return EXIT_OK
        print(
            f"txflip reload: timed out after {args.timeout:g}s waiting for the outcome "
            f"(last phase: {lastPhase or 'none'}); the restart may still finish: "
            "check with txflip status",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    finally:
        skt.close()
    if succeeded:
        # The old generation went away before saying "done"; the new one serves.
        print("done: the new generation serves", flush=True)
        return EXIT_OK
    if started:
        # A program with its own reactor stops it for a sequential handover, and
        # this connection with it: the control socket says who serves now.
        return _outcomeAfterProgramStopped(path, started, deadline[0])
    print(
        f"txflip reload: the server closed the control connection without an outcome "
        f"(last phase: {lastPhase or 'none'}); check with txflip status",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _outcomeAfterProgramStopped(path: str, started: dict, deadline: float) -> int:
    """Ask the control socket until it answers for the new generation, or the old one again."""
    childPid, oldPid = started.get("childPid"), started.get("pid")
    while time.monotonic() < deadline:
        try:
            skt = connect(path, max(0.1, deadline - time.monotonic()))
            try:
                skt.sendall(b"status\n")
                status = next(messages(skt, deadline), {})
            finally:
                skt.close()
        except (OSError, Unreachable, TimeoutError, StopIteration):
            status = {}
        if status.get("state") == "serving" and status.get("pid") == childPid:
            print(
                f"serving: generation {status.get('generation')} (PID {childPid}) took over",
                flush=True,
            )
            return EXIT_OK
        if status.get("state") == "serving" and status.get("pid") == oldPid:
            print(
                f"failed: generation {started.get('childGeneration')} (PID {childPid}) did "
                f"not take over; generation {started.get('generation')} (PID {oldPid}) runs "
                "its program again and serves (its log says why)",
                flush=True,
            )
            return EXIT_FAILED
        time.sleep(0.1)
    print(
        "txflip reload: timed out waiting for the new generation to serve; check with "
        "txflip status",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT


def rollback(args: argparse.Namespace) -> int:
    path = controlPath(args)
    skt = connect(path, args.timeout)
    try:
        skt.sendall(b"rollback\n")
        for message in messages(skt, time.monotonic() + args.timeout):
            phase = message.get("phase")
            if args.json:
                print(json.dumps(message), flush=True)
            if phase == "rolled-back":
                if not args.json:
                    print(
                        f"rolled back: generation {message['generation']} (PID {message['pid']}) "
                        f"serves again; generation {message['drainingGeneration']} "
                        f"(PID {message['drainingPid']}) drains and exits",
                        flush=True,
                    )
                return EXIT_OK
            if not args.json:
                print(f"txflip rollback: {message.get('reason') or phase}", file=sys.stderr)
            return EXIT_FAILED if phase == "failed" else EXIT_UNREACHABLE
    except TimeoutError:
        print(f"txflip rollback: no answer within {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    finally:
        skt.close()
    print("txflip rollback: the server closed the connection without an answer", file=sys.stderr)
    return EXIT_UNREACHABLE


def formatStatus(status: dict) -> str:
    last = status.get("lastRestart")
    if not last:
        lastText = "none"
    elif last["outcome"] == "refused":
        lastText = f"refused at {last['at']}: {last['reason']}"
    else:
        ms = f" in {last['ms']} ms" if last.get("ms") is not None else ""
        # This process's own start: the lines above name its PID and generation.
        ours = last.get("pid") == status["pid"] and last.get("generation") == status["generation"]
        who = "" if ours else f"generation {last.get('generation')} (PID {last.get('pid')}) "
        lastText = f"{last['outcome']} at {last['at']}: {who}{last.get('reason')}{ms}"
    idle = status.get("idleConnections")
    lines = [
        f"pid:         {status['pid']}",
        f"generation:  {status['generation']}",
        f"state:       {status['state']}",
        f"uptime:      {status['uptimeSeconds']:g}s (since {status['startedAt']})",
        f"listeners:   {', '.join(status['listeners']) or 'none'}",
        f"connections: {status['connections']} in flight"
        + (f", {idle} idle (kept alive between requests)" if idle else ""),
        f"last restart: {lastText}",
    ]
    if status.get("waitingFor"):
        lines.append(f"waiting for: {', '.join(status['waitingFor'])}")
    if status.get("successorWaitingFor"):
        lines.append(f"the next generation waits for: {status['successorWaitingFor']}")
    if status.get("pause"):
        pause = status["pause"]
        lines.append(
            f"paused:      for the next generation, {pause['ms']} ms so far (at most "
            f"{pause['timeoutSeconds']:g}s); {pause['parked']} idle connection(s) parked; "
            + ("app stopped" if pause["appStopped"] else "finishing what is in flight")
        )
    if status.get("simpleMode"):
        lines.append(f"simple mode: {status['simpleMode']}")
    if status.get("workers"):
        lines.append(f"workers:     {len(status['workers'])} (this PID leads them)")
        lines.extend(formatWorker(worker) for worker in status["workers"])
    return "\n".join(lines)


def formatWorker(worker: dict) -> str:
    """One line per worker of a generation: PID, uptime, connections, requests, restarts."""
    head = f"  worker {worker['index']}: "
    if worker.get("pid") is None:
        waiting = worker.get("nextStartInSeconds")
        when = f", next start in {waiting:g}s" if waiting is not None else ""
        return (
            f"{head}{worker['state']}{when}; restarted {worker['restarts']} time(s), "
            f"last: {worker.get('lastExit') or '-'}"
        )

    def shown(key: str) -> str:
        value = worker.get(key)
        return "-" if value is None else str(value)

    line = (
        f"{head}PID {worker['pid']}, {worker['state']}, up {worker['uptimeSeconds']:g}s, "
        f"{shown('connections')} connection(s), {shown('requests')} request(s)"
    )
    if worker.get("held"):
        line += "; held: others take new connections until it holds no more than they do"
    if worker.get("restarts"):
        line += f"; restarted {worker['restarts']} time(s), last: {worker.get('lastExit')}"
    return line


def status(args: argparse.Namespace) -> int:
    path = controlPath(args)
    skt = connect(path, args.timeout)
    try:
        skt.sendall(b"status\n")
        for message in messages(skt, time.monotonic() + args.timeout):
            if message.get("phase") == "status":
                message.pop("phase")
                print(json.dumps(message) if args.json else formatStatus(message))
                return EXIT_OK
            print(f"txflip status: {describe(message)}", file=sys.stderr)
            return EXIT_UNREACHABLE
    except TimeoutError:
        print(f"txflip status: no answer within {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    finally:
        skt.close()
    print("txflip status: the server closed the connection without an answer", file=sys.stderr)
    return EXIT_UNREACHABLE


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="txflip", description="Control a running twistd flip server."
    )
    top.add_argument("--version", action="version", version=f"txflip {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    for name, helpText, defaultTimeout in (
        ("reload", "restart without downtime and report the outcome", DEFAULT_TIMEOUT),
        ("status", "print PID, generation, listeners and the last restart", 10.0),
        (
            "rollback",
            "give the traffic back to the previous generation (within --rollback-window)",
            10.0,
        ),
    ):
        sub = commands.add_parser(name, help=helpText)
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--pid-file", "-p", help="the server's PID file (socket: FILE.control)")
        where.add_argument("--control", "-c", help="the server's control socket")
        sub.add_argument(
            "--timeout",
            type=float,
            default=defaultTimeout,
            help=f"seconds to wait for the outcome (default {defaultTimeout:g})",
        )
        sub.add_argument("--json", action="store_true", help="print the server's JSON lines")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.timeout > 0:
        print("txflip: --timeout must be a number of seconds above 0", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        return {"reload": reload, "status": status, "rollback": rollback}[args.command](args)
    except Unreachable as e:
        print(f"txflip {args.command}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
