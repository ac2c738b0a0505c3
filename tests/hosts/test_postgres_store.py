"""
The PostgreSQL host store, against a real server: the SQLite store's contract (what is
saved comes back, in order, within the retention limit), its versioned schema, instances
starting at once on an empty database, events of one host saved by two instances at
once, a server that goes away and comes back, and a password that is never shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pxepilot.hosts import postgres as postgres_module
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.postgres import PG_MIGRATIONS, PostgresHostStore, masked
from pxepilot.hosts.store import StoreError, StoreUnavailable
from pxepilot.macs import MacAddress
from tests.hosts.postgres_fixture import PostgresServer, running_server

pytestmark = pytest.mark.e2e

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))


def event(mac: MacAddress, at: float, kind: EventKind = EventKind.TFTP, **detail: Any) -> Event:
    return Event(mac=mac, at=at, kind=kind, summary=f"{kind.value} at {at}", detail=detail)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresHostStore]:
    opened = PostgresHostStore(postgres_url)
    yield opened
    opened.close()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """
    A server of the test's own, which it may stop and start.
    """
    with running_server() as server:
        yield server


def test_saved_events_and_hosts_come_back(store: PostgresHostStore, postgres_url: str) -> None:
    """
    Hosts and timelines come back from a second store on the same database, the
    timeline oldest first and cut to the latest events asked for.
    """
    history = [
        event(A, 1.0),
        event(B, 2.0),
        event(A, 3.0, EventKind.ANSWER_SERVED, file="hosts/a.toml", serial="S1"),
        event(A, 4.0, EventKind.INSTALLED, installation={"fqdn": "a.example.com"}),
    ]
    hosts: dict[MacAddress, Host] = {}
    for each in history:
        hosts[each.mac] = advance(hosts.get(each.mac), each)
        store.save(each, hosts[each.mac])
    other = PostgresHostStore(postgres_url)
    try:
        assert other.load() == [hosts[A], hosts[B]]
        assert other.timeline(A, 10) == [history[0], history[2], history[3]]
        assert other.timeline(A, 2) == [history[2], history[3]]
        assert other.hosts([A, B]) == hosts
        other.remove(A)
        assert (other.load(), other.timeline(A, 10)) == ([hosts[B]], [])
        other.remove(A)
    finally:
        other.close()


def test_state_is_derived_from_the_database_not_from_the_caller(
    store: PostgresHostStore,
) -> None:
    """
    The host saved is the database's host after the event, whatever host the caller
    passed: an instance whose memory is behind cannot undo another's change.
    """
    installed = event(A, 1.0, EventKind.INSTALLED)
    store.save(installed, advance(None, installed))
    menu = event(A, 2.0, EventKind.SCRIPT)
    # This caller never heard of the installation.
    store.save(menu, advance(None, menu))
    (host,) = store.load()
    assert (host.state, host.installed_at) == (HostState.INSTALLED, 1.0)


def test_retention_keeps_the_latest_events(
    store: PostgresHostStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Beyond the retention limit, a host's oldest events are dropped.
    """
    monkeypatch.setattr(postgres_module, "MAX_EVENTS_PER_HOST", 3)
    history = [event(A, float(i)) for i in range(6)]
    host = None
    for each in history:
        host = advance(host, each)
        store.save(each, host)
    assert store.timeline(A, 10) == history[-3:]


def test_a_newer_schema_is_refused_with_a_clear_message(postgres_url: str) -> None:
    """
    A database migrated by a newer pxe-pilot is refused, naming both versions; an older
    one is migrated, step by step.
    """

    def add_note(db: psycopg.Connection[Any]) -> None:
        db.execute("ALTER TABLE hosts ADD COLUMN note TEXT")

    newer = PostgresHostStore(postgres_url, migrations=(*PG_MIGRATIONS, add_note))
    assert newer.version == 2
    newer.close()
    newer_than = r"schema version 2, newer than this pxe-pilot knows \(1\)"
    with pytest.raises(StoreError, match=newer_than):
        PostgresHostStore(postgres_url)


def test_instances_starting_at_once_on_an_empty_database_migrate_it_once(
    postgres_url: str,
) -> None:
    """
    Eight instances opening an empty database at the same moment all start, and the
    schema is made once.
    """
    barrier = threading.Barrier(8)
    opened: list[PostgresHostStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresHostStore(postgres_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [store.version for store in opened] == [1] * 8
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM pxe_pilot_schema").fetchone() == (1,)
    for store in opened:
        store.close()


def test_concurrent_events_of_one_host_from_two_instances_are_all_kept(
    postgres_url: str,
) -> None:
    """
    Two instances saving events of the same hosts at once, in batches: every event is
    in the timeline, and each host's state is the one its timeline leads to.
    """
    stores = [PostgresHostStore(postgres_url) for _ in range(2)]
    per_instance = 60

    def storm(index: int) -> None:
        store = stores[index]
        for i in range(0, per_instance, 3):
            batch = []
            for j in range(i, i + 3):
                kind = EventKind.INSTALLED if j % 10 == 7 else EventKind.SCRIPT
                if j % 10 == 3:
                    kind = EventKind.REARMED
                mac = (A, B)[j % 2]
                each = event(mac, 1000.0 + index * 0.5 + j, kind, instance=index, n=j)
                batch.append((each, advance(None, each)))
            store.save_many(batch)

    threads = [threading.Thread(target=storm, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for mac in (A, B):
        timeline = stores[0].timeline(mac, 1000)
        assert sorted((e.detail["instance"], e.detail["n"]) for e in timeline) == sorted(
            (i, n) for i in range(2) for n in range(per_instance) if (A, B)[n % 2] == mac
        )
        expected = None
        for each in timeline:
            expected = advance(expected, each)
        assert stores[1].hosts([mac]) == {mac: expected}
    for store in stores:
        store.close()


def test_a_server_that_goes_away_makes_calls_fail_until_it_is_back(
    own_server: PostgresServer,
) -> None:
    """
    While the server is stopped every call raises L{StoreUnavailable} and changes
    nothing; once it is back the same store works again, without being reopened.
    """
    store = PostgresHostStore(own_server.create_database())
    first = event(A, 1.0)
    store.save(first, advance(None, first))
    own_server.stop()
    second = event(A, 2.0)
    with pytest.raises(StoreUnavailable, match="state database"):
        store.save(second, advance(None, second))
    with pytest.raises(StoreUnavailable):
        store.load()
    own_server.start()
    store.save(second, advance(None, second))
    assert store.timeline(A, 10) == [first, second]
    store.close()


def test_the_password_is_never_shown(postgres_server: PostgresServer) -> None:
    """
    The password of the URL is masked wherever the store names its database.
    """
    assert masked("postgresql://pxe:s3cret@db.example.com/fleet") == (
        "postgresql://pxe:***@db.example.com/fleet"
    )
    assert masked("postgresql://db/fleet?user=pxe&password=s3cret&sslmode=require") == (
        "postgresql://db/fleet?user=pxe&password=***&sslmode=require"
    )
    url = (
        f"postgresql://{postgres_server.superuser}:s3cret@/no_such_database"
        f"?host={postgres_server.directory}"
    )
    with pytest.raises(StoreError) as raised:
        PostgresHostStore(url)
    assert "s3cret" not in str(raised.value)
    assert "no_such_database" in str(raised.value)
