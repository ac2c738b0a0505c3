"""
Where host states and timelines are kept: behind L{IHostStore}, in SQLite by default,
in PostgreSQL (L{pxepilot.hosts.postgres}) for several instances sharing one fleet.

The store's methods block (they write to disk); L{pxepilot.hosts.ledger.HostLedger}
calls them from one worker thread, in order, never from the reactor.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from zope.interface import Interface, implementer

from pxepilot.hosts.model import Event, Host
from pxepilot.macs import MacAddress

# Older events of a host are dropped beyond this many: a machine that network-boots
# every day for years must not grow the database without end.
MAX_EVENTS_PER_HOST = 500


class StoreError(Exception):
    """
    The store cannot be opened or used; the message says why and where.
    """


class StoreUnavailable(StoreError):
    """
    The store cannot be reached now (a database server down or cut off): the call
    changed nothing, and the same call may succeed later.
    """


# What an installer is told when its report cannot be stored now (with a 503).
REPORT_LATER = "the host database is down; send the report again later"
REPORT_RETRY_SECONDS = 30


class IHostStore(Interface):
    """
    Keeps every host's latest state and its timeline. A shared database can take the
    place of the SQLite file when several pxe-pilot instances serve one fleet.
    """

    def load() -> list[Host]:
        """
        Every host, as last saved.
        """

    def save(event: Event, host: Host) -> object:
        """
        Add C{event} to its host's timeline and save C{host}, the host after it, at once:
        both or neither. Returns when they are durable, what L{save_many} returns.
        """

    def save_many(saves: Sequence[tuple[Event, Host]]) -> object:
        """
        L{save} each pair, in order, at once: all of them or none, durable when it
        returns. The ledger saves what arrived while the disk was busy this way, so
        that one write to the disk makes many events durable.

        Returns L{None}; or, from a store other instances write too, the hosts as
        saved, by MAC address (a C{dict}), which hold their changes as well: the ledger
        takes them.
        """

    def remove(mac: MacAddress) -> None:
        """
        Forget a host and its timeline; a host it does not hold is no error.
        """

    def timeline(mac: MacAddress, limit: int) -> list[Event]:
        """
        The host's latest C{limit} events, oldest first.
        """

    def close() -> None:
        """
        Release the store; no method is called after this.
        """


class IRestorableStore(IHostStore):
    """
    A store that hosts saved elsewhere can be put back into (C{pxe-pilot state import}).
    """

    def restore(host: Host, events: Sequence[Event]) -> None:
        """
        Put C{host} and its timeline C{events} back as they were saved elsewhere, in
        place of any the store holds for it.
        """


Migration = Callable[[sqlite3.Connection], None]


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE hosts ("
        " mac TEXT PRIMARY KEY,"
        " state TEXT NOT NULL,"
        " since REAL NOT NULL,"
        " record TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " mac TEXT NOT NULL,"
        " at REAL NOT NULL,"
        " kind TEXT NOT NULL,"
        " record TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX events_by_host ON events (mac, id)")


# The schema's history: migration N takes a database from version N to N + 1. Append,
# never edit: databases in the field are at every version ever released.
MIGRATIONS: tuple[Migration, ...] = (_create_v1,)


@implementer(IRestorableStore)
class SQLiteHostStore:
    """
    Hosts in one SQLite database file, in WAL mode, synchronous: a saved event survives
    C{kill -9} and power loss, and readers never wait for the writer.
    """

    def __init__(
        self, path: Path, migrations: Sequence[Migration] = MIGRATIONS, timeout: float = 10.0
    ) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One thread at a time uses the connection, but not always the one that
            # opened it (the ledger's worker thread).
            self._db = sqlite3.connect(
                str(path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the state database {path}: {e}") from None
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: the file system does not allow SQLite's WAL mode")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(list(migrations))
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{path} is not a usable pxe-pilot state database: {e}") from None
        except BaseException:
            # Our own StoreError, or a migration's bug: either way the file is not kept
            # open by a store nobody can use.
            self._db.close()
            raise
        self._give_to_directory_owner()

    def _give_to_directory_owner(self) -> None:
        """
        Opened as root (twistd binds its ports as root, then becomes another user), the
        database files would belong to root; give them to the state directory's owner,
        the user pxe-pilot runs as, so that it can reopen them after a restart.
        """
        if os.geteuid() != 0:
            return
        owner = self.path.parent.stat()
        for name in (self.path.name, f"{self.path.name}-wal", f"{self.path.name}-shm"):
            with contextlib.suppress(FileNotFoundError, PermissionError):
                if (self.path.parent / name).stat().st_uid != owner.st_uid:
                    os.chown(self.path.parent / name, owner.st_uid, owner.st_gid)

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: list[Migration]) -> None:
        current = self.version
        if current > len(migrations):
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this pxe-pilot "
                f"knows ({len(migrations)}); run a newer pxe-pilot or another --state"
            )
        for version in range(current, len(migrations)):
            # Each step and its version number commit together, so a crash part way
            # leaves the database at the version before the step.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                migrations[version](self._db)
                self._db.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load(self) -> list[Host]:
        rows = self._db.execute("SELECT record FROM hosts ORDER BY mac").fetchall()
        return [Host.from_json(json.loads(record)) for (record,) in rows]

    def save(self, event: Event, host: Host) -> None:
        self.save_many([(event, host)])

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for event, host in saves:
                self._insert(event, host)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        # One commit, one sync of the log to the disk, for all of them.
        self._db.execute("COMMIT")

    def _insert(self, event: Event, host: Host) -> None:
        mac = str(event.mac)
        self._db.execute(
            "INSERT INTO events (mac, at, kind, record) VALUES (?, ?, ?, ?)",
            (mac, event.at, event.kind.value, json.dumps(event.as_json())),
        )
        self._db.execute(
            "INSERT INTO hosts (mac, state, since, record) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (mac) DO UPDATE SET"
            " state = excluded.state, since = excluded.since, record = excluded.record",
            (str(host.mac), host.state.value, host.since, json.dumps(host.as_json())),
        )
        self._db.execute(
            "DELETE FROM events WHERE mac = ? AND id <= ("
            " SELECT id FROM events WHERE mac = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (mac, mac, MAX_EVENTS_PER_HOST),
        )

    def remove(self, mac: MacAddress) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM events WHERE mac = ?", (str(mac),))
            self._db.execute("DELETE FROM hosts WHERE mac = ?", (str(mac),))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def timeline(self, mac: MacAddress, limit: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT record FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?",
            (str(mac), limit),
        ).fetchall()
        return [Event.from_json(mac, json.loads(record)) for (record,) in reversed(rows)]

    def restore(self, host: Host, events: Sequence[Event]) -> None:
        mac = str(host.mac)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM events WHERE mac = ?", (mac,))
            self._db.executemany(
                "INSERT INTO events (mac, at, kind, record) VALUES (?, ?, ?, ?)",
                [(mac, e.at, e.kind.value, json.dumps(e.as_json())) for e in events],
            )
            self._db.execute(
                "INSERT INTO hosts (mac, state, since, record) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (mac) DO UPDATE SET"
                " state = excluded.state, since = excluded.since, record = excluded.record",
                (mac, host.state.value, host.since, json.dumps(host.as_json())),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
