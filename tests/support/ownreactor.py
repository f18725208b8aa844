"""
A server that runs its own reactor, as many programs do: not a twistd plugin,
and nothing in it knows about txflip.

    python ownreactor.py PORT [--react] [ARGS...]

It answers every GET with its PID, in the body and in X-Served-By, and the
arguments it was given, so a test can see they reach every generation.
"""

import json
import os
import sys

from twisted.internet import endpoints
from twisted.web import resource, server


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        return json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}).encode()


def listen(reactor):
    endpoint = endpoints.serverFromString(reactor, f"tcp:{sys.argv[1]}:interface=127.0.0.1")
    return endpoint.listen(server.Site(Hello()))


def main():
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
