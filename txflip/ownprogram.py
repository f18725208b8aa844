"""
C{--handover sequential} for a program that runs its own reactor
(C{python -m txflip run}).

Such a program's start-up is its own code: Synapse opens its database and
reads its highest ids in C{main()}, before C{reactor.run()}. So a new
generation only I{imports} the program (for C{-m MODULE}: the module, as a
plain module, and so everything it imports; its C{__main__} code does not
run), tells its predecessor it is prepared, and waits, before any reactor
runs, until the predecessor's program has stopped. Then the program runs as
usual.

The old generation, told its successor is prepared, pauses as any generation
does (L{txflip.core.pause}: it accepts nothing, finishes what is in flight and
parks its idle keep-alive connections), then stops its program the way
SIGTERM would: the reactor stops and the program's own shutdown runs. Its
listening sockets, the parked connections and the channels to its successor
are taken out of the reactor first, so that the shutdown closes none of them.
Once the program has returned, this module finishes the handover without a
reactor: it says C{start}, answers the successor's C{ready} with C{go}, and
once the successor serves it moves the parked connections to it and exits.

If the successor fails after the old program stopped, the old generation
I{runs its program again}: it executes its own command line once more
(C{execv}, same PID, so the PID file still names it), handing itself its
listening sockets as systemd's socket activation does, so that they are never
closed. The parked connections are closed then (a client reconnects). With an
in-place deploy, the program run again is the code now on disk.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import select
import signal
import socket
import sys
import time

from txflip.core.channel import writeLine
from txflip.core.generation import ENV_AGAIN
from txflip.core.log import log
from txflip.core.transfer import decode, encode

LINE_LIMIT = 4096


def preImport(generation, module: str) -> None:
    """Import C{module} as a plain module: what it imports, without its C{__main__} code."""
    try:
        importlib.import_module(module)
    except Exception as e:
        generation.failStart(f"cannot import {module}: {type(e).__name__}: {e}")


def _readLine(fd: int, deadline: float) -> str | None:
    """One line from C{fd}, read byte by byte so nothing past it is taken; L{None} at EOF."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            raise TimeoutError
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        data += chunk
        if len(data) > LINE_LIMIT:
            break
    return data.decode("utf-8", "replace").strip()


def waitForTurn(generation, timeout: float) -> None:
    """
    A new generation of a sequential handover: say C{prepared} and wait, before
    any reactor runs, until the predecessor's program has stopped.
    """
    inherited = generation.inherited
    fd = inherited.controlFd
    writeLine(fd, "prepared")
    log.info("the program is imported; waiting for the previous generation to stop its own")
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = _readLine(fd, deadline)
        except TimeoutError:
            generation.failStart(
                f"the previous generation did not stop its program within {timeout:g}s"
            )
            return
        if line == "start":
            break
        if line is None or line == "abort":
            if line is None and os.getppid() != inherited.parentPid:
                break  # the predecessor is gone: its program has stopped for good
            generation.startup.abandoned("it gave up before its program stopped")
            os._exit(0)
    generation.startup.takeTurnNow()


