"""
Long-lived connections move to the next generation at a restart, as a user
of the app sees it: real processes, SIGHUP, real clients through a proxy that
adds 20 ms each way, and not one client disconnected.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from twisted.trial.unittest import TestCase

from tests.integration.test_own_reactor_programs import Program
from tests.support.chatclients import ChatClient
from tests.support.delayproxy import DelayProxy
from tests.support.procs import freePort, pidAlive, waitFor

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "docs",
    "examples",
)


class ChatExampleTests(TestCase):
    def test_chatClientsStayThroughRestarts(self) -> None:
        """
        docs/examples/movable_chat.py, as docs/apps.rst shows it: 8 clients
        talking through 3 restarts are never disconnected, keep their
        nicknames, and have every line said back once, in order, by at least
        3 PIDs each.
        """
        port = freePort()
        example = os.path.join(EXAMPLES, "movable_chat.py")
        program = Program(self, [sys.executable, example, str(port), "{pidFile}"])
        first = program.start(waitReady=False)
        waitFor(lambda: program.pid() == first, "the example's PID file")
        stop = threading.Event()
        with DelayProxy(("127.0.0.1", port), delay=0.02) as proxy:
            clients = [ChatClient(proxy.address, f"user{i}", stop) for i in range(8)]
            for client in clients:
                client.start()
            pids = [first]
            try:
                for _ in range(3):
                    before = [len(c.pids) for c in clients]
                    waitFor(
                        lambda before=before: all(
                            len(c.pids) > n + 2 or c.failures
                            for c, n in zip(clients, before, strict=True)
                        ),
                        "every client answered a few times",
                    )
                    os.kill(pids[-1], signal.SIGHUP)
                    pids.append(
                        waitFor(
                            lambda: (p := program.pid()) not in pids and p, "the next generation"
                        )
                    )
                    waitFor(lambda: not pidAlive(pids[-2]), "the previous generation to exit")
                waitFor(
                    lambda: all(c.pids[-1] == pids[-1] or c.failures for c in clients),
                    "every client answered by the last generation",
                )
            finally:
                stop.set()
                for client in clients:
                    client.join(timeout=30)
        self.assertEqual([f for c in clients for f in c.failures], [])
        for client in clients:
            self.assertGreaterEqual(len(set(client.pids)), 3, client.pids)
            self.assertLessEqual(set(client.pids), set(pids))
        self.assertEqual(len(set(pids)), 4)
        os.kill(pids[-1], signal.SIGTERM)
        waitFor(lambda: not pidAlive(pids[-1]), "the example to exit after SIGTERM")
