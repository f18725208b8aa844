"""
Helpers for the operations tests: an app module written into a test's own
directory (so a test can break and fix the "next release"), the C{txflip}
command, a captured sd_notify socket, and a steady HTTP load.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

APP_TEMPLATE = '''\
"""A test app, release {release}."""
import json
import os
import subprocess

from twisted.web.resource import Resource

RELEASE = {release!r}
{broken}

class App(Resource):
    isLeaf = True

    def render_GET(self, request):
        body = {{"pid": os.getpid(), "release": RELEASE}}
        if request.path == b"/env":
            out = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
            body["childEnv"] = sorted(
                line.split("=", 1)[0] for line in out.splitlines() if "=" in line
            )
            body["ownEnv"] = sorted(os.environ)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()


app = App()
'''


def writeApp(workdir: str, release: int, broken: str | None = None, name: str = "opsapp") -> str:
    """Write release C{release} of the app as C{workdir/name.py}; C{broken} raises at import."""
    raising = f"raise RuntimeError({broken!r})" if broken else ""
    path = os.path.join(workdir, name + ".py")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(APP_TEMPLATE.format(release=release, broken=raising))
    os.replace(tmp, path)
    return f"{name}.app"


def appEnv(workdir: str) -> dict[str, str]:
    """The environment that lets flip import the app from C{workdir}, never from stale bytecode."""
    return {
        "PYTHONPATH": os.pathsep.join([workdir, os.environ.get("PYTHONPATH", "")]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def shortTempDir(testCase) -> str:
    """A directory short enough for unix socket paths (108 bytes), removed afterwards."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="txflip-ops-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def txflip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the C{txflip} command (as the console script would) and capture its output."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from txflip.control.client import main; sys.exit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class NotifyCapture:
    """
    A real C{AF_UNIX} datagram socket standing in for systemd's notification
    socket. C{SO_PASSCRED} makes the kernel attach each sender's PID, as it
    does for systemd.
    """

    def __init__(self, testCase, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.bind(address)
        self.messages: list[tuple[int, dict[str, str], list[str]]] = []
        testCase.addCleanup(self.socket.close)

    def receive(self, deadline: float = 0.0) -> None:
        """Take every datagram waiting, waiting up to C{deadline} seconds for the first."""
        self.socket.settimeout(deadline if deadline > 0 else 0.001)
        credSize = struct.calcsize("3i")
        while True:
            try:
                data, ancillary, _, _ = self.socket.recvmsg(4096, socket.CMSG_SPACE(credSize))
            except (TimeoutError, BlockingIOError):
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:credSize])[0]
            lines = data.decode().splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            self.messages.append((pid, fields, lines))
            self.socket.settimeout(0.001)

    def waitFor(self, predicate, what: str, deadline: float = 60.0):
        end = time.monotonic() + deadline
        while True:
            found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            if time.monotonic() > end:
                raise AssertionError(
                    f"gave up after {deadline}s waiting for {what}: {self.messages}"
                )
            self.receive(0.2)
