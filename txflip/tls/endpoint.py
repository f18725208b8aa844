"""
The C{flip-tls:} server endpoint: TLS on a socket that survives restarts.

    flip-tls:PORT[:interface=ADDR][:backlog=N] + one of:
        :privateKey=KEY.pem[:certKey=CERT.pem][:extraCertChain=CHAIN.pem][:dhParameters=DH.pem]
        :certDir=DIR[:default=NAME][:reload=SECONDS][:dhParameters=DH.pem]
                                            one NAME.pem per host (SNI); reload=N also
                                            picks up changed files every N seconds
        :selfSigned=DIR[:names=localhost,127.0.0.1]              development only
    plain C{flip-tls:PORT} is C{selfSigned} in L{txflip.tls.selfsigned.defaultDirectory}.

C{interface} may be IPv4 or IPv6 (escape its colons: C{interface=\\:\\:1}).
Certificates are read and checked when the endpoint listens, so every
generation reads them fresh (a SIGHUP picks up renewed files) and a bad one
fails that generation's start with a one-line error.

Twisted's own C{tls:PATH} endpoint owns the C{tls:} prefix; this one differs
in reading and checking every certificate once per generation (never per
handshake), choosing the default certificate explicitly, and serving
L{txflip.tls.defaults} (ALPN, session cache). The endpoint listens
through the global reactor's C{listenSSL}, which txflip stands in for, so the
socket is handed from one generation to the next.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

OptionsMaker = Callable[[], object]

_MODES = ("privateKey", "certDir", "selfSigned")
_KNOWN = {
    "interface",
    "backlog",
    "privateKey",
    "certKey",
    "extraCertChain",
    "dhParameters",
    "certDir",
    "default",
    "reload",
    "selfSigned",
    "names",
}


class EndpointSyntaxError(ValueError):
    """A C{flip-tls:} description that cannot work; the message says how to fix it."""


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listen with TLS on C{port}, building the TLS options at listen time.

    @param makeOptions: reads the certificates and returns the context factory.
    """

    def __init__(
        self,
        reactor,
        port: int,
        makeOptions: OptionsMaker,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        self._reactor = reactor
        self._port = port
        self._makeOptions = makeOptions
        self._backlog = backlog
        self._interface = interface

    def listen(self, protocolFactory) -> defer.Deferred:
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, protocolFactory):
        from OpenSSL import SSL

        from txflip.tls.certfiles import CertificateError

        options = self._makeOptions()
        try:
            options.getContext()  # built now, so that a bad one fails the start
        except SSL.Error as e:
            raise CertificateError(f"cannot build a TLS context: {e}") from None
        # Looked up now, not earlier: txflip replaces the reactor's listenSSL.
        return self._reactor.listenSSL(
            self._port,
            protocolFactory,
            options,
            backlog=self._backlog,
            interface=self._interface,
        )


def _filesMaker(privateKey: str, certKey, extraCertChain, dhParameters) -> OptionsMaker:
    def make():
        from txflip.tls.certfiles import loadPair

        return loadPair(privateKey, certKey, extraCertChain).options(dhParameters)

    return make


def _dirMaker(reactor, certDir: str, default, dhParameters, reloadSeconds: float) -> OptionsMaker:
    def make():
        from twisted.internet.task import LoopingCall

        from txflip.tls.certdir import CertificateDirectory

        directory = CertificateDirectory(certDir, default, dhParameters)
        factory = directory.load()
        if reloadSeconds > 0:
            loop = LoopingCall(directory.reload)
            loop.clock = reactor
            loop.start(reloadSeconds, now=False)
        return factory

    return make


def _selfSignedMaker(directory: str, names: list[str] | None, dhParameters) -> OptionsMaker:
    def make():
        from txflip.tls.certfiles import loadCombined
        from txflip.tls.selfsigned import ensureSelfSigned

        return loadCombined(ensureSelfSigned(directory, names)).options(dhParameters)

    return make


def parseTLS(reactor, port: str, **options: str) -> TLSServerEndpoint:
    """Build a L{TLSServerEndpoint} from the parts of a C{flip-tls:} description."""
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise EndpointSyntaxError(
            f"flip-tls: has no option {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}"
        )
    try:
        portNumber = int(port)
        backlog = int(options.get("backlog", "50"))
    except ValueError:
        raise EndpointSyntaxError(
            "flip-tls: port and backlog must be numbers, e.g. flip-tls:8443"
        ) from None
    interface = options.get("interface", "")
    if interface.startswith("[") and interface.endswith("]"):
        interface = interface[1:-1]
    modes = [m for m in _MODES if options.get(m)]
    if len(modes) > 1:
        raise EndpointSyntaxError(
            "flip-tls: takes one of privateKey=, certDir= or selfSigned=, "
            f"not {' and '.join(modes)}"
        )
    dh = options.get("dhParameters")
    mode = modes[0] if modes else "selfSigned"
    if mode != "privateKey" and (options.get("certKey") or options.get("extraCertChain")):
        raise EndpointSyntaxError("flip-tls: certKey= and extraCertChain= go with privateKey=")
    if mode != "certDir" and (options.get("default") or options.get("reload")):
        raise EndpointSyntaxError("flip-tls: default= and reload= go with certDir=")
    try:
        reloadSeconds = float(options.get("reload") or 0)
    except ValueError:
        reloadSeconds = -1.0
    if not 0 <= reloadSeconds < float("inf"):
        raise EndpointSyntaxError("flip-tls: reload= takes seconds, e.g. reload=60 (0: never)")
    if mode != "selfSigned" and options.get("names"):
        raise EndpointSyntaxError("flip-tls: names= goes with selfSigned=")
    if mode == "privateKey":
        make = _filesMaker(
            options["privateKey"], options.get("certKey"), options.get("extraCertChain"), dh
        )
    elif mode == "certDir":
        make = _dirMaker(reactor, options["certDir"], options.get("default"), dh, reloadSeconds)
    else:
        from txflip.tls.selfsigned import defaultDirectory

        names = [n.strip() for n in options.get("names", "").split(",") if n.strip()] or None
        make = _selfSignedMaker(options.get("selfSigned") or defaultDirectory(), names, dh)
    return TLSServerEndpoint(reactor, portNumber, make, backlog, interface)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class TLSServerParser:
    """The C{flip-tls:} prefix for C{serverFromString} (registered as a plugin)."""

    prefix = "flip-tls"

    def parseStreamServer(self, reactor, *args: str, **kwargs: str) -> TLSServerEndpoint:
        if not args and "port" in kwargs:
            args = (kwargs.pop("port"),)
        if len(args) != 1:
            raise EndpointSyntaxError(
                "flip-tls: takes the port first, then name=value options, e.g. "
                "flip-tls:8443:certDir=/etc/myapp/certs"
            )
        return parseTLS(reactor, args[0], **kwargs)
