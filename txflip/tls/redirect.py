"""
The plain-HTTP listener: send every request to HTTPS, except ACME challenges.

L{HTTPSRedirect} answers C{301} to GET and HEAD and C{308} to every other
method (so a POST stays a POST), with C{Location} the same host, path and
query on the HTTPS port.

The ACME hook
=============

ACME HTTP-01 challenges must be answered over plain HTTP at
C{/.well-known/acme-challenge/TOKEN}. Set L{HTTPSRedirect.challengeResponder}
to any L{IResource}; requests under that path are then given to it, with
C{request.postpath == [TOKEN]} (and C{request.prepath} ending in
C{b".well-known", b"acme-challenge"}), through the normal resource traversal:
the responder's C{getChildWithDefault} or C{render} sees the request as if it
were mounted at C{/.well-known/acme-challenge/}. While it is None, those paths
are redirected like everything else. C{RedirectSite.redirect} is the
L{HTTPSRedirect} of a site made by L{redirectSite}, so::

    site = redirectSite(443)
    site.redirect.challengeResponder = myChallengeResource
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

CHALLENGE_PATH = (b".well-known", b"acme-challenge")
DEFAULT_HTTPS_PORT = 443
_HOST = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class HTTPSRedirect(Resource):
    """
    Redirect to C{https://HOST[:httpsPort]/same/path?same=query}.

    @ivar challengeResponder: the resource that answers
        C{/.well-known/acme-challenge/...}, or None to redirect those too.
    """

    isLeaf = False

    def __init__(
        self, httpsPort: int = DEFAULT_HTTPS_PORT, challengeResponder: IResource | None = None
    ) -> None:
        super().__init__()
        self.httpsPort = httpsPort
        self.challengeResponder = challengeResponder

    def getChildWithDefault(self, path: bytes, request):
        responder = self.challengeResponder
        if (
            responder is not None
            and request.prepath == [CHALLENGE_PATH[0]]
            and path == CHALLENGE_PATH[0]
            and request.postpath[:1] == [CHALLENGE_PATH[1]]
        ):
            request.prepath.append(request.postpath.pop(0))
            return responder
        return self

    def render(self, request) -> bytes:
        host = self._host(request)
        if host is None:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Bad Request: a Host header naming this server is needed for HTTPS\n"
        location = b"https://" + host + self._portSuffix() + self._pathAndQuery(request)
        code = 301 if request.method in (b"GET", b"HEAD") else 308
        request.setResponseCode(code)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store" if code == 308 else b"max-age=3600")
        return b"Moved to " + location + b"\n"

    def _portSuffix(self) -> bytes:
        return b"" if self.httpsPort == DEFAULT_HTTPS_PORT else b":%d" % (self.httpsPort,)

    @staticmethod
    def _host(request) -> bytes | None:
        """The host name the client asked for, without its port; None if unusable."""
        header = request.getHeader(b"host")
        if header is None:
            address = request.getHost()
            hostText = getattr(address, "host", "")
            if not hostText:
                return None
            header = (f"[{hostText}]" if ":" in hostText else hostText).encode()
        match = _HOST.match(header.strip())
        if match is None:
            return None
        return match.group(1).lower()

    @staticmethod
    def _pathAndQuery(request) -> bytes:
        uri = request.uri
        if not uri.startswith(b"/"):
            # absolute-form (GET http://host/path HTTP/1.1): keep path and query only
            parts = urlsplit(uri)
            uri = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        return uri


class RedirectSite(Site):
    """A Site serving one L{HTTPSRedirect}, reachable as C{.redirect}."""

    def __init__(self, redirect: HTTPSRedirect) -> None:
        super().__init__(redirect)
        self.redirect = redirect
        self.displayTracebacks = False


def redirectSite(
    httpsPort: int = DEFAULT_HTTPS_PORT, challengeResponder: IResource | None = None
) -> RedirectSite:
    """The factory for a plain-HTTP listener that redirects to C{httpsPort}."""
    return RedirectSite(HTTPSRedirect(httpsPort, challengeResponder))


def httpsPortOf(descriptions: list[str]) -> int | None:
    """The port of the first C{ssl:}, C{flip-tls:} or C{tls:} endpoint description, if any."""
    for description in descriptions:
        prefix, _, rest = description.partition(":")
        if prefix not in ("ssl", "flip-tls", "tls"):
            continue
        positional = []
        named = {}
        for part in rest.replace("\\:", "").split(":"):
            key, equals, value = part.partition("=")
            if equals:
                named[key] = value
            else:
                positional.append(key)
        if prefix == "tls":  # Twisted's tls:PATH[:port=N], 443 by default
            port = named.get("port", "443")
        else:
            port = named.get("port") or (positional[0] if positional else "")
        return int(port) if port.isdigit() else None
    return None
