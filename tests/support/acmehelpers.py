"""
A real ACME server for the tests: Debian's pebble, with the test CA
(L{tests.support.tlshelpers.TestCA}) for its HTTPS and a tiny DNS server of
our own that answers A 127.0.0.1 (and no AAAA) for every name, so pebble never
asks the machine's resolver.

The DNS server is tests/support/acmedns.py, run as a script by path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request

from cryptography import x509

from tests.support.procs import Flip, freePort, pidAlive, waitFor
from tests.support.tlshelpers import TestCA

PEBBLE = "/usr/bin/pebble"
NAMES = ("a.test", "b.test")
ISSUED = "ACME: now serving the newly issued certificate"
DNS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acmedns.py")


def makeReadOnly(testCase, path: str) -> None:
    """
    Make the directory C{path} unwritable for this process, until the test ends.

    Root may write any directory whatever its mode, so as root the directory is
    made immutable (chattr +i) instead; where that is not possible the test is
    skipped.
    """
    from twisted.trial.unittest import SkipTest

    if os.geteuid() != 0:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o500)
        testCase.addCleanup(os.chmod, path, mode)
        return
    try:
        done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
    except FileNotFoundError:
        raise SkipTest("no chattr here: cannot make a directory unwritable for root") from None
    if done.returncode != 0 or os.access(path, os.W_OK):
        raise SkipTest(f"cannot make {path} unwritable for root: {done.stderr.strip()}")
    testCase.addCleanup(subprocess.run, ["chattr", "-i", path], capture_output=True)


class _Process:
    """A helper process, stopped by PID at cleanup."""

    def __init__(self, testCase) -> None:
        self.process: subprocess.Popen | None = None
        testCase.addCleanup(self.stop)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.process = None


class DNSServer(_Process):
    """Our DNS server on 127.0.0.1: every name is 127.0.0.1, and there is no AAAA."""

    def __init__(self, testCase, workdir: str) -> None:
        super().__init__(testCase)
        self.portFile = os.path.join(workdir, "dns.port")
        self.process = subprocess.Popen(
            [sys.executable, DNS_SCRIPT, self.portFile],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, "dns.log"), "ab"),
        )
        self.port = int(
            waitFor(lambda: self._readPort(), "the test DNS server to listen", deadline=30)
        )

    def _readPort(self):
        if self.process.poll() is not None:
            raise AssertionError("the test DNS server exited")
        try:
            with open(self.portFile) as f:
                text = f.read().strip()
        except OSError:
            return None
        return text if text.isdigit() else None


class Pebble(_Process):
    """
    One pebble, validating HTTP-01 on C{httpPort} and TLS-ALPN-01 on C{tlsPort}
    of 127.0.0.1 (where the test's flip listens).
    """

    def __init__(
        self,
        testCase,
        httpPort: int,
        tlsPort: int,
        env: dict | None = None,
        workdir: str | None = None,
        validitySeconds: int | None = None,
    ) -> None:
        super().__init__(testCase)
        self.workdir = workdir or tempfile.mkdtemp(prefix="txflip-pebble-")
        ca = TestCA(self.workdir)
        self.caBundle = ca.caFile
        certPath = os.path.join(self.workdir, "pebble-cert.pem")
        keyPath = os.path.join(self.workdir, "pebble-key.pem")
        ca.serverFiles(certPath, keyPath, ["localhost", "127.0.0.1"])
        self.dns = DNSServer(testCase, self.workdir)
        self.port = freePort()
        self.managementPort = freePort()
        self.configPath = os.path.join(self.workdir, "pebble-config.json")
        with open(self.configPath, "w") as f:
            json.dump(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.managementPort}",
                        "certificate": certPath,
                        "privateKey": keyPath,
                        "httpPort": httpPort,
                        "tlsPort": tlsPort,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                        **(
                            {"certificateValidityPeriod": validitySeconds}
                            if validitySeconds
                            else {}
                        ),
                    }
                },
                f,
            )
        self.env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
            **(env or {}),
        }
        self.logPath = os.path.join(self.workdir, "pebble.log")
        self.directory = f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        self.process = subprocess.Popen(
            [
                PEBBLE,
                f"-config={self.configPath}",
                f"-dnsserver=127.0.0.1:{self.dns.port}",
                "-strict=false",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.logPath, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        waitFor(self._answers, "pebble to serve its directory", deadline=30)
        return self

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.caBundle)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"pebble exited:\n{self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(self.directory, context=self._context(), timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def root(self) -> bytes:
        """The issuing root of this run of pebble (it changes at every start)."""
        url = f"https://127.0.0.1:{self.managementPort}/roots/0"
        with urllib.request.urlopen(url, context=self._context(), timeout=10) as r:
            return r.read()

    def log(self) -> str:
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def kill(self) -> None:
        pid = self.pid
        self.stop()
        if pid is not None:
            waitFor(lambda: not pidAlive(pid), "pebble to exit", deadline=30)


class HoldingProxy:
    """
    A TCP proxy on 127.0.0.1 that holds every connection until L{release},
    then forwards it to C{targetPort}: it stretches a CA's validation request
    over a moment the test chooses.
    """

    def __init__(self, testCase, targetPort: int) -> None:
        self.targetPort = targetPort
        self.released = threading.Event()
        self.held = 0
        self._closing = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        testCase.addCleanup(self.close)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self._closing.set()
        self.released.set()
        self._thread.join(10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held += 1
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        with client:
            if not self.released.wait(60) or self._closing.is_set():
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.targetPort), timeout=30)
            except OSError:
                return
            with upstream:
                pump = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                pump.start()
                _pipe(client, upstream)
                pump.join(30)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(30)
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def fetchTLS(
    port: int, name: str, cafile: str | None = None, path: str = "/", timeout: float = 10
) -> tuple[int, bytes, x509.Certificate]:
    """
    GET C{path} over TLS from 127.0.0.1:C{port} with SNI C{name}.

    With C{cafile}, the chain and the name are verified against it (an
    L{ssl.SSLCertVerificationError} if they do not).

    @return: status, body, and the certificate the server presented.
    """
    if cafile is not None:
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                chunks.append(data)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    status = int(match.group(1)) if match else 0
    return status, body, x509.load_der_x509_certificate(der)


def servedSerial(port: int, name: str) -> int | None:
    """The serial of the certificate served for C{name}, or None if nothing answers."""
    try:
        return fetchTLS(port, name)[2].serial_number
    except (OSError, ssl.SSLError):
        return None


class AcmeTestMixin:
    """One pebble and one flip serving the demo app over ACME-issued HTTPS."""

    def setUpAcme(
        self, pebbleEnv=None, startPebble=True, pebbleHttpPort=None, validitySeconds=None
    ):
        self.httpPort = getattr(self, "httpPort", None) or freePort()
        self.tlsPort = freePort()
        self.pebble = Pebble(
            self,
            pebbleHttpPort or self.httpPort,
            self.tlsPort,
            env=pebbleEnv,
            validitySeconds=validitySeconds,
        )
        if startPebble:
            self.pebble.start()
        self.store = tempfile.mkdtemp(prefix="txflip-acme-store-")

    def flip(self, challenge="http-01", domains="a.test,b.test", extra=(), plain="--listen"):
        flip = Flip(
            self,
            [
                plain,
                f"tcp:{self.httpPort}:interface=127.0.0.1",
                "--acme-listen",
                f"tcp:{self.tlsPort}:interface=127.0.0.1",
                "--acme-domain",
                domains,
                "--acme-dir",
                self.store,
                "--acme-directory",
                self.pebble.directory,
                "--acme-ca-bundle",
                self.pebble.caBundle,
                "--acme-challenge",
                challenge,
                "--acme-retry-min",
                "1",
                *extra,
            ],
        )
        return flip

    def rootFile(self) -> str:
        path = os.path.join(self.pebble.workdir, "pebble-root.pem")
        with open(path, "wb") as f:
            f.write(self.pebble.root())
        return path

    def assertVerifiedFor(self, names, root: str) -> int:
        """Every name is served a certificate that verifies against C{root}; return its serial."""
        serials = set()
        for name in names:
            status, body, cert = fetchTLS(self.tlsPort, name, cafile=root)
            self.assertEqual(status, 200, body[:200])
            serials.add(cert.serial_number)
        self.assertEqual(len(serials), 1)
        return serials.pop()

    def orders(self) -> int:
        return self.pebble.log().count("POST /order-plz")
