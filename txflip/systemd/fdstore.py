"""
systemd's file descriptor store: listening sockets that outlive every process.

With C{FileDescriptorStoreMax=} in the unit, each generation, once it serves,
sends systemd a duplicate of each of its listening sockets (C{FDSTORE=1},
one message per listener, the descriptor as C{SCM_RIGHTS}), named after the
listener (C{FDNAME=}). systemd keeps them while the service runs, restarts
or crashes, and passes them back at the next start in C{LISTEN_FDS} with
their names in C{LISTEN_FDNAMES}; L{txflip.systemd.activation} maps each one
back to its listener by that name. So connections made while no txflip
process runs (after a crash, during C{systemctl restart}) wait in the
kernel's queue instead of being refused.

A listener that was stored and that this generation no longer has is removed
from the store (C{FDSTOREREMOVE=1}). A socket systemd already holds for a
C{.socket} unit is not stored again.

Storing happens when C{NOTIFY_SOCKET} is set and either systemd says the store
exists (C{$FDSTORE}, systemd 254 and later) or C{--fd-store} asks for it.
"""

from __future__ import annotations

from txflip.core.log import log
from txflip.systemd.fdnames import nameForKey
from txflip.systemd.notify import Notifier, NotifySettings


class FileDescriptorStore:
    """
    Stores this generation's listeners in systemd's fd store once it serves.

    @param generation: the L{Generation}: its events say when it serves, its
        registry's active listeners are stored (and a final shutdown lets go of
        them without removing a unix path, since systemd still holds them for
        the next start), and its C{childEnvironment} tells the next generation
        what is stored.
    @param previouslyStored: names stored by an earlier process.
    @param systemdHeld: keys of sockets systemd passed from a C{.socket} unit.
    """

    def __init__(
        self,
        notifier: Notifier,
        generation,
        settings: NotifySettings,
        previouslyStored=(),
        systemdHeld=(),
    ) -> None:
        self._notifier = notifier
        self._registry = generation.registry
        self._generation = generation
        self._settings = settings
        self._previous = set(previouslyStored)
        self._systemdHeld = set(systemdHeld)

    def subscribe(self) -> None:
        self._generation.events.subscribe(self.observe)

    def observe(self, name: str, fields: dict) -> None:
        if name == "serving":
            self.storeAll()

    def storeAll(self) -> None:
        listeners = [each for each in self._registry.active() if each.key not in self._systemdHeld]
        limit = self._settings.fdStoreMax
        if limit is not None and len(listeners) > limit:
            log.warn(
                "systemd's fd store holds {limit} descriptor(s), fewer than the {count} "
                "listeners: raise FileDescriptorStoreMax= in the unit",
                limit=limit,
                count=len(listeners),
            )
        stored = []
        for listener in listeners:
            name = nameForKey(listener.key)
            if self._notifier.send(("FDSTORE", 1), ("FDNAME", name), fds=[listener.port.fileno()]):
                stored.append(name)
                listener.markHeldElsewhere()
            else:
                log.warn("could not store {key} in systemd's fd store", key=listener.key)
        for name in sorted(self._previous - set(stored)):
            self._notifier.send(("FDSTOREREMOVE", 1), ("FDNAME", name))
            log.info("removed {name} from systemd's fd store: no listener has it now", name=name)
        self._previous = set(stored)
        self._generation.childEnvironment.update(
            self._settings.withStored(sorted(stored)).childEnvironment()
        )
        if stored:
            log.info(
                "stored {count} listener(s) in systemd's fd store: {names}",
                count=len(stored),
                names=", ".join(stored),
            )


def install(
    generation,
    settings: NotifySettings,
    activated,
    optIn: bool = False,
) -> FileDescriptorStore | None:
    """
    Store this generation's listeners in systemd's fd store, if there is one.

    @param activated: the L{txflip.systemd.activation.Activation} of this start.
    @param optIn: C{--fd-store} was given (systemd before 254 does not say
        whether the unit has a store).
    """
    if not (optIn or settings.fdStoreMax):
        return None
    if not settings.socket:
        log.warn("--fd-store: NOTIFY_SOCKET is not set (not run by systemd?); storing nothing")
        return None
    try:
        notifier = Notifier(settings.socket)
    except ValueError as e:
        log.warn("not using systemd's fd store: {why}", why=e)
        return None
    store = FileDescriptorStore(
        notifier,
        generation,
        settings,
        previouslyStored={*settings.stored, *activated.stored},
        systemdHeld=activated.keys,
    )
    store.subscribe()
    return store
