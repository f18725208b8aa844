"""
The tests' DNS server: A 127.0.0.1 for every name, nothing else (no AAAA);
names under C{nowhere.} get no address at all, for a name that cannot be validated.

    python tests/acmedns.py PORTFILE

Listens on a free UDP port of 127.0.0.1 (and TCP on the same number when it
is free) and writes the port number to PORTFILE once it answers.
"""

import os
import sys


def _runDNS(portFile: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import succeed
    from twisted.names import dns, server

    class Everything127:
        def query(self, query, timeout=None):
            name = query.name.name
            if query.type == dns.A and not name.startswith(b"nowhere."):
                answer = dns.RRHeader(
                    name=name, type=dns.A, ttl=0, payload=dns.Record_A("127.0.0.1", ttl=0)
                )
                return succeed(([answer], [], []))
            return succeed(([], [], []))

    factory = server.DNSServerFactory(clients=[Everything127()])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    number = port.getHost().port
    try:
        reactor.listenTCP(number, factory, interface="127.0.0.1")
    except Exception:
        pass
    tmp = portFile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(number))
    os.replace(tmp, portFile)
    reactor.run()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/acmedns.py PORTFILE")
    _runDNS(sys.argv[1])
