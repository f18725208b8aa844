"""
A single-writer app, as Synapse and a Buildbot master are: it must never run in
two generations at once.

At C{startService} it opens an SQLite database, reads the highest id stored
and from then on hands out ids from memory, one per POST, each written as a
row with the request's body; it also claims the C{scheduler} role (a row
naming its PID), and releases it at C{stopService}. Two generations running it
at once hand out the same ids (C{UNIQUE constraint failed}, answered 500) and
leave the role to whichever wrote last.

C{GET /role} answers the PID holding the role, C{GET /pid} the serving PID.
The release number is in every answer, so a test can roll out a broken one.
"""

from __future__ import annotations

SINGLE_WRITER_APP = """
import os, sqlite3
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site

DB = %(db)r
BROKEN = %(broken)r  # "", "build" or "start"

if BROKEN == "build":
    raise RuntimeError("release %(release)s cannot be built")


class Store(service.Service):
    def startService(self):
        if BROKEN == "start":
            raise RuntimeError("release %(release)s cannot start its database")
        service.Service.startService(self)
        self.db = sqlite3.connect(DB, isolation_level=None, timeout=10)
        self.db.execute("create table if not exists rows (id integer primary key, body text)")
        self.db.execute("create table if not exists roles (name text primary key, pid integer)")
        self.nextId = self.db.execute("select coalesce(max(id), 0) + 1 from rows").fetchone()[0]
        self.db.execute("insert or replace into roles values ('scheduler', ?)", (os.getpid(),))

    def stopService(self):
        self.db.execute(
            "update roles set pid = null where name = 'scheduler' and pid = ?", (os.getpid(),)
        )
        self.db.close()
        return service.Service.stopService(self)

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
            from twisted.internet import reactor
            from twisted.web.server import NOT_DONE_YET

            def answer():
                request.write(b"slow done")
                request.finish()

            reactor.callLater(float(request.args[b"seconds"][0]), answer)
            return NOT_DONE_YET
        return str(os.getpid()).encode()


def makeService():
    top = service.MultiService()
    store = Store()
    store.setServiceParent(top)
    strports.service("tcp:%(port)d:interface=127.0.0.1", Site(Rows(store))).setServiceParent(top)
    return top
"""

SINGLE_WRITER_PROGRAM = """
import os, sqlite3, sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

DB = %(db)r
BROKEN = %(broken)r  # "", "build" or "start"

if BROKEN == "build":
    raise RuntimeError("release %(release)s cannot be imported")


class Rows(Resource):
    isLeaf = True

    def __init__(self, db, nextId):
        Resource.__init__(self)
        self.db = db
        self.nextId = nextId

    def render_POST(self, request):
        body = request.content.read().decode()
        rowId, self.nextId = self.nextId, self.nextId + 1
        try:
            self.db.execute("insert into rows values (?, ?)", (rowId, body))
        except sqlite3.IntegrityError as e:
            request.setResponseCode(500)
            return str(e).encode()
        return ("stored %%d by %%d" %% (rowId, os.getpid())).encode()

    def render_GET(self, request):
        if request.path == b"/role":
            row = self.db.execute("select pid from roles where name = 'scheduler'").fetchone()
            return str(row[0] if row else None).encode()
        return str(os.getpid()).encode()


def main():
    # As Synapse does: the database is opened and the highest id read in main().
    db = sqlite3.connect(DB, isolation_level=None, timeout=10)
    db.execute("create table if not exists rows (id integer primary key, body text)")
    db.execute("create table if not exists roles (name text primary key, pid integer)")
    if BROKEN == "start":
        raise RuntimeError("release %(release)s cannot start its database")
    nextId = db.execute("select coalesce(max(id), 0) + 1 from rows").fetchone()[0]
    db.execute("insert or replace into roles values ('scheduler', ?)", (os.getpid(),))

    def release():
        db.execute(
            "update roles set pid = null where name = 'scheduler' and pid = ?", (os.getpid(),)
        )
        db.close()

    reactor.addSystemEventTrigger("before", "shutdown", release)
    reactor.listenTCP(%(port)d, Site(Rows(db, nextId)), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
"""
