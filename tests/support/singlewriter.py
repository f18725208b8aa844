"""
A single-writer app, as Synapse and a Buildbot master are: it must never run in
two generations at once.

When it starts it opens an SQLite database, reads the highest id stored and
from then on hands out ids from memory, one per POST, each written as a row
with the request's body; it also claims the C{scheduler} role (a row naming
its PID), and releases it when it stops. Two generations running it at once
hand out the same ids (C{UNIQUE constraint failed}, answered 500) and leave
the role to whichever wrote last.

C{GET /role} answers the PID holding the role, C{GET /slow?seconds=S} answers
after S seconds, anything else the serving PID. The release number is in every
message, so a test can roll out a broken one.

Two forms: L{SINGLE_WRITER_APP}, a service for C{twistd flip --app
writer.makeService}, and L{SINGLE_WRITER_PROGRAM}, a program that runs its own
reactor and opens its database in C{main()}, as Synapse does. L{Poster} is
the client that loads it.
"""

from __future__ import annotations

import http.client
import threading
import time

_COMMON = """
import os, sqlite3, time
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

DB = %(db)r
BROKEN = %(broken)r  # "", "build" or "start"
SPARED = %(spared)r  # a PID "start" does not break (a program run again by execv keeps its PID)

if BROKEN == "build":
    raise RuntimeError("release %(release)s cannot be built")


class Store:
    def open(self):
        self.db = sqlite3.connect(DB, isolation_level=None, timeout=10)
        self.db.execute("create table if not exists rows (id integer primary key, body text)")
        self.db.execute("create table if not exists roles (name text primary key, pid integer)")
        if BROKEN == "start" and os.getpid() != SPARED:
            raise RuntimeError("release %(release)s cannot start its database")
        self.nextId = self.db.execute("select coalesce(max(id), 0) + 1 from rows").fetchone()[0]
        self.db.execute("insert or replace into roles values ('scheduler', ?)", (os.getpid(),))
        # The rest of a start-up (caches, other tables), between reading the
        # highest id and serving: in an overlapping handover the old
        # generation goes on handing out ids meanwhile.
        time.sleep(0.3)

    def close(self):
        self.db.execute(
            "update roles set pid = null where name = 'scheduler' and pid = ?", (os.getpid(),)
        )
        self.db.close()

    def store(self, body):
        rowId, self.nextId = self.nextId, self.nextId + 1
        self.db.execute("insert into rows values (?, ?)", (rowId, body))
        return rowId


class Rows(Resource):
    isLeaf = True

    def __init__(self, store):
        Resource.__init__(self)
        self.store = store

    def render_POST(self, request):
        body = request.content.read().decode()
        try:
            rowId = self.store.store(body)
        except sqlite3.IntegrityError as e:
            request.setResponseCode(500)
            return str(e).encode()
        return ("stored %%d by %%d" %% (rowId, os.getpid())).encode()

    def render_GET(self, request):
        if request.path == b"/role":
            row = self.store.db.execute("select pid from roles where name = 'scheduler'").fetchone()
            return str(row[0] if row else None).encode()
        if request.path == b"/slow":
            def answer():
                request.write(b"slow done")
                request.finish()

            reactor.callLater(float(request.args[b"seconds"][0]), answer)
            return NOT_DONE_YET
        return str(os.getpid()).encode()
"""

SINGLE_WRITER_APP = (
    _COMMON
    + """
from twisted.application import service, strports


class StoreService(service.Service):
    def __init__(self, store):
        self.store = store

    def startService(self):
        self.store.open()
        service.Service.startService(self)

    def stopService(self):
        self.store.close()
        return service.Service.stopService(self)


def makeService():
    top = service.MultiService()
    store = Store()
    StoreService(store).setServiceParent(top)
    strports.service("tcp:%(port)d:interface=127.0.0.1", Site(Rows(store))).setServiceParent(top)
    return top
"""
)

SINGLE_WRITER_PROGRAM = (
    _COMMON
    + """

def main():
    # As Synapse does: the database is opened and the highest id read in main().
    store = Store()
    store.open()
    reactor.addSystemEventTrigger("before", "shutdown", store.close)
    reactor.listenTCP(%(port)d, Site(Rows(store)), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
"""
)


class Poster(threading.Thread):
    """POSTs numbered bodies on one keep-alive connection (reconnecting when closed)."""

    def __init__(self, port: int, name: str, seconds: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.name = name
        self.stored: dict[str, int] = {}  # body -> acknowledged row id
        self.failures: list[str] = []
        self.refused = 0
        self.latencies: list[tuple[float, float]] = []
        """(when it was sent, how long its answer took), for every request."""
        self._halt = threading.Event()
        self._deadline = time.monotonic() + seconds

    def run(self) -> None:
        connection = None
        for sequence in range(100_000):
            if self._halt.is_set() or time.monotonic() > self._deadline:
                break
            body = f"{self.name}-{sequence}"
            sent = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                connection.request("POST", "/rows", body=body)
                response = connection.getresponse()
                answer = response.read().decode()
                if response.status != 200:
                    self.failures.append(f"{response.status}: {answer}")
                else:
                    self.stored[body] = int(answer.split()[1])
            except ConnectionRefusedError:
                self.refused += 1
                connection = None
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{body}: {type(e).__name__}: {e}")
                connection = None
            self.latencies.append((sent, time.monotonic() - sent))
            time.sleep(0.01)
        if connection is not None:
            connection.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
