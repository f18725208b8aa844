"""
A non-blocking ACMEv2 (RFC 8555) client on treq.

Messages and JWS come from the C{acme} library (C{acme.messages},
C{acme.jws}) and josepy; the HTTP is treq on the running reactor, so nothing
here blocks it. One L{AcmeClient} talks to one directory with one account key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import josepy as jose
import treq
from acme import jws, messages
from acme.crypto_util import make_csr
from cryptography import x509
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import deferLater
from twisted.web.http_headers import Headers

from txflip.core.log import log
from txflip.core.twistedprivate import quietConnectionPool

JOSE = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
USER_AGENT = "txflip-acme"

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class AcmeError(Exception):
    """
    Something the CA refused or that went wrong talking to it.

    @ivar problem: the CA's problem document, when it sent one.
    @ivar retryAfter: seconds the CA asked us to wait (C{Retry-After}), if it did.
    """

    def __init__(
        self,
        what: str,
        problem: messages.Error | None = None,
        status: int | None = None,
        url: str | None = None,
    ) -> None:
        self.what = what
        self.retryAfter: float | None = None
        self.problem = problem
        self.status = status
        self.url = url
        super().__init__(str(self))

    @property
    def code(self) -> str | None:
        return self.problem.code if self.problem is not None else None

    def __str__(self) -> str:
        parts = [self.what]
        if self.problem is not None:
            detail = self.problem.detail or self.problem.title or ""
            parts.append(f"{self.problem.typ}: {detail}".strip())
            for sub in self.problem.subproblems or ():
                name = sub.identifier.value if sub.identifier else "?"
                parts.append(f"{name}: {sub.typ}: {sub.detail or ''}")
        if self.status is not None:
            parts.append(f"HTTP {self.status} from {self.url}")
        return "; ".join(" ".join(parts[i].split()) for i in range(len(parts)))


class Responder(Protocol):
    """What answers the CA's challenges while an order is validated."""

    challengeTypes: Sequence[str]

    def add(self, kind: str, name: str, token: str, keyAuthorization: str) -> None: ...

    def remove(self, kind: str, name: str, token: str) -> None: ...


def httpClient(reactor, caBundle: str | None = None) -> treq.client.HTTPClient:
    """
    A treq client that verifies the CA's HTTPS certificate.

    @param caBundle: a PEM file of the roots to trust instead of the system's
        (a private ACME CA, or pebble in the tests). Verification is never off.
    """
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from txflip.acme.store import splitPEM

    if caBundle:
        with open(caBundle, "rb") as f:
            _, blocks = splitPEM(f.read())
        if not blocks:
            raise ValueError(f"{caBundle} holds no PEM certificate")
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=trustRootFromCertificates([Certificate.loadPEM(b) for b in blocks])
        )
    else:
        policy = BrowserLikePolicyForHTTPS()
    agent = Agent(reactor, contextFactory=policy, pool=_QuietPool(reactor, False))
    return treq.client.HTTPClient(agent)


_QuietPool = quietConnectionPool()


