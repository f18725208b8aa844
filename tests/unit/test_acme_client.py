"""
The ACME client's pieces: Retry-After, problem documents, and a CA that
stalls in the middle of a reply (over a real socket).
"""

from __future__ import annotations

import socket
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from acme import messages
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from txflip.acme.client import AcmeClient, AcmeError, retryAfter
from txflip.acme.store import AcmeStore


class RetryAfterTests(TestCase):
    def test_seconds(self):
        self.assertEqual(retryAfter(Headers({b"Retry-After": [b"7"]}), 1.0), 7.0)

    def test_httpDate(self):
        now = datetime(2030, 1, 1, tzinfo=UTC)
        when = format_datetime(now + timedelta(seconds=30), usegmt=True).encode()
        self.assertEqual(retryAfter(Headers({b"Retry-After": [when]}), 1.0, now), 30.0)

    def test_missingOrGarbage(self):
        self.assertEqual(retryAfter(Headers(), 2.5), 2.5)
        self.assertEqual(retryAfter(Headers({b"Retry-After": [b"soon"]}), 2.5), 2.5)


class ProblemTests(TestCase):
    def test_problemDocumentInMessage(self):
        problem = messages.Error.from_json(
            {
                "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                "detail": "Error creating new order",
                "subproblems": [
                    {
                        "type": "urn:ietf:params:acme:error:malformed",
                        "detail": "Invalid underscore in DNS name",
                        "identifier": {"type": "dns", "value": "_bad.example"},
                    }
                ],
            }
        )
        error = AcmeError("POST https://ca/new-order failed", problem, 400, "https://ca/new-order")
        text = str(error)
        self.assertEqual(error.code, "rejectedIdentifier")
        self.assertIn(
            "urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order", text
        )
        self.assertIn("_bad.example: urn:ietf:params:acme:error:malformed", text)
        self.assertIn("HTTP 400 from https://ca/new-order", text)
        self.assertNotIn("\n", text)


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
        d = ensureDeferred(client.directory())

        def failed(failure):
            failure.trap(AcmeError)
            self.assertIn("cannot reach the CA", str(failure.value))

        d.addCallbacks(lambda _: self.fail("a stalled reply should not succeed"), failed)
        return d
