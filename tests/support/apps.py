"""
Small apps written into a test's directory, so a test can deploy a new (or
broken) release by rewriting a file and sending SIGHUP.

L{writeApp} writes any of the templates here; L{writeJSONApp} writes
L{JSON_APP}, which answers with its PID and release as JSON and, at C{/env},
with the environment it and the processes it starts see.
"""

from __future__ import annotations

import os
import tempfile
import textwrap

from tests.support.procs import Flip, freePort

GOOD_RESOURCE = """
import os
from twisted.web.resource import Resource

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"release %(release)s pid " + str(os.getpid()).encode()

resource = Hello()
"""

RAISES_AT_IMPORT = """
raise RuntimeError("release %(release)s is broken on purpose")
"""

EXITS_AT_ONCE = """
import os
os._exit(3)
"""

NEVER_READY = """
import time
time.sleep(3600)
"""

SERVICE_THAT_LISTENS = """
import os
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b'{"pid": ' + str(os.getpid()).encode() + b'}'

def makeService():
    top = service.MultiService()
    strports.service("tcp:%(port)d:interface=127.0.0.1", Site(Hello())).setServiceParent(top)
    return top
"""

OWNS_SIGHUP = """
import json
import os
import signal
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site

reloads = []

class Status(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return json.dumps({"pid": os.getpid(), "reloads": len(reloads)}).encode()

class ReloadsOnSighup(service.MultiService):
    # As Buildbot's master does: a SIGHUP handler of its own, installed as it starts.
    def startService(self):
        signal.signal(signal.SIGHUP, lambda signum, frame: reloads.append(signum))
        return super().startService()

def makeService():
    top = ReloadsOnSighup()
    strports.service("tcp:%(port)d:interface=127.0.0.1", Site(Status())).setServiceParent(top)
    return top
"""

ECHO_FACTORY = """
from twisted.internet.protocol import Factory, Protocol

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

factory = Factory.forProtocol(Echo)
"""


def writeApp(directory: str, module: str, template: str, **values) -> None:
    """Write C{module}.py into C{directory}, replacing any earlier release atomically."""
    path = os.path.join(directory, module + ".py")
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(textwrap.dedent(template % values))
    os.rename(temporary, path)


def appEnv(directory: str) -> dict[str, str]:
    """Environment for a flip whose --app lives in C{directory}."""
    paths = [directory, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1"}


STOPS_ITSELF = """
import os
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        return b"release %(release)s pid " + str(os.getpid()).encode()

resource = Hello()
# A release that gives up at start ("no database") and takes a while to shut down.
reactor.callWhenRunning(reactor.stop)
reactor.addSystemEventTrigger("before", "shutdown", lambda: deferLater(reactor, 2, lambda: None))
"""

LISTENS_ON_NOTHING = """
from twisted.application import service

def makeService():
    return service.MultiService()
"""


JSON_APP = '''
"""A test app, release %(release)s."""
import json
import os
import subprocess

from twisted.web.resource import Resource

RELEASE = %(release)r
%(broken)s

class App(Resource):
    isLeaf = True

    def render_GET(self, request):
        body = {"pid": os.getpid(), "release": RELEASE}
        if request.path == b"/env":
            out = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
            body["childEnv"] = sorted(
                line.split("=", 1)[0] for line in out.splitlines() if "=" in line
            )
            body["ownEnv"] = sorted(os.environ)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return json.dumps(body).encode()


app = App()
'''


def writeJSONApp(directory: str, release: int, broken: str | None = None) -> str:
    """
    Write release C{release} of L{JSON_APP} as C{directory/jsonapp.py}; with
    C{broken}, it raises that message at import. Return the C{--app} name.
    """
    raising = f"raise RuntimeError({broken!r})" if broken else ""
    writeApp(directory, "jsonapp", JSON_APP, release=release, broken=raising)
    return "jsonapp.app"


def releaseFlip(testCase, *extra: str) -> tuple[Flip, int, str]:
    """A flip, not started, serving release 1 of L{GOOD_RESOURCE}; its port and directory."""
    workdir = tempfile.mkdtemp(prefix="txflip-test-")
    writeApp(workdir, "myrelease", GOOD_RESOURCE, release="1")
    port = freePort()
    flip = Flip(
        testCase,
        ["--app", "myrelease.resource", "--listen", f"tcp:{port}:interface=127.0.0.1", *extra],
        workdir=workdir,
        env=appEnv(workdir),
    )
    return flip, port, workdir


SERVED_BY_RELEASE = """
import os

from twisted.internet import reactor
from twisted.web.resource import Resource

import txflip


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"release %(release)s"


resource = Hello()
"""
"""The start of a release template: a Resource that names its PID and release."""


HELD_RESOURCE = """
import os

from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


class Held(Resource):
    '''
    C{/held?key=K} is answered only once the file C{release-K} exists in the
    working directory; each such request adds a line to C{held-K} when it
    arrives, so a test knows what is in flight. Anything else is answered at once.
    '''

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.waiting = []
        self.poll = LoopingCall(self.answerReleased)

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        body = b'{"pid": ' + str(os.getpid()).encode() + b'}'
        if request.path != b"/held":
            return body
        key = request.args[b"key"][0].decode()
        with open("held-" + key, "a") as f:
            f.write(request.uri.decode() + "\\n")
        self.waiting.append((key, request, body))
        if not self.poll.running:
            self.poll.start(0.02)
        return NOT_DONE_YET

    def answerReleased(self):
        for item in list(self.waiting):
            key, request, body = item
            if os.path.exists("release-" + key):
                self.waiting.remove(item)
                request.write(body)
                request.finish()
        if not self.waiting:
            self.poll.stop()


resource = Held()
"""
"""Requests held until the test releases them, by a file: streams in flight on demand."""
HOLDS_UNTIL_RELEASED = """
import os

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

log = Logger()


class App(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        request.setHeader(b"content-length", b"2")
        if request.path != b"/hold":
            return b"ok"
        log.info("holding a request (PID {pid})", pid=os.getpid())

        def answerOnceReleased():
            if os.path.exists("released"):
                poll.stop()
                request.write(b"ok")
                request.finish()

        poll = LoopingCall(answerOnceReleased)
        poll.start(0.02)
        return NOT_DONE_YET


app = App()
"""
"""
An app (C{app}) that answers at once, except C{/hold}: that request waits
until a file named C{released} appears in the working directory, so a test
decides when a request in flight ends, whatever the machine's load.
"""
