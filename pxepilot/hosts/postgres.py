"""
Host states and timelines in PostgreSQL, shared by several pxe-pilot instances.

Driven like the SQLite store: its methods block, and the ledger calls them from its one
worker thread, in order. psycopg 3 in its plain, blocking form keeps it so: a second
implementation of L{IHostStore} with the same contract and the same tests, where an
asynchronous driver would have needed a second kind of ledger.

What several instances need of it:
  - Each event is one C{INSERT}; a host's state is derived from the state in the
    database under that host's row lock, never written from an instance's memory, so
    events of one host saved by two instances at once are both applied, in the order
    their transactions took the lock.
  - Every change of a host is announced with C{NOTIFY}; L{PostgresWatch} listens on a
    connection of its own and tells the ledger, which reloads that host.
  - Migrations run under an advisory lock, so instances starting together on an empty
    database create the schema once.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.types.json import Jsonb
from zope.interface import implementer

from pxepilot.hosts.model import Event, Host, advance
from pxepilot.hosts.store import (
    MAX_EVENTS_PER_HOST,
    IRestorableStore,
    StoreError,
    StoreUnavailable,
)
from pxepilot.macs import MacAddress

# The channel every change of a host is announced on; the payload is its MAC address
# and the origin of the store that changed it.
CHANNEL = "pxe_pilot_hosts"
# The advisory lock migrations take: any number, the same in every pxe-pilot.
MIGRATION_LOCK = 0x7078_6570_696C_6F74
# How long connecting may take before the database counts as unreachable.
CONNECT_TIMEOUT = 5
# How often the listening connection asks the server whether it is still there.
KEEPALIVE = 5.0

PgMigration = Callable[[psycopg.Connection[Any]], None]


def masked(url: str) -> str:
    """
    C{url} with its password, if any, replaced by C{***}: fit for a log line.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, place = netloc.rpartition("@")
        if ":" in credentials:
            netloc = f"{credentials.split(':', 1)[0]}:***@{place}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def is_database_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def _password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    found = re.search(r"(?i)password=([^&]*)", parts.query)
    return found.group(1) if found else None


def _create_v1(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "CREATE TABLE hosts ("
        " mac TEXT PRIMARY KEY,"
        " state TEXT NOT NULL,"
        " since DOUBLE PRECISION NOT NULL,"
        " record JSONB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE events ("
        " id BIGSERIAL PRIMARY KEY,"
        " mac TEXT NOT NULL,"
        " at DOUBLE PRECISION NOT NULL,"
        " kind TEXT NOT NULL,"
        " record JSONB NOT NULL)"
    )
    db.execute("CREATE INDEX events_by_host ON events (mac, id)")


# As in the SQLite store: migration N takes the schema from version N to N + 1.
# Append, never edit.
PG_MIGRATIONS: tuple[PgMigration, ...] = (_create_v1,)