class ProgramStop:
    """
    The old generation's side: stop the program for the successor, then finish
    the handover without a reactor (see the module's docstring).
    """

    def __init__(self, reactor, generation) -> None:
        self._reactor = reactor
        self._generation = generation
        self.handingOver = False
        self._channelFd: int | None = None
        self._transfer: socket.socket | None = None
        self._parked: list[tuple[int, str, str, bytes]] = []
        self._childPid: int | None = None

    def stop(self):
        """The pause is over: take the handover out of the reactor and stop the program."""
        from twisted.internet.defer import Deferred

        from txflip.core.drain import lowestTransport
        from txflip.core.movable import listenerKeyOf, verdict

        generation = self._generation
        attempt = generation.restarts.attempt
        pause = generation.restarts.pause
        self.handingOver = True
        generation.restarts.programStopping = True
        self._childPid = attempt.childPid
        for protocol in pause.parkedConnections():
            transport = lowestTransport(protocol)
            key = listenerKeyOf(transport, generation.registry)
            seen = verdict(protocol)
            if key is None or seen.kind != "movable":
                continue
            self._detach(transport)
            family = socket.AddressFamily(transport.socket.family).name
            self._parked.append((os.dup(transport.fileno()), key, family, seen.buffered))
        for listener in generation.registry.active():
            # The control socket still accepts: the reactor's shutdown would close
            # it and remove its path, which the successor (or this program run
            # again) serves on.
            self._detach(listener.port)
        channel, self._transfer = attempt.tell.takeChannels()
        self._detach(channel)
        self._channelFd = os.dup(channel.fileno())
        log.info(
            "generation {next} (PID {child}) built its app; stopping the program for it; "
            "{count} idle connection(s) parked",
            next=generation.number + 1,
            child=self._childPid,
            count=len(self._parked),
        )
        self._reactor.stop()
        return Deferred()  # the rest happens once the program has returned

    def _detach(self, transport) -> None:
        """Take C{transport} out of the reactor, so that its shutdown closes nothing of it."""
        self._reactor.removeReader(transport)
        self._reactor.removeWriter(transport)

    # After the program returned: no reactor from here on.

    def finish(self) -> None:
        """Finish the handover; never returns (exits, or runs the program again)."""
        generation = self._generation
        fd = self._channelFd
        writeLine(fd, "start")
        deadline = time.monotonic() + generation.readyTimeout
        reason = None
        while reason is None:
            try:
                line = _readLine(fd, deadline)
            except TimeoutError:
                reason = f"was not serving within the ready timeout of {generation.readyTimeout:g}s"
                break
            if line is None:
                reason = "closed its control channel before serving"
            elif line.startswith("ready"):
                writeLine(fd, "go")
            elif line == "serving":
                moved = self._moveParked()
                log.info(
                    "generation {next} (PID {child}) serves; new connections waited at most "
                    "{ms} ms; {moved} connection(s) moved; generation exits (handed over)",
                    next=generation.number + 1,
                    child=self._childPid,
                    ms=int(generation.restarts.pause.elapsed() * 1000),
                    moved=moved,
                )
                _flushProgramLogs()
                os._exit(0)
            elif line.startswith("failed"):
                reason = line.partition(" ")[2] or "it failed"
        self._runAgain(reason)

    def _moveParked(self) -> int:
        """Hand the parked connections over the transfer channel, one at a time."""
        moved = 0
        skt = self._transfer
        if skt is None:
            return 0
        skt.setblocking(True)
        skt.settimeout(5.0)
        for offerId, (fd, key, family, buffered) in enumerate(self._parked, 1):
            try:
                header = {"op": "offer", "id": offerId, "key": key, "family": family}
                socket.send_fds(skt, [encode(header, buffered)], [fd])
                packet, fds, _, _ = socket.recv_fds(skt, 128 * 1024, 1)
                for received in fds:
                    os.close(received)
                answer, _ = decode(packet)
                if answer.get("op") == "took":
                    skt.sendall(encode({"op": "yours", "id": offerId}))
                    moved += 1
            except (OSError, ValueError) as e:
                log.warn("moving a parked connection failed: {error}", error=e)
            finally:
                os.close(fd)
        return moved

    def _runAgain(self, reason: str) -> None:
        """The successor failed after this program stopped: run the program again."""
        generation = self._generation
        log.error(
            "generation {next} (PID {child}) failed: {reason}; running generation {gen}'s "
            "program again on the same sockets",
            next=generation.number + 1,
            child=self._childPid,
            reason=reason,
            gen=generation.number,
        )
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self._childPid, signum)
            except OSError:
                break
            time.sleep(0.5 if signum == signal.SIGTERM else 0)
        listening = generation.registry.listeningDescriptors()
        # Descriptors 3, 4, ... for the program run again, as systemd passes them;
        # copied out of the way first, so that no copy overwrites another.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in listening]
        for index, fd in enumerate(high):
            os.dup2(fd, 3 + index, inheritable=True)
        env = dict(os.environ)
        env.update(
            LISTEN_PID=str(os.getpid()),
            LISTEN_FDS=str(len(high)),
            LISTEN_FDNAMES=":".join(f"again{index}" for index in range(len(high))),
        )
        env.pop("TXFLIP_HANDOFF", None)
        env[ENV_AGAIN] = json.dumps({"generation": generation.number})
        _flushProgramLogs()
        os.execve(generation.argv[0], generation.argv, env)


def _flushProgramLogs() -> None:
    """
    Write out what the program's log handlers still buffer: C{os._exit} and
    C{execve} skip the C{atexit} hook (C{logging.shutdown}) that would.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
