"""
ACME edge cases found in review: a crash while making the account key, a CA
that stalls in the middle of a reply, and challenge tokens that are not file
names.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import threading

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from txflip.acme.challenges import HTTP01
from txflip.acme.client import AcmeClient, AcmeError
from txflip.acme.store import ACCOUNT_KEY, AcmeStore


class AccountKeyTests(TestCase):
    def test_emptyKeyLeftByACrashIsReplaced(self):
        store = AcmeStore(tempfile.mkdtemp(prefix="txflip-acme-store-"))
        path = os.path.join(store.path, ACCOUNT_KEY)
        open(path, "wb").close()
        key = store.accountKey()
        self.assertEqual(store.accountKey().thumbprint(), key.thumbprint())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(
            [n for n in os.listdir(store.path) if n.startswith(ACCOUNT_KEY)], [ACCOUNT_KEY]
        )


class ChallengeTokenTests(TestCase):
    def test_tokensThatAreNotFileNamesFindNothing(self):
        store = AcmeStore(tempfile.mkdtemp(prefix="txflip-acme-store-"))
        store.putChallenge(HTTP01, "good-token_1", "answer")
        self.assertEqual(store.getChallenge(HTTP01, "good-token_1"), "answer")
        for token in ("\x00", "../good-token_1", "a/b", ""):
            self.assertIsNone(store.getChallenge(HTTP01, token), repr(token))


class StalledReplyTests(TestCase):
    timeout = 60

    def test_caStallingMidBodyTimesOut(self):
        """
        Headers and one byte of the body, then silence: the request ends with
        an error after the request timeout (a hang fails at trial's timeout).
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        held = []

        def serve():
            listener.settimeout(30)
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        def cleanup():
            for conn in held:
                conn.close()
            listener.close()
            thread.join(30)

        self.addCleanup(cleanup)
        store = AcmeStore(tempfile.mkdtemp(prefix="txflip-acme-store-"))
        client = AcmeClient(
            reactor, f"http://127.0.0.1:{port}/dir", store.accountKey(), requestTimeout=1
        )
        d = ensureDeferred(client._request("GET", f"http://127.0.0.1:{port}/dir"))

        def failed(failure):
            failure.trap(AcmeError)
            self.assertIn("cannot reach the CA", str(failure.value))

        d.addCallbacks(lambda _: self.fail("a stalled reply should not succeed"), failed)
        return d