@implementer(IRestorableStore)
class PostgresHostStore:
    """
    Hosts in a PostgreSQL database, shared with other pxe-pilot instances.

    One connection, used by one thread at a time; lost, it is opened again by the next
    call. A call that cannot reach the database raises L{StoreUnavailable} and changes
    nothing.

    @ivar url: The libpq URL; its password is never in a message (L{masked}).
    @ivar origin: Names this store in the changes it announces.
    """

    def __init__(
        self,
        url: str,
        migrations: Sequence[PgMigration] = PG_MIGRATIONS,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.where = masked(url)
        self._secret = _password(url)
        self._connect_timeout = connect_timeout
        self._db: psycopg.Connection[Any] | None = None
        self.origin = secrets.token_hex(8)
        try:
            self._migrate(list(migrations))
        except StoreUnavailable as e:
            raise StoreError(str(e)) from None

    # -- connections

    def _hide(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def connect(self) -> psycopg.Connection[Any]:
        """
        A new connection, in autocommit mode (transactions are explicit).

        @raise StoreUnavailable: when the database cannot be reached.
        """
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                # A server cut off by the network (no reset, no FIN) is given up on in
                # about 30 s rather than TCP's two hours; ignored over a Unix socket.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=4,
            )
        except psycopg.Error as e:
            raise StoreUnavailable(
                f"cannot reach the state database {self.where}: {self._hide(str(e).strip())}"
            ) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.closed:
            self._db = self.connect()
        return self._db

    def _call(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """
        Run C{work} in one transaction; the database is tried again once when its
        connection was found closed (a server restarted since the last call), and
        C{work} again when PostgreSQL broke a deadlock by rolling it back.

        @raise StoreUnavailable: when the database cannot be reached.
        """
        for attempt in range(3):
            db = self._connection()
            try:
                with db.transaction():
                    return work(db)
            except psycopg.errors.DeadlockDetected:
                # Should two instances ever lock the same hosts in a circle, PostgreSQL
                # rolls one back; it tries again.
                continue
            except psycopg.OperationalError as e:
                if not db.closed:
                    raise
                self._drop()
                if attempt:
                    raise StoreUnavailable(
                        f"the state database {self.where} is unreachable: "
                        f"{self._hide(str(e).strip())}"
                    ) from None
        raise StoreUnavailable(f"the state database {self.where} keeps failing")

    def _drop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the schema

    def _migrate(self, migrations: list[PgMigration]) -> None:
        def migrate(db: psycopg.Connection[Any]) -> None:
            # Held to the end of the transaction: the first instance migrates, the
            # others wait and then find the schema current.
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS pxe_pilot_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM pxe_pilot_schema").fetchone()
            if row is None:
                db.execute("INSERT INTO pxe_pilot_schema (version) VALUES (0)")
                current = 0
            else:
                current = int(row[0])
            if current > len(migrations):
                raise StoreError(
                    f"the state database {self.where} has schema version {current}, newer "
                    f"than this pxe-pilot knows ({len(migrations)}); run a newer pxe-pilot "
                    "or another --database"
                )
            for version in range(current, len(migrations)):
                # Each step in a savepoint: a failing one leaves the version before it.
                with db.transaction():
                    migrations[version](db)
                    db.execute("UPDATE pxe_pilot_schema SET version = %s", (version + 1,))

        try:
            self._call(migrate)
        except psycopg.Error as e:
            raise StoreError(
                f"{self.where} is not a usable pxe-pilot state database: "
                f"{self._hide(str(e).strip())}"
            ) from None

    @property
    def version(self) -> int:
        row = self._call(lambda db: db.execute("SELECT version FROM pxe_pilot_schema").fetchone())
        return int(row[0])

    # -- IHostStore

    def load(self) -> list[Host]:
        rows = self._call(
            lambda db: db.execute("SELECT record FROM hosts ORDER BY mac").fetchall()
        )
        return [Host.from_json(record) for (record,) in rows]

    def host(self, mac: MacAddress) -> Host | None:
        """
        The host as the database holds it now; L{None} when it holds none.
        """
        row = self._call(
            lambda db: db.execute(
                "SELECT record FROM hosts WHERE mac = %s", (str(mac),)
            ).fetchone()
        )
        return Host.from_json(row[0]) if row is not None else None

    def hosts(self, macs: Sequence[MacAddress]) -> dict[MacAddress, Host]:
        """
        The hosts of C{macs} the database holds now, by MAC address.
        """
        rows = self._call(
            lambda db: db.execute(
                "SELECT record FROM hosts WHERE mac = ANY(%s)", ([str(mac) for mac in macs],)
            ).fetchall()
        )
        found = [Host.from_json(record) for (record,) in rows]
        return {host.mac: host for host in found}

    def save(self, event: Event, host: Host) -> dict[MacAddress, Host]:
        return self.save_many([(event, host)])

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> dict[MacAddress, Host]:
        """
        Save each event and the host after it, at once, in three round trips however
        many there are. The host saved is derived from the database's, not taken from
        C{saves}: another instance may have changed it.

        @return: The hosts as saved, by MAC address.
        """
        if not saves:
            # Nothing to save, but a round trip all the same: whether the database can
            # be reached is what the caller asks.
            self._call(lambda db: db.execute("SELECT 1"))
            return {}
        events: dict[str, list[Event]] = {}
        for event, _ in saves:
            events.setdefault(str(event.mac), []).append(event)
        # In the order of their MAC addresses, so that two instances saving events of
        # the same hosts lock them in the same order.
        macs = sorted(events)

        def insert(db: psycopg.Connection[Any]) -> dict[MacAddress, Host]:
            current = self._lock(db, macs, events)
            saved: dict[str, Host] = {}
            for mac in macs:
                host = current.get(mac)
                for event in events[mac]:
                    host = advance(host, event)
                assert host is not None
                saved[mac] = host
            self._write(db, macs, events, saved)
            return {host.mac: host for host in saved.values()}

        result: dict[MacAddress, Host] = self._call(insert)
        return result

    def _lock(
        self, db: psycopg.Connection[Any], macs: list[str], events: dict[str, list[Event]]
    ) -> dict[str, Host]:
        """
        Lock the rows of C{macs}' hosts, making those nobody has (with what their first
        event makes of them), so that their events are applied in the order their ids
        say; the hosts as they were, for those that existed.
        """
        first = [advance(None, events[mac][0]) for mac in macs]
        created = db.execute(
            "INSERT INTO hosts (mac, state, since, record)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::jsonb[])"
            " ON CONFLICT (mac) DO NOTHING RETURNING mac",
            (
                macs,
                [host.state.value for host in first],
                [host.since for host in first],
                [Jsonb(host.as_json()) for host in first],
            ),
        ).fetchall()
        made = {mac for (mac,) in created}
        rows = db.execute(
            "SELECT mac, record FROM hosts WHERE mac = ANY(%s) ORDER BY mac FOR UPDATE",
            ([mac for mac in macs if mac not in made],),
        ).fetchall()
        return {mac: Host.from_json(record) for mac, record in rows}

    def _write(
        self,
        db: psycopg.Connection[Any],
        macs: list[str],
        events: dict[str, list[Event]],
        saved: dict[str, Host],
    ) -> None:
        # Sent together, answered together: one round trip for all the writes.
        with db.pipeline():
            db.cursor().executemany(
                "INSERT INTO events (mac, at, kind, record) VALUES (%s, %s, %s, %s)",
                [
                    (mac, e.at, e.kind.value, Jsonb(e.as_json()))
                    for mac in macs
                    for e in events[mac]
                ],
            )
            db.cursor().executemany(
                "UPDATE hosts SET state = %s, since = %s, record = %s WHERE mac = %s",
                [
                    (host.state.value, host.since, Jsonb(host.as_json()), mac)
                    for mac, host in saved.items()
                ],
            )
            db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM ("
                " SELECT id, row_number() OVER (PARTITION BY mac ORDER BY id DESC) AS newer"
                " FROM events WHERE mac = ANY(%s)) ranked WHERE newer > %s)",
                (macs, MAX_EVENTS_PER_HOST),
            )
            db.execute(
                "SELECT pg_notify(%s, announced) FROM unnest(%s::text[]) AS announced",
                (CHANNEL, [self._announce(mac) for mac in macs]),
            )

    def _announce(self, mac: str) -> str:
        """
        What announces a change of C{mac}: the MAC address and who made the change
        (L{origin}), so that an instance can skip its own.
        """
        return f"{mac} {self.origin}"

    def remove(self, mac: MacAddress) -> None:
        def remove(db: psycopg.Connection[Any]) -> None:
            db.execute("DELETE FROM events WHERE mac = %s", (str(mac),))
            db.execute("DELETE FROM hosts WHERE mac = %s", (str(mac),))
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._announce(str(mac))))

        self._call(remove)

    def timeline(self, mac: MacAddress, limit: int) -> list[Event]:
        rows = self._call(
            lambda db: db.execute(
                "SELECT record FROM events WHERE mac = %s ORDER BY id DESC LIMIT %s",
                (str(mac), limit),
            ).fetchall()
        )
        return [Event.from_json(mac, record) for (record,) in reversed(rows)]

    def restore(self, host: Host, events: Sequence[Event]) -> None:
        def restore(db: psycopg.Connection[Any]) -> None:
            mac = str(host.mac)
            db.execute("DELETE FROM events WHERE mac = %s", (mac,))
            for event in events:
                db.execute(
                    "INSERT INTO events (mac, at, kind, record) VALUES (%s, %s, %s, %s)",
                    (mac, event.at, event.kind.value, Jsonb(event.as_json())),
                )
            db.execute(
                "INSERT INTO hosts (mac, state, since, record) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (mac) DO UPDATE SET"
                " state = excluded.state, since = excluded.since, record = excluded.record",
                (mac, host.state.value, host.since, Jsonb(host.as_json())),
            )
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._announce(mac)))

        self._call(restore)

    def close(self) -> None:
        self._drop()


