"""
Keeping ACME certificates issued, stored, renewed and served.

L{AcmeManager} owns one store: at start it serves what the store holds (or a
self-signed fallback, logged loudly, until the first issuance), then checks
periodically and renews ahead of expiry. A new certificate is swapped into the
serving TLS contexts (L{txflip.acme.tls.SwappableContexts}) without a restart;
if issuing fails the old certificate stays and the attempt is retried with
exponential backoff. Only the generation holding the store's lock talks to
the CA; the others pick up what it stored.

The TLS listeners that serve these certificates are in L{txflip.acme.endpoint}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from txflip.acme.challenges import HTTP01, TLSALPN01, ChallengeResponder
from txflip.acme.client import LETSENCRYPT, AcmeClient, httpClient
from txflip.acme.store import (
    AcmeStore,
    StoredCertificate,
    newPrivateKey,
    privateKeyPEM,
    splitPEM,
)
from txflip.acme.tls import ServedCertificate, SwappableContexts, matchName
from txflip.core.log import log
from txflip.tls.selfsigned import generate as generateSelfSigned

DAY = 86400.0
URGENT = 7 * DAY
_tracebacks = Logger(namespace="txflip.acme")


@dataclass
class AcmeSettings:
    """How to reach the CA and when to renew; shared by every store of this process."""

    directoryUrl: str | None = None
    caBundle: str | None = None
    email: str | None = None
    challengeTypes: tuple[str, ...] = (TLSALPN01,)
    renewBefore: float = 30 * DAY
    checkInterval: float = DAY / 2
    retryMin: float = 60.0
    retryMax: float = 6 * 3600.0
    lockRetry: float = 2.0
    finishTimeout: float = 60.0
    extraNames: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)


settings = AcmeSettings()
_managers: dict[str, AcmeManager] = {}


def duration(seconds: float) -> str:
    """C{seconds} the way a person would say it: 29.5 days, 5.0 hours, 12 minutes."""
    if seconds >= 2 * DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


def selfSigned(names: Sequence[str]) -> ServedCertificate:
    """A throwaway self-signed certificate for C{names}: what is served until ACME succeeds."""
    keys, certificates = splitPEM(generateSelfSigned(list(names)))
    return ServedCertificate(keys[0], b"".join(certificates), list(names))


class AcmeManager:
    """
    The certificates of one store, for the names in C{specs} (one certificate
    per entry, stored under its first name).
    """

    def __init__(
        self,
        reactor,
        store: AcmeStore,
        specs: list[tuple[str, ...]],
        settings: AcmeSettings,
        directoryUrl: str,
    ) -> None:
        self._reactor = reactor
        self.store = store
        self.specs: list[tuple[str, ...]] = []
        self.settings = settings
        self.directoryUrl = directoryUrl
        self.responder = ChallengeResponder(store, settings.challengeTypes)
        self.contexts = SwappableContexts(self.responder.alpnCertificate)
        self.current: dict[str, StoredCertificate] = {}
        self._fallbacks: dict[tuple[str, ...], ServedCertificate] = {}
        self._client: AcmeClient | None = None
        self._timer = None
        self._prepared = False
        self._started = False
        self._stopped = False
        self._failures: dict[tuple[str, ...], int] = {}
        self._retryAt: dict[tuple[str, ...], float] = {}
        self._running: Deferred | None = None
        for spec in specs:
            self.addSpec(spec)

    def addSpec(self, names: Sequence[str]) -> None:
        spec = tuple(names)
        if spec and spec not in self.specs:
            self.specs.append(spec)

    # What is served.

    def prepare(self) -> None:
        """Serve what the store holds, or the fallback; never talks to the CA."""
        if self._prepared:
            return
        self._prepared = True
        if not self.store.writable:
            log.warn(
                "ACME: the store {store} is NOT WRITABLE by uid {uid}: serving what it holds, "
                "but nothing can be renewed or issued until it is made writable",
                store=self.store.path,
                uid=os.geteuid(),
            )
        self._loadStore()
        for spec in self.specs:
            stored = self.current.get(spec[0])
            if stored is not None and self._covers(stored, spec):
                log.info(
                    "ACME: serving stored certificate for {names} (serial {serial:x}, "
                    "expires {expires})",
                    names=", ".join(spec),
                    serial=stored.serial,
                    expires=stored.notAfter.isoformat(),
                )
        self._publish()

    def _loadStore(self) -> bool:
        """Read every certificate from disk; True if something changed."""
        changed = False
        for spec in self.specs:
            try:
                stored = self.store.load(spec[0])
            except Exception as e:
                log.error(
                    "ACME: cannot read {path}: {error}", path=self.store.certPath(spec[0]), error=e
                )
                continue
            if stored is None:
                continue
            old = self.current.get(spec[0])
            if old is None or old.serial != stored.serial:
                self.current[spec[0]] = stored
                changed = True
        return changed

    def _covers(self, stored: StoredCertificate, spec: tuple[str, ...]) -> bool:
        return all(matchName(name, stored.names) for name in spec)

    def _publish(self) -> None:
        served = []
        for spec in self.specs:
            stored = self.current.get(spec[0])
            if stored is not None and stored.expiresIn() > 0:
                served.append(ServedCertificate(stored.keyPEM, stored.chainPEM, stored.names))
                continue
            fallback = self._fallbacks.get(spec)
            if fallback is None:
                fallback = self._fallbacks[spec] = selfSigned(spec)
                log.warn(
                    "ACME: no certificate for {names} in {store} yet: serving a SELF-SIGNED "
                    "fallback certificate (clients will not trust it) until issuance succeeds",
                    names=", ".join(spec),
                    store=self.store.path,
                )
            served.append(fallback)
        self.contexts.setCertificates(served)

    def due(self, spec: tuple[str, ...]) -> str | None:
        """Why C{spec} needs a new certificate now, or None."""
        stored = self.current.get(spec[0])
        if stored is None:
            return "no certificate yet"
        if not self._covers(stored, spec):
            return f"stored certificate covers {', '.join(stored.names)} only"
        left = stored.expiresIn()
        if left <= 0:
            return f"expired {duration(-left)} ago"
        if left < self.settings.renewBefore:
            return f"expires in {duration(left)}"
        return None

    # Checking and issuing.

    def start(self) -> None:
        """Check now, then every C{checkInterval}; idempotent."""
        if self._started:
            return
        self._started = True
        self.prepare()
        self._reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        self._schedule(0)

    def stop(self) -> Deferred | None:
        """
        No more checks. An issuance under way is given C{finishTimeout}
        seconds to finish before the process exits (it keeps the lock until
        then, and the next generation picks up what it stored), so an order a
        handoff interrupts is not thrown away and placed again.
        """
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._running is None:
            self.store.lock.release()
            return None
        log.info(
            "ACME: letting the issuance under way finish before exiting (at most {t:.0f}s)",
            t=self.settings.finishTimeout,
        )
        finished = Deferred()
        self._running.addBoth(lambda result: finished.called or finished.callback(None))
        timeout = self._reactor.callLater(self.settings.finishTimeout, self._running.cancel)
        finished.addBoth(lambda _: timeout.active() and timeout.cancel())
        return finished

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._running is not None:
            return
        self._running = ensureDeferred(self.check())
        self._running.addBoth(self._checked)

    def _checked(self, delay) -> None:
        self._running = None
        if isinstance(delay, float | int):
            self._schedule(float(delay))
        else:
            log.error("ACME: check failed unexpectedly: {error}", error=delay)
            self._schedule(self.settings.retryMax)

    async def check(self) -> float:
        """Renew whatever is due; return the seconds until the next check."""
        if self._loadStore():
            self._publish()
            self._logServing("stored by another process")
        due = [(spec, why) for spec in self.specs if (why := self.due(spec))]
        if not due:
            self._failures.clear()
            self._retryAt.clear()
            return self.settings.checkInterval
        if not self.store.checkWritable():
            for spec, why in due:
                stored = self.current.get(spec[0])
                urgent = stored is None or stored.expiresIn() < URGENT
                (log.critical if urgent else log.error)(
                    "ACME: cannot renew the certificate for {names} ({why}): the store {store} "
                    "is not writable by uid {uid}; checking again in {delay:.0f}s",
                    names=", ".join(spec),
                    why=why,
                    store=self.store.path,
                    uid=os.geteuid(),
                    delay=self.settings.checkInterval,
                )
            return self.settings.checkInterval
        if not self.store.lock.tryAcquire():
            log.info(
                "ACME: another process (PID {holder}) is issuing from {store}; "
                "checking again in {delay}s",
                holder=self.store.lock.holder(),
                store=self.store.path,
                delay=self.settings.lockRetry,
            )
            return self.settings.lockRetry
        try:
            if self._loadStore():
                self._publish()
                self._logServing("stored by another process")
            # Each certificate fails and backs off on its own: one name whose DNS
            # moved away must not keep the others from renewing.
            delays: list[float] = []
            for spec in self.specs:
                why = self.due(spec)
                if why is None or self._stopped:
                    continue
                wait = self._retryAt.get(spec, 0.0) - self._reactor.seconds()
                if wait > 0:
                    delays.append(wait)
                    continue
                log.info(
                    "ACME: requesting a certificate for {names}: {why}",
                    names=", ".join(spec),
                    why=why,
                )
                try:
                    await self._issue(spec)
                except Exception as e:
                    if self._stopped:
                        log.warn(
                            "ACME: issuance for {names} abandoned at exit: {error!r}",
                            names=", ".join(spec),
                            error=e,
                        )
                        return self.settings.retryMax
                    if not _isAcme(e):
                        _tracebacks.failure("ACME: unexpected error while issuing")
                    # Start afresh next time: directory, nonces and account URL may
                    # be stale if the CA restarted or moved.
                    self._client = None
                    failures = self._failures[spec] = self._failures.get(spec, 0) + 1
                    delay = min(
                        self.settings.retryMin * 2 ** (failures - 1), self.settings.retryMax
                    )
                    asked = getattr(e, "retryAfter", None)
                    if asked:
                        # A rate limit's Retry-After is honoured, however long.
                        delay = max(delay, asked)
                    stored = self.current.get(spec[0])
                    keeping = (
                        f"still serving the certificate expiring {stored.notAfter.isoformat()}"
                        if stored is not None
                        else "still serving the self-signed fallback"
                    )
                    urgent = stored is not None and stored.expiresIn() < URGENT
                    (log.critical if urgent else log.error)(
                        "ACME: issuing a certificate for {names} failed (attempt {n}): "
                        "{error}; {keeping}; retrying in {delay:.0f}s",
                        names=", ".join(spec),
                        n=failures,
                        error=f"{type(e).__name__}: {e}" if not _isAcme(e) else str(e),
                        keeping=keeping,
                        delay=delay,
                    )
                    self._retryAt[spec] = self._reactor.seconds() + delay
                    delays.append(delay)
                    continue
                self._failures.pop(spec, None)
                self._retryAt.pop(spec, None)
            return min(delays) if delays else self.settings.checkInterval
        finally:
            self.store.lock.release()

    async def _issue(self, spec: tuple[str, ...]) -> None:
        if self._client is None:
            self._client = AcmeClient(
                self._reactor,
                self.directoryUrl,
                self.store.accountKey(),
                email=self.settings.email,
                http=httpClient(self._reactor, self.settings.caBundle),
            )
        keyPEM = privateKeyPEM(newPrivateKey())
        chain = await self._client.issue(spec, keyPEM, self.responder)
        self.current[spec[0]] = self.store.save(spec[0], keyPEM, chain)
        self._publish()
        self._logServing("newly issued", [spec])

    def _logServing(self, how: str, specs=None) -> None:
        for spec in specs or self.specs:
            stored = self.current.get(spec[0])
            if stored is None:
                continue
            log.info(
                "ACME: now serving the {how} certificate for {names}: serial {serial:x}, "
                "expires {expires}",
                how=how,
                names=", ".join(spec),
                serial=stored.serial,
                expires=stored.notAfter.isoformat(),
            )


def _isAcme(error: Exception) -> bool:
    from txflip.acme.client import AcmeError

    return isinstance(error, AcmeError)


def managerFor(reactor, certDir: str, defaultDirectory: str = LETSENCRYPT) -> AcmeManager:
    """The one manager of this process for the store C{certDir}."""
    path = os.path.realpath(certDir)
    manager = _managers.get(path)
    if manager is None:
        store = AcmeStore(path)
        manager = AcmeManager(
            reactor, store, [], settings, settings.directoryUrl or defaultDirectory
        )
        for spec in settings.extraNames.get(path, []):
            manager.addSpec(spec)
        _managers[path] = manager
    return manager


def allResponders() -> list[ChallengeResponder]:
    return [m.responder for m in _managers.values()]


class AnyStoreResponder:
    """HTTP-01 answers from every store of this process (for the plain-HTTP listener)."""

    def http01(self, token: str) -> str | None:
        for responder in allResponders():
            answer = responder.http01(token)
            if answer is not None:
                return answer
        return None


__all__ = [
    "HTTP01",
    "TLSALPN01",
    "AcmeManager",
    "AcmeSettings",
    "AnyStoreResponder",
    "managerFor",
    "settings",
]
