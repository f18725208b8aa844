"""
A server that runs its own reactor, as many programs do: not a twistd plugin,
and nothing in it knows about txflip.

    python ownreactor.py [ARGS...] PORT [--react] [--log] [--own-sighup] [ARGS...]

PORT is its first argument that is a number, so that a test can put options
of the program's own (C{-c homeserver.yaml}) first. It answers every GET with
its PID, in the body and in X-Served-By, the arguments it was given, so a test
can see they reach every generation, and how many SIGHUPs it got. With
C{--log} it begins Twisted's logging itself, to standard output, as Synapse
does; with C{--own-sighup} it counts SIGHUPs in a handler of its own, as a
server that reloads on SIGHUP does.
"""

import json
import os
import signal
import sys

from twisted.internet import endpoints
from twisted.web import resource, server


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        body = {"pid": os.getpid(), "argv": sys.argv[1:], "sighups": len(sighups)}
        return json.dumps(body).encode()


sighups = []


def listen(reactor):
    port = next(arg for arg in sys.argv[1:] if arg.isdigit())
    endpoint = endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
    return endpoint.listen(server.Site(Hello()))


def main():
    if "--log" in sys.argv:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    if "--own-sighup" in sys.argv:
        signal.signal(signal.SIGHUP, lambda signum, frame: sighups.append(signum))
    if "--react" in sys.argv:
        from twisted.internet.defer import Deferred
        from twisted.internet.task import react

        def serve(reactor):
            listen(reactor)
            return Deferred()  # runs until the reactor stops

        react(serve)
    else:
        from twisted.internet import reactor

        listen(reactor)
        reactor.run()


if __name__ == "__main__":
    main()
