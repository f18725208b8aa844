"""
The demo app: who is serving, a slow request, and a guestbook that survives restarts.

    GET  /                    PID, generation, uptime, recent guestbook entries
    GET  /sleep?seconds=N     answers after N seconds (at most 600): watch a drain
    GET  /stream?seconds=N    sends its headers and a first line at once, the rest after N seconds
    GET  /guestbook           the entries, as JSON
    POST /guestbook           add one (form field or JSON "message"); 201 once committed

Entries live in SQLite in WAL mode (C{TXFLIP_DEMO_DB}, default
C{./txflip-demo.sqlite3}) through C{twisted.enterprise.adbapi}, so every entry
acknowledged with a 2xx survives any number of restarts.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
import time

from twisted.enterprise import adbapi
from twisted.internet import reactor
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txflip.core.log import generation
from txflip.core.twistedprivate import clientGone

MAX_SLEEP = 600.0
MAX_MESSAGE = 2000
_STARTED = time.monotonic()
_log = Logger()


def _openConnection(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS guestbook ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " message TEXT NOT NULL,"
        " pid INTEGER NOT NULL,"
        " created REAL NOT NULL)"
    )
    connection.commit()


def openPool(path: str) -> adbapi.ConnectionPool:
    """One writer thread, WAL mode, and a busy timeout for the overlap of two generations."""
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        timeout=30,
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=_openConnection,
        cp_noisy=False,
    )


def _identity() -> dict:
    return {
        "pid": os.getpid(),
        "generation": generation(),
        "uptime": round(time.monotonic() - _STARTED, 3),
    }


def _json(request, code: int, body: dict | list) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"x-served-by", str(os.getpid()).encode())
    return json.dumps(body).encode() + b"\n"


def _seconds(request) -> float | None:
    """The C{seconds} argument, within 0 to L{MAX_SLEEP}; L{None} if it is not a number."""
    try:
        seconds = float(request.args.get(b"seconds", [b"1"])[0])
    except ValueError:
        return None
    return max(0.0, min(seconds, MAX_SLEEP))


class Sleep(Resource):
    isLeaf = True

    def render_GET(self, request):
        seconds = _seconds(request)
        if seconds is None:
            return _json(request, 400, {"error": "seconds must be a number"})
        if seconds:
            _log.info(
                "demo: sleeping {seconds}s for a request (PID {pid})",
                seconds=seconds,
                pid=os.getpid(),
            )
        call = reactor.callLater(seconds, self._finish, request, seconds)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET

    def _finish(self, request, seconds: float) -> None:
        request.write(_json(request, 200, {"slept": seconds, **_identity()}))
        request.finish()


class Stream(Resource):
    """A response that is under way for a while: headers out first, body later."""

    isLeaf = True

    def render_GET(self, request):
        seconds = _seconds(request)
        if seconds is None:
            return _json(request, 400, {"error": "seconds must be a number"})
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-served-by", str(os.getpid()).encode())
        request.write(b"started\n")
        call = reactor.callLater(seconds, self._finish, request)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET

    @staticmethod
    def _finish(request) -> None:
        request.write(f"finished by PID {os.getpid()}\n".encode())
        request.finish()


class Guestbook(Resource):
    isLeaf = True

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        super().__init__()
        self._pool = pool

    def render_GET(self, request):
        d = self._pool.runQuery("SELECT id, message, pid FROM guestbook ORDER BY id")
        d.addCallback(lambda rows: [{"id": i, "message": m, "pid": p} for i, m, p in rows])
        self._respond(request, d, 200)
        return NOT_DONE_YET

    def render_POST(self, request):
        message = self._message(request)
        if not message:
            return _json(request, 400, {"error": "send a non-empty 'message'"})
        d = self._pool.runInteraction(self._insert, message[:MAX_MESSAGE])
        d.addCallback(lambda entryId: {"id": entryId, **_identity()})
        self._respond(request, d, 201)
        return NOT_DONE_YET

    @staticmethod
    def _message(request) -> str:
        if request.args.get(b"message"):
            return request.args[b"message"][0].decode("utf-8", "replace").strip()
        if request.getHeader(b"content-type") == b"application/json":
            try:
                body = json.loads(request.content.read() or b"{}")
            except ValueError:
                return ""
            return str(body.get("message", "")).strip()
        return ""

    @staticmethod
    def _insert(cursor, message: str) -> int:
        cursor.execute(
            "INSERT INTO guestbook (message, pid, created) VALUES (?, ?, ?)",
            (message, os.getpid(), time.time()),
        )
        return cursor.lastrowid

    @staticmethod
    def _respond(request, d, code: int) -> None:
        def ok(body):
            if not clientGone(request):
                request.write(_json(request, code, body))
                request.finish()

        def failed(failure):
            if not clientGone(request):
                request.write(_json(request, 503, {"error": str(failure.value)}))
                request.finish()

        d.addCallbacks(ok, failed)


class Home(Resource):
    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        super().__init__()
        self._pool = pool

    def getChild(self, path, request):
        if path == b"":
            return self
        return Resource.getChild(self, path, request)

    def render_GET(self, request):
        d = self._pool.runQuery("SELECT message, pid FROM guestbook ORDER BY id DESC LIMIT 20")
        d.addCallback(self._page, request)
        d.addErrback(lambda f: self._page([], request, str(f.value)))
        return NOT_DONE_YET

    def _page(self, rows, request, error: str = "") -> None:
        me = _identity()
        entries = "".join(
            f"<li>{html.escape(message)} <small>(PID {pid})</small></li>" for message, pid in rows
        )
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>txflip demo</title></head>
<body>
<h1>txflip demo</h1>
<p>Served by PID <b id="pid">{me["pid"]}</b>, generation <b id="generation">{me["generation"]}</b>,
up for <b id="uptime">{me["uptime"]:.1f}</b> s.</p>
<p>Restart without downtime: <code>kill -HUP {me["pid"]}</code>.
A slow request to watch a drain: <a href="/sleep?seconds=10">/sleep?seconds=10</a>.</p>
<h2>Guestbook</h2>
<form method="post" action="/guestbook"><input name="message" maxlength="{MAX_MESSAGE}">
<button>Sign</button></form>
<ul>{entries}</ul>{html.escape(error)}
</body></html>
"""
        if not clientGone(request):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"x-served-by", str(os.getpid()).encode())
            request.write(body.encode())
            request.finish()


def makeResource(databasePath: str | None = None) -> Resource:
    """The demo's root resource, with its own connection pool."""
    path = databasePath or os.environ.get("TXFLIP_DEMO_DB", "txflip-demo.sqlite3")
    pool = openPool(os.path.abspath(path))
    root = Home(pool)
    root.putChild(b"sleep", Sleep())
    root.putChild(b"stream", Stream())
    root.putChild(b"guestbook", Guestbook(pool))
    return root