def retryAfter(headers: Headers, default: float, now: datetime | None = None) -> float:
    """Seconds to wait as the response's C{Retry-After} asks (delta or HTTP date)."""
    value = headers.getRawHeaders(b"retry-after", [None])[0]
    if value is None:
        return default
    text = value.decode("latin-1").strip()
    try:
        return max(0.0, float(int(text)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class AcmeClient:
    """
    One account at one ACME directory.

    @param maxWait: longest a single poll waits, whatever C{Retry-After} says.
    @param pollTimeout: how long an order may take from challenge to certificate.
    """

    def __init__(
        self,
        reactor,
        directoryUrl: str,
        accountKey: jose.JWK,
        email: str | None = None,
        http: treq.client.HTTPClient | None = None,
        badNonceRetries: int = 20,
        maxWait: float = 60.0,
        pollTimeout: float = 300.0,
        requestTimeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.directoryUrl = directoryUrl
        self.key = accountKey
        self.alg = jose.ES256 if isinstance(accountKey, jose.JWKEC) else jose.RS256
        self.email = email
        self._http = http or httpClient(reactor)
        self._badNonceRetries = badNonceRetries
        self._maxWait = maxWait
        self._pollTimeout = pollTimeout
        self._requestTimeout = requestTimeout
        self._directory: messages.Directory | None = None
        self._nonces: list[str] = []
        self.accountUrl: str | None = None

    # HTTP and JWS.

    def _sleep(self, seconds: float):
        return deferLater(self._reactor, seconds, lambda: None)

    def _keepNonce(self, response) -> None:
        nonce = response.headers.getRawHeaders(b"replay-nonce", [None])[0]
        if nonce:
            try:
                self._nonces.append(jws.Header._fields["nonce"].decode(nonce.decode("ascii")))
            except (jose.DeserializationError, UnicodeDecodeError):
                log.warn("ACME: ignoring a malformed Replay-Nonce from the CA")

    async def _request(self, method: str, url: str, **kwargs):
        """One HTTP request and its body; a network failure becomes an L{AcmeError}."""

        async def exchange():
            response = await self._http.request(method, url, **kwargs)
            return response, await response.content()

        # One deadline for the headers and the body: treq's own timeout= stops
        # at the headers, and a CA that stalls mid-body would hold the issue
        # lock for ever.
        exchanged = ensureDeferred(exchange())
        exchanged.addTimeout(self._requestTimeout, self._reactor)
        try:
            response, body = await exchanged
        except CancelledError:
            raise
        except Exception as e:
            reason = getattr(e, "reasons", None)
            detail = f"{type(e).__name__}: {e}"
            if reason:
                detail = "; ".join(f"{type(r.value).__name__}: {r.value}" for r in reason)
            raise AcmeError(f"cannot reach the CA: {method} {url}: {detail}") from None
        return response, body

    async def _get(self, url: str):
        response, body = await self._request("GET", url, headers={b"User-Agent": [USER_AGENT]})
        self._keepNonce(response)
        if response.code >= 400:
            raise self._problem(f"GET {url} failed", response, body, url)
        return response, body

    async def directory(self) -> messages.Directory:
        if self._directory is None:
            _, body = await self._get(self.directoryUrl)
            try:
                self._directory = messages.Directory.from_json(json.loads(body))
            except (ValueError, jose.DeserializationError) as e:
                raise AcmeError(f"{self.directoryUrl} is not an ACME directory ({e})") from None
        return self._directory

    async def _nonce(self) -> bytes:
        if self._nonces:
            return self._nonces.pop()
        directory = await self.directory()
        url = directory["newNonce"]
        response, _ = await self._request("HEAD", url, headers={b"User-Agent": [USER_AGENT]})
        self._keepNonce(response)
        if not self._nonces:
            raise AcmeError("the CA sent no Replay-Nonce", status=response.code, url=url)
        return self._nonces.pop()

    def _problem(self, what: str, response, body: bytes, url: str) -> AcmeError:
        problem = None
        try:
            problem = messages.Error.from_json(json.loads(body))
        except (ValueError, TypeError, jose.DeserializationError):
            pass
        error = AcmeError(what, problem, response.code, url)
        if response.headers.hasHeader(b"retry-after"):
            error.retryAfter = retryAfter(response.headers, 0.0)
        return error

    async def post(self, url: str, payload: bytes | jose.JSONDeSerializable | None, accept=None):
        """
        POST a JWS to C{url} (C{payload} None: POST-as-GET); retry C{badNonce}.

        @return: the response and its body.
        @raise AcmeError: for any status of 400 or more.
        """
        if payload is None:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        else:
            data = payload.json_dumps().encode()
        headers = {b"Content-Type": [JOSE], b"User-Agent": [USER_AGENT]}
        if accept:
            headers[b"Accept"] = [accept]
        for attempt in range(self._badNonceRetries + 1):
            nonce = await self._nonce()
            kwargs = {"kid": self.accountUrl} if self.accountUrl else {}
            signed = jws.JWS.sign(data, key=self.key, alg=self.alg, nonce=nonce, url=url, **kwargs)
            response, body = await self._request(
                "POST", url, data=signed.json_dumps().encode(), headers=headers
            )
            self._keepNonce(response)
            if response.code < 400:
                return response, body
            error = self._problem(f"POST {url} failed", response, body, url)
            if error.code == "badNonce" and attempt < self._badNonceRetries:
                log.info("ACME: the CA rejected a nonce (badNonce); retrying with a fresh one")
                continue
            raise error
        raise AssertionError("unreachable")

    # Account.

    async def register(self) -> str:
        """Create the account for this key, or find the one that exists; return its URL."""
        if self.accountUrl:
            return self.accountUrl
        directory = await self.directory()
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        response, body = await self.post(directory["newAccount"], registration)
        location = response.headers.getRawHeaders(b"location", [None])[0]
        if not location:
            raise AcmeError("the CA answered newAccount without a Location")
        self.accountUrl = location.decode("ascii")
        log.info(
            "ACME: {how} account {url}",
            how="created" if response.code == 201 else "reusing",
            url=self.accountUrl,
        )
        return self.accountUrl

    # Orders.

    async def _poll(self, url: str, done: set[str], what: str, parse):
        """POST-as-GET C{url} until its status is in C{done}, honouring Retry-After."""
        waited = 0.0
        delay = 0.5
        while True:
            response, body = await self.post(url, None)
            resource = parse(json.loads(body))
            status = resource.status.name
            if status in done:
                return resource
            if waited >= self._pollTimeout:
                raise AcmeError(f"{what} still {status} after {self._pollTimeout:.0f}s")
            wait = min(retryAfter(response.headers, delay), self._maxWait)
            wait = max(wait, 0.2)
            await self._sleep(wait)
            waited += wait
            delay = min(delay * 2, 5.0)

    async def issue(self, names: Sequence[str], keyPEM: bytes, responder: Responder) -> bytes:
        """
        Order a certificate for C{names} (one SAN certificate), answer its
        challenges through C{responder}, finalize with C{keyPEM}'s CSR and
        return the PEM chain.
        """
        await self.register()
        directory = await self.directory()
        newOrder = messages.NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names]
        )
        response, body = await self.post(directory["newOrder"], newOrder)
        orderUrl = response.headers.getRawHeaders(b"location", [b""])[0].decode("ascii")
        order = messages.Order.from_json(json.loads(body))
        log.info("ACME: new order {url} for {names}", url=orderUrl, names=", ".join(names))
        for authzUrl in order.authorizations:
            await self._authorize(authzUrl, responder)
        order = await self._poll(
            orderUrl, {"ready", "valid", "invalid"}, f"order {orderUrl}", messages.Order.from_json
        )
        if order.status.name == "invalid":
            raise AcmeError(f"order {orderUrl} became invalid", order.error)
        if order.status.name == "ready":
            csr = x509.load_pem_x509_csr(make_csr(keyPEM, list(names)))
            await self.post(order.finalize, messages.CertificateRequest(csr=csr))
            order = await self._poll(
                orderUrl, {"valid", "invalid"}, f"order {orderUrl}", messages.Order.from_json
            )
            if order.status.name == "invalid":
                raise AcmeError(f"order {orderUrl} became invalid at finalize", order.error)
        _, chain = await self.post(order.certificate, None, accept=PEM_CHAIN)
        if b"-----BEGIN CERTIFICATE-----" not in chain:
            raise AcmeError(f"{order.certificate} did not return a PEM certificate chain")
        log.info("ACME: certificate issued for {names}", names=", ".join(names))
        return chain

    async def _authorize(self, url: str, responder: Responder) -> None:
        _, body = await self.post(url, None)
        raw = json.loads(body)
        authz = messages.Authorization.from_json(raw)
        name = authz.identifier.value
        if authz.status.name == "valid":
            log.info("ACME: {name} is already authorized", name=name)
            return
        if authz.status.name != "pending":
            raise AcmeError(f"authorization for {name} is {authz.status.name}")
        offered = {c.get("type"): c for c in raw.get("challenges", [])}
        kind = next((k for k in responder.challengeTypes if k in offered), None)
        if kind is None:
            raise AcmeError(
                f"the CA offers {', '.join(sorted(offered))} for {name}; "
                f"this server answers only {', '.join(responder.challengeTypes)}"
            )
        challenge = offered[kind]
        token = challenge["token"]
        thumbprint = jose.b64encode(self.key.public_key().thumbprint()).decode("ascii")
        keyAuthorization = f"{token}.{thumbprint}"
        responder.add(kind, name, token, keyAuthorization)
        try:
            log.info("ACME: answering {kind} for {name}", kind=kind, name=name)
            await self.post(challenge["url"], b"{}")
            authz = await self._poll(
                url,
                {"valid", "invalid"},
                f"authorization for {name}",
                messages.Authorization.from_json,
            )
        finally:
            responder.remove(kind, name, token)
        if authz.status.name == "invalid":
            problem = None
            for c in authz.challenges:
                if c.error is not None:
                    problem = c.error
            raise AcmeError(f"the CA could not validate {name} by {kind}", problem)
