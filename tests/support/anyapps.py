"""
Apps of every kind flip serves, written as their users write them: Flask,
Klein, a .tac file, Autobahn WebSocket servers, a twistd plugin dropin, a DNS
zone for twisted.names. Each answers with the PID that served it.
"""

from __future__ import annotations

import os

from tests.support.apps import writeApp

FLASK = """
import os, time
from flask import Flask

app = Flask(__name__)

@app.route("/")
def index():
    return {"pid": os.getpid(), "release": "%(release)s"}

@app.route("/slow")
def slow():
    # A request that runs in its worker thread until the test opens the gate.
    open(os.environ["SLOW_MARK"], "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["SLOW_GATE"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid(), "slow": True}

@app.after_request
def servedBy(response):
    response.headers["X-Served-By"] = str(os.getpid())
    return response
"""

KLEIN = """
import json, os
from klein import Klein

app = Klein()

@app.route("/")
def index(request):
    request.setHeader(b"x-served-by", str(os.getpid()).encode())
    return json.dumps({"pid": os.getpid(), "release": "%(release)s"})
"""

TAC = """
import os
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b'{"pid": ' + str(os.getpid()).encode() + b'}'

application = service.Application("hello")
strports.service("tcp:%(port)d:interface=127.0.0.1", Site(Hello())).setServiceParent(application)
"""

TAC_WITHOUT_APPLICATION = """
from twisted.application import service
app = service.Application("misnamed")
"""

WEBSOCKET = """
import os
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site

class Echo(WebSocketServerProtocol):
    def onOpen(self):
        self.sendMessage(("pid %%d" %% os.getpid()).encode())
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)

factory = WebSocketServerFactory()
factory.protocol = Echo

root = Resource()
root.putChild(b"ws", WebSocketResource(factory))
site = Site(root)
"""

PLUGIN_DROPIN = """
from twisted.application.service import ServiceMaker

hello = ServiceMaker(
    "Hello", "hello_plugin_impl", "A third-party test plugin: says hello with its PID.", "hello"
)
"""

PLUGIN_IMPL = """
import os
from twisted.application import strports
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

class Options(usage.Options):
    optParameters = [["port", None, None, "Where to listen (an endpoint)."]]

class Hello(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return b"hello from " + str(os.getpid()).encode()

def makeService(options):
    %(makeService)s
    return strports.service(options["port"], Site(Hello()))
"""

ZONE = """
$ORIGIN example.test.
$TTL 300
@    IN SOA ns1.example.test. admin.example.test. 1 3600 600 86400 300
@    IN NS  ns1.example.test.
ns1  IN A   10.0.0.53
www  IN A   10.0.0.80
"""

MULTICAST = """
from twisted.application import service
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

class Announce(service.Service):
    def startService(self):
        service.Service.startService(self)
        reactor.listenMulticast(%(port)d, DatagramProtocol())

def makeService():
    return Announce()
"""


def writePlugin(directory: str, makeService: str = "pass") -> None:
    """A third-party twistd plugin: a dropin in C{directory}/twisted/plugins, its code beside."""
    plugins = os.path.join(directory, "twisted", "plugins")
    os.makedirs(plugins, exist_ok=True)
    writeApp(plugins, "hello_plugin", PLUGIN_DROPIN)
    writeApp(directory, "hello_plugin_impl", PLUGIN_IMPL, makeService=makeService)


def writeFile(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)
    return path
