"""
A server that runs its own reactor and uses txflip's API directly.

    python hello_api.py 8080 /tmp/hello.pid
    kill -HUP $(cat /tmp/hello.pid)    # the next generation takes over
"""

import os
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

import txflip


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"hello from generation {flip.number}, PID {os.getpid()}\n".encode()


port, pidFile = sys.argv[1], sys.argv[2]
flip = txflip.Generation(reactor, pidFile=pidFile)  # this process's generation
flip.handleSignals()  # SIGHUP upgrades; SIGTERM and SIGINT drain, then exit
flip.listen(f"tcp:{port}:interface=127.0.0.1", Site(Hello()))  # adopts a handed-down socket
flip.ready()  # say ready: the previous generation stops accepting and drains
reactor.run()
