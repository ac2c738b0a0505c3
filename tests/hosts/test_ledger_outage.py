"""
The host ledger when its store cannot be reached, and beside other instances: events
kept in a bounded queue and saved when the store is back, tried again with a backoff,
installation reports refused with 503 meanwhile, the store's health; hosts replaced by
what another instance saved. In memory, on a fake clock.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from pxepilot.hosts.ledger import MAX_BACKOFF, HostLedger
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.shared import ReportsNeedStore, SharedHosts, StoreHealth, open_store
from pxepilot.hosts.store import IHostStore, StoreError, StoreUnavailable
from pxepilot.macs import MacAddress
from pxepilot.metrics import Metrics
from tests.conftest import has_result, result_of

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))


@implementer(IHostStore)
class FlakyStore:
    """
    A store in memory that can be told it is unreachable, and logs each save call.
    """

    def __init__(self) -> None:
        self.hosts: dict[MacAddress, Host] = {}
        self.events: list[Event] = []
        self.down = False
        self.calls: list[int] = []

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("cannot reach the state database postgresql://pxe:***@db/")

    def load(self) -> list[Host]:
        self._check()
        return list(self.hosts.values())

    def hosts_of(self, macs: list[MacAddress]) -> dict[MacAddress, Host]:
        self._check()
        return {mac: self.hosts[mac] for mac in macs if mac in self.hosts}

    def save(self, event: Event, host: Host) -> object:
        return self.save_many([(event, host)])

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> object:
        self.calls.append(len(saves))
        self._check()
        for event, host in saves:
            self.events.append(event)
            self.hosts[host.mac] = host
        return None

    def remove(self, mac: MacAddress) -> None:
        self._check()
        self.hosts.pop(mac, None)

    def timeline(self, mac: MacAddress, limit: int) -> list[Event]:
        self._check()
        return [event for event in self.events if event.mac == mac][-limit:]

    def close(self) -> None:
        pass


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_800_000_000)
    return clock


@pytest.fixture
def ledger(store: FlakyStore, clock: Clock) -> HostLedger:
    return HostLedger(store, clock, wall_clock=clock.seconds, max_backlog=4)


def down(ledger: HostLedger) -> str | None:
    """
    Why the ledger's store is down (read through a call: it changes as the test goes).
    """
    return ledger.store_down


def failure_of(d: Any) -> Any:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "the result did not fail"
    return failures[0]


def test_events_are_kept_while_the_store_is_down_and_saved_when_it_is_back(
    ledger: HostLedger, store: FlakyStore, clock: Clock
) -> None:
    """
    A save that finds the store down fails (nobody is told it is durable) but the event
    is kept; later ones are kept without asking the store; once it is back, all of them
    are saved in one call, in order.
    """
    assert result_of(ledger.record(A, EventKind.SCRIPT, "menu")).state is HostState.BOOTING
    store.down = True
    failure = failure_of(ledger.record(A, EventKind.ANSWER_SERVED, "answer", file="a.toml"))
    assert failure.check(StoreUnavailable)
    assert ledger.store_down is not None and "postgresql://" in ledger.store_down
    failure_of(ledger.record(B, EventKind.INSTALLED, "installed"))
    assert store.calls == [1, 1]
    # Decisions go on from memory.
    assert ledger.host(A) is not None and ledger.host(A).state is HostState.INSTALLING  # type: ignore[union-attr]
    assert [event.kind for event, _ in ledger.backlog] == [
        EventKind.ANSWER_SERVED,
        EventKind.INSTALLED,
    ]

    store.down = False
    clock.advance(1)
    assert down(ledger) is None and ledger.backlog == []
    assert store.calls == [1, 1, 2]
    assert [event.kind for event in store.events] == [
        EventKind.SCRIPT,
        EventKind.ANSWER_SERVED,
        EventKind.INSTALLED,
    ]
    assert store.hosts[B].installed


def test_the_store_is_tried_again_with_a_growing_backoff(
    ledger: HostLedger, store: FlakyStore, clock: Clock
) -> None:
    """
    While the store stays down it is tried again after 1, 2, 4 ... seconds, never
    more than L{MAX_BACKOFF} apart; stopping the ledger cancels the next attempt.
    """
    ledger.startService()
    store.down = True
    failure_of(ledger.record(A, EventKind.SCRIPT, "menu"))
    attempts = []
    for _ in range(8):
        before = len(store.calls)
        waited = 0.0
        while len(store.calls) == before:
            clock.advance(0.5)
            waited += 0.5
        attempts.append(waited)
    assert attempts == [1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    stopped = ledger.stopService()
    assert has_result(stopped)
    assert not [call for call in clock.getDelayedCalls() if call.active()]


def test_the_queue_is_bounded_and_what_it_drops_is_counted(
    ledger: HostLedger, store: FlakyStore, clock: Clock
) -> None:
    """
    Beyond its bound, events are dropped and counted (C{/metrics}), and the rest are
    still saved once the store is back.
    """
    store.down = True
    for i in range(7):
        failure_of(ledger.record(A, EventKind.SCRIPT, f"menu {i}"))
    assert (len(ledger.backlog), ledger.dropped) == (4, 3)
    metrics = Metrics()
    metrics.watch_host_backlog(lambda: len(ledger.backlog), lambda: ledger.dropped)
    text = metrics.exposition().decode()
    assert "pxepilot_hosts_events_kept 4.0" in text
    assert "pxepilot_hosts_events_dropped_total 3.0" in text
    store.down = False
    clock.advance(1)
    assert [event.summary for event in store.events] == [f"menu {i}" for i in range(4)]
    # Saved or dropped, nothing of A waits any more: another instance's change is taken.
    changed = advance(None, Event(A, clock.seconds(), EventKind.INSTALLED, "elsewhere"))
    ledger.replace(A, changed)
    assert ledger.host(A) == changed


def test_a_host_changed_elsewhere_replaces_the_one_in_memory(
    ledger: HostLedger, store: FlakyStore, clock: Clock
) -> None:
    """
    A host another instance installed is found by its serial number here; a host
    another instance forgot is forgotten here; a change announced while an event of the
    host recorded here is not saved yet is ignored (the store's is older).
    """
    installed = advance(
        None, Event(A, clock.seconds(), EventKind.INSTALLED, "installed", {"serial": "SER-1"})
    )
    ledger.replace(A, installed)
    assert ledger.installed_by_identity(None, "SER-1") == installed
    ledger.replace(A, None)
    assert (ledger.host(A), ledger.installed_by_identity(None, "SER-1")) == (None, None)

    store.down = True
    failure_of(ledger.record(B, EventKind.SCRIPT, "menu"))
    ledger.replace(B, None)
    assert ledger.host(B) is not None


def test_shared_hosts_reads_what_is_announced(
    ledger: HostLedger, store: FlakyStore, clock: Clock
) -> None:
    """
    L{SharedHosts} reads the hosts announced and replaces them in the ledger; an
    announcement that is no MAC address is ignored; a lost connection puts the ledger
    in its outage, and a regained one saves what was kept and reloads every host.
    """
    shared = SharedHosts(ledger, store.hosts_of, store.load, lambda *_: _NoWatch(), clock)
    elsewhere = advance(None, Event(A, clock.seconds(), EventKind.INSTALLED, "elsewhere"))
    store.hosts[A] = elsewhere
    shared.changed(str(A))
    shared.changed("not a mac")
    assert ledger.host(A) == elsewhere
    store.down = True
    shared.lost("connection lost")
    assert ledger.store_down == "connection lost"
    # Tried again with nothing kept: still down.
    clock.advance(1)
    assert ledger.store_down is not None and "postgresql://" in ledger.store_down
    failure_of(ledger.record(B, EventKind.SCRIPT, "menu"))
    store.down = False
    del store.hosts[A]
    shared.regained()
    assert down(ledger) is None
    assert set(ledger.hosts) == {B}
    assert shared.refreshed == 2


class _NoWatch:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Inner(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"inner"


def render(resource: Resource, method: bytes, path: bytes) -> tuple[int, bytes]:
    request = DummyRequest(path.split(b"/")[1:])
    request.method = method
    result = resource.render(request)
    assert result is not NOT_DONE_YET
    return request.responseCode or 200, result


def test_reports_are_refused_with_503_while_the_store_is_down(
    ledger: HostLedger, store: FlakyStore
) -> None:
    """
    C{POST /webhook} gets 503 and a Retry-After while the store is down, and reaches
    the routes otherwise; every other request reaches them always. The store's health
    says it is down, and what is kept and dropped.
    """
    gate = ReportsNeedStore(_Inner(), ledger)
    assert render(gate, b"POST", b"/webhook") == (200, b"inner")
    assert StoreHealth(ledger).check().status == "ok"
    store.down = True
    failure_of(ledger.record(A, EventKind.SCRIPT, "menu"))
    code, body = render(gate, b"POST", b"/webhook")
    assert code == 503 and "database is down" in json.loads(body)["error"]
    assert render(gate, b"GET", b"/menu.ipxe") == (200, b"inner")
    assert render(gate, b"POST", b"/answer") == (200, b"inner")
    health = StoreHealth(ledger).check()
    assert health.status == "degraded"
    assert (health.details["database"], health.details["events_kept"]) == ("down", 1)
    assert "***" in health.details["error"]


class MergingStore(FlakyStore):
    """
    A shared store: what it saves holds another instance's installation of A too.
    """

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> dict[MacAddress, Host]:
        super().save_many(saves)
        merged = {}
        for event, _ in saves:
            other = Event(event.mac, event.at, EventKind.INSTALLED, "installed elsewhere")
            merged[event.mac] = advance(advance(None, other), event)
        return merged


def test_the_ledger_takes_the_hosts_a_shared_store_saved(clock: Clock) -> None:
    """
    A shared store returns the hosts as saved, with what other instances did to them:
    the ledger takes them; its own announcements are then skipped, another's are read.
    """
    store = MergingStore()
    ledger = HostLedger(store, clock, wall_clock=clock.seconds)
    host = result_of(ledger.record(A, EventKind.SCRIPT, "menu"))
    assert not host.installed  # what the caller was told: its own event
    saved = ledger.host(A)
    assert saved is not None and saved.installed
    shared = SharedHosts(
        ledger, store.hosts_of, store.load, lambda *_: _NoWatch(), clock, origin="me"
    )
    store.hosts[A] = advance(None, Event(A, clock.seconds(), EventKind.REARMED, "re-armed"))
    shared.changed(f"{A} me")
    assert ledger.host(A) == saved
    shared.changed(f"{A} another")
    assert ledger.host(A) == store.hosts[A]


def test_a_database_without_its_driver_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """
    Without psycopg, C{--database} is refused with what to install; SQLite needs none.
    """
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "pxepilot.hosts.postgres", raising=False)
    with pytest.raises(StoreError, match=r"needs psycopg .* install pxe-pilot\[postgresql\]"):
        open_store(tmp_path / "hosts.sqlite3", "postgresql://pxe@db.example.com/pxe")
    open_store(tmp_path / "hosts.sqlite3", None).close()