class PostgresWatch:
    """
    Listens for changes of hosts made by any instance, on a connection and a thread of
    its own, and tells C{changed} (from that thread) the MAC address of each.

    C{lost} is told why when the connection is lost, C{regained} when it is back (and
    once when first connected): notifications sent meanwhile are lost, so every host
    must be reloaded then. The connection is tried again with a backoff doubling up to
    C{max_backoff} seconds.
    """

    def __init__(
        self,
        store: PostgresHostStore,
        changed: Callable[[str], None],
        lost: Callable[[str], None],
        regained: Callable[[], None],
        max_backoff: float = 10.0,
        poll: float = 0.25,
    ) -> None:
        self._store = store
        self._changed = changed
        self._lost = lost
        self._regained = regained
        self._max_backoff = max_backoff
        self._poll = poll
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pxe-pilot-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """
        Stop listening; returns once the thread has ended.
        """
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                db = self._store.connect()
            except StoreUnavailable as e:
                self._lost(str(e))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            try:
                db.execute(f"LISTEN {CHANNEL}")
                backoff = 0.5
                self._regained()
                for mac in self._listen(db):
                    self._changed(mac)
            except psycopg.Error as e:
                if not self._stopping.is_set():
                    self._lost(
                        f"lost the state database {self._store.where}: "
                        f"{self._store._hide(str(e).strip())}"
                    )
                    self._stopping.wait(backoff)
            finally:
                db.close()

    def _listen(self, db: psycopg.Connection[Any]) -> Iterator[str]:
        asked = time.monotonic()
        while not self._stopping.is_set():
            for notice in db.notifies(timeout=self._poll):
                yield notice.payload
            # A server that went away unannounced (a cut network) is found by asking.
            if time.monotonic() - asked > KEEPALIVE:
                db.execute("SELECT 1")
                asked = time.monotonic()
