"""
The host ledger: hosts move on at once, events are acknowledged once saved, silent
installations fail on the clock, and stopping waits for every save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from pxepilot.hosts.ledger import (
    ADDRESS_MEMORY,
    HostLedger,
    NotRecorded,
    WorkerThread,
    run_here,
)
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.store import IHostStore, SQLiteHostStore
from pxepilot.macs import MacAddress
from tests.conftest import has_result, result_of
from tests.hosts.strategies import MACS, details

A, B, C = MACS
START = 1_700_000_000.0


class DiskFull(Exception):
    """
    What a store raises when it cannot save.
    """


@implementer(IHostStore)
class MemoryStore:
    """
    A store in memory that logs what it is asked to do, and can be told to fail saves.
    """

    def __init__(self, hosts: tuple[Host, ...] = (), log: list[str] | None = None) -> None:
        self.hosts = {host.mac: host for host in hosts}
        self.events: dict[MacAddress, list[Event]] = {}
        self.log = log if log is not None else []
        self.failing = False
        self.closed = False

    def load(self) -> list[Host]:
        self.log.append("load")
        return [self.hosts[mac] for mac in sorted(self.hosts)]

    def save(self, event: Event, host: Host) -> None:
        assert not self.closed, "saved after close"
        if self.failing:
            raise DiskFull("no space left on device")
        self.log.append(f"save {event.kind.value}")
        self.events.setdefault(event.mac, []).append(event)
        self.hosts[host.mac] = host

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> None:
        if self.failing:
            raise DiskFull("no space left on device")
        self.log.append(f"save {len(saves)} at once")
        for event, host in saves:
            self.save(event, host)

    def remove(self, mac: MacAddress) -> None:
        self.hosts.pop(mac, None)
        self.events.pop(mac, None)

    def timeline(self, mac: MacAddress, limit: int) -> list[Event]:
        self.log.append(f"timeline {limit}")
        return self.events.get(mac, [])[-limit:] if limit > 0 else []

    def close(self) -> None:
        self.log.append("close")
        self.closed = True


class ManualRun:
    """
    Blocking calls that run only when the test says so, each with its own Deferred.
    """

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.waiting: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((work, d))
        return d

    def run_next(self) -> None:
        work, d = self.waiting.pop(0)
        try:
            result = work()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def start(self) -> None:
        self.log.append("start")

    def stop(self) -> None:
        self.log.append("stop")


class Wall:
    """
    A wall clock the test sets.
    """

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def host(mac: MacAddress, state: HostState, since: float, **fields: Any) -> Host:
    last = Event(mac=mac, at=since, kind=EventKind.SCRIPT, summary="menu")
    return Host(mac=mac, state=state, since=since, first_seen=since, last_event=last, **fields)


def failures(events: list[LogEvent], mac: MacAddress) -> list[Failure]:
    return [e["log_failure"] for e in events if "log_failure" in e and e.get("mac") == str(mac)]


# -- saving


def test_record_moves_the_host_at_once_and_fires_once_saved() -> None:
    """
    The host moves on as soon as the event is recorded; the result fires with it only
    after the store has saved the event.
    """
    store = MemoryStore()
    run = ManualRun(store.log)
    ledger = HostLedger(store, Clock(), run_blocking=run, wall_clock=Wall())
    recorded = ledger.record(A, EventKind.TFTP, "boot file sent", file="ipxe.efi")
    assert ledger.host(A) is not None
    assert ledger.hosts[A].state is HostState.BOOTING
    assert not has_result(recorded)
    assert store.events == {}

    run.run_next()
    assert store.events[A] == [ledger.hosts[A].last_event]
    assert ledger.hosts[A].last_event.detail == {"file": "ipxe.efi"}
    assert ledger.hosts[A].last_event.at == START
    assert result_of(recorded) == ledger.hosts[A] == store.hosts[A]


def test_a_failed_save_fails_record() -> None:
    """
    When the store cannot save, L{HostLedger.record}'s result fails with the store's
    error; the host has still moved on in memory.
    """
    store = MemoryStore()
    store.failing = True
    ledger = HostLedger(store, Clock(), wall_clock=Wall())
    recorded = ledger.record(A, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    with pytest.raises(DiskFull):
        result_of(recorded)
    assert ledger.hosts[A].state is HostState.INSTALLING


def test_a_failed_save_is_logged_by_note(events: list[LogEvent]) -> None:
    """
    L{HostLedger.note} does not raise when the save fails: it logs the failure, naming
    the host, and the next event is saved as usual.
    """
    store = MemoryStore()
    store.failing = True
    ledger = HostLedger(store, Clock(), wall_clock=Wall())
    ledger.note(A, EventKind.TFTP, "boot file sent")
    [failure] = failures(events, A)
    assert failure.check(DiskFull)
    assert ledger.hosts[A].state is HostState.BOOTING

    store.failing = False
    ledger.note(A, EventKind.SCRIPT, "menu")
    assert [each.kind for each in store.events[A]] == [EventKind.SCRIPT]
    assert len(failures(events, A)) == 1


def test_stop_waits_for_pending_saves_then_closes() -> None:
    """
    Stopping fires only after every pending save, failed ones included, has finished;
    then the worker stops and the store is closed, after the last save.
    """
    log: list[str] = []
    store = MemoryStore(log=log)
    run = ManualRun(log)
    ledger = HostLedger(store, Clock(), run_blocking=run, wall_clock=Wall())
    ledger.startService()
    saved = ledger.record(A, EventKind.TFTP, "boot file sent")
    ledger.note(B, EventKind.TFTP, "boot file sent")
    ledger.note(C, EventKind.SCRIPT, "menu")

    stopped = ledger.stopService()
    assert not ledger.running
    assert not has_result(stopped)
    store.failing = True
    run.run_next()
    assert not has_result(stopped)
    assert not store.closed
    store.failing = False
    run.run_next()
    assert result_of(stopped) is None
    assert log == ["load", "start", "save 2 at once", "save tftp", "save script", "stop", "close"]
    with pytest.raises(DiskFull):
        result_of(saved)
    assert ledger.not_saved == 1


def test_stop_with_nothing_pending_closes_at_once() -> None:
    store = MemoryStore()
    ledger = HostLedger(store, Clock(), wall_clock=Wall())
    ledger.startService()
    assert result_of(ledger.stopService()) is None
    assert store.closed


def test_run_here_runs_at_once() -> None:
    """
    L{run_here} gives the result, or the failure, of the call it ran at once.
    """
    assert result_of(run_here(lambda: 42)) == 42
    with pytest.raises(ZeroDivisionError):
        result_of(run_here(lambda: 1 / 0))


def test_rearm() -> None:
    """
    Re-arming an installed host makes it new and no longer installed, and is saved.
    """
    store = MemoryStore()
    wall = Wall()
    ledger = HostLedger(store, Clock(), wall_clock=wall)
    ledger.note(A, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    wall.now += 900
    ledger.note(A, EventKind.INSTALLED, "installed")
    assert ledger.hosts[A].installed_at == START + 900
    wall.now += 100
    rearmed = result_of(ledger.rearm(A))
    assert (rearmed.state, rearmed.since, rearmed.installed_at) == (
        HostState.NEW,
        START + 1000,
        None,
    )
    assert store.events[A][-1].kind is EventKind.REARMED
    assert store.hosts[A] == rearmed == ledger.hosts[A]


def test_counts_by_kind() -> None:
    ledger = HostLedger(MemoryStore(), Clock(), wall_clock=Wall())
    for mac in (A, B, A):
        ledger.note(mac, EventKind.TFTP, "boot file sent")
    ledger.note(A, EventKind.ANSWER_REFUSED, "no answer")
    assert ledger.counts == {EventKind.TFTP: 3, EventKind.ANSWER_REFUSED: 1}


# -- silent installations


def installing_ledger(
    store: MemoryStore, timeout: float = 600.0
) -> tuple[HostLedger, Clock, Callable[[], float]]:
    """
    A ledger whose wall clock is its reactor clock, started at L{START}.
    """
    clock = Clock()
    clock.advance(START)
    ledger = HostLedger(store, clock, install_timeout=timeout, wall_clock=clock.seconds)
    return ledger, clock, clock.seconds


def test_a_silent_installation_fails_after_the_timeout() -> None:
    """
    A host served an answer that reports nothing is marked failed once the install
    timeout has passed, and only then; an installed host is left alone; the failure is
    saved once.
    """
    store = MemoryStore()
    ledger, clock, _ = installing_ledger(store, timeout=600.0)
    ledger.note(A, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    ledger.note(B, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    clock.advance(300)
    ledger.note(B, EventKind.INSTALLED, "installed")
    ledger.startService()

    clock.advance(299)
    assert ledger.hosts[A].state is HostState.INSTALLING
    clock.advance(1)  # exactly the timeout: not yet longer
    assert ledger.hosts[A].state is HostState.INSTALLING
    clock.advance(60)
    assert ledger.hosts[A].state is HostState.FAILED
    assert ledger.hosts[A].since == START + 660
    failed = store.events[A][-1]
    assert (failed.kind, failed.detail) == (EventKind.FAILED, {"reason": "timeout"})
    assert "10 min" in failed.summary

    clock.advance(3600)
    assert [each.kind for each in store.events[A]].count(EventKind.FAILED) == 1
    assert ledger.hosts[B].state is HostState.INSTALLED
    assert EventKind.FAILED not in [each.kind for each in store.events[B]]
    result_of(ledger.stopService())


def test_a_host_installing_before_a_restart_fails_on_start() -> None:
    """
    A host loaded from the store as installing for longer than the timeout is failed as
    soon as the ledger starts.
    """
    store = MemoryStore(
        (
            host(A, HostState.INSTALLING, START - 700),
            host(B, HostState.INSTALLING, START - 500),
        )
    )
    ledger, clock, _ = installing_ledger(store, timeout=600.0)
    ledger.startService()
    assert ledger.hosts[A].state is HostState.FAILED
    assert ledger.hosts[B].state is HostState.INSTALLING
    clock.advance(120)
    assert ledger.hosts[B].state is HostState.FAILED
    result_of(ledger.stopService())


def test_stopping_ends_the_watch() -> None:
    """
    Once stopped, the ledger fails no more installations and leaves no timer behind.
    """
    store = MemoryStore((host(A, HostState.INSTALLING, START - 500),))
    ledger, clock, _ = installing_ledger(store, timeout=600.0)
    ledger.startService()
    result_of(ledger.stopService())
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert ledger.hosts[A].state is HostState.INSTALLING


def test_the_watch_survives_a_failed_save(events: list[LogEvent]) -> None:
    """
    A failure that cannot be saved is logged and the watch goes on failing later
    installations.
    """
    store = MemoryStore()
    ledger, clock, _ = installing_ledger(store, timeout=600.0)
    ledger.note(A, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    ledger.startService()
    store.failing = True
    clock.advance(660)
    assert ledger.hosts[A].state is HostState.FAILED
    assert failures(events, A)

    store.failing = False
    ledger.note(B, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    clock.advance(660)
    assert ledger.hosts[B].state is HostState.FAILED
    assert store.events[B][-1].kind is EventKind.FAILED
    result_of(ledger.stopService())


# -- finding hosts


def test_loading_restores_the_hosts() -> None:
    """
    A ledger starts with every host its store holds.
    """
    hosts = (host(A, HostState.INSTALLED, 10.0), host(B, HostState.FAILED, 20.0))
    ledger = HostLedger(MemoryStore(hosts), Clock(), wall_clock=Wall())
    assert ledger.hosts == {A: hosts[0], B: hosts[1]}
    assert ledger.host(A) == hosts[0]
    assert ledger.host(C) is None


def test_identify_picks_the_most_recently_active_known_mac() -> None:
    """
    Of a machine's MAC addresses, the known one with the latest event names it; with
    none known, the fallback does.
    """
    wall = Wall()
    ledger = HostLedger(MemoryStore(), Clock(), wall_clock=wall)
    ledger.note(A, EventKind.TFTP, "boot file sent")
    wall.now += 10
    ledger.note(B, EventKind.TFTP, "boot file sent")
    assert ledger.identify([A, B, C], fallback=C) == B
    assert ledger.identify([C, A], fallback=C) == A
    assert ledger.identify([C], fallback=C) == C
    assert ledger.identify([], fallback=A) == A
    wall.now += 10
    ledger.note(A, EventKind.SCRIPT, "menu")
    assert ledger.identify([B, A], fallback=C) == A


def test_an_address_is_remembered_for_a_while_then_asked_of_the_neighbours() -> None:
    """
    An address points at the MAC that last asked from it for L{ADDRESS_MEMORY} seconds;
    after that, and for addresses never seen, the neighbour table answers.
    """
    asked: list[str] = []
    table = {"192.0.2.21": B}

    def neighbours(address: str) -> MacAddress | None:
        asked.append(address)
        return table.get(address)

    clock = Clock()
    ledger = HostLedger(MemoryStore(), clock, neighbours=neighbours, wall_clock=Wall())
    ledger.saw_address("192.0.2.21", A)
    clock.advance(ADDRESS_MEMORY)
    assert ledger.mac_at("192.0.2.21") == A
    assert asked == []

    clock.advance(1)
    assert ledger.mac_at("192.0.2.21") == B
    assert ledger.mac_at("192.0.2.99") is None
    assert asked == ["192.0.2.21", "192.0.2.99"]

    ledger.saw_address("192.0.2.21", C)
    clock.advance(ADDRESS_MEMORY / 2)
    ledger.saw_address("192.0.2.21", C)
    clock.advance(ADDRESS_MEMORY / 2 + 1)
    assert ledger.mac_at("192.0.2.21") == C


def test_addresses_of_both_families_in_any_spelling() -> None:
    """
    An IPv6 address, and an IPv4 one as a dual-stack socket spells it, find the machine
    that asked from it however the asking protocol wrote it; the neighbour table is
    asked in the plain spelling.
    """
    asked: list[str] = []

    def neighbours(address: str) -> MacAddress | None:
        asked.append(address)
        return None

    ledger = HostLedger(MemoryStore(), Clock(), neighbours=neighbours, wall_clock=Wall())
    ledger.saw_address("FD00:77:0:0::1F2", A)
    ledger.saw_address("::ffff:192.0.2.21", B)
    assert ledger.mac_at("fd00:77::1f2") == A
    assert ledger.mac_at("192.0.2.21") == B
    assert ledger.mac_at("::ffff:c000:215") == B
    assert asked == []
    assert ledger.mac_at("FD00:77::1F3") is None
    assert asked == ["fd00:77::1f3"]


def test_timeline() -> None:
    """
    A host's timeline comes from the store, latest events last; an unknown host has
    none, without asking the store.
    """
    store = MemoryStore()
    ledger = HostLedger(store, Clock(), wall_clock=Wall())
    for n in range(5):
        ledger.note(A, EventKind.TFTP, f"file {n}")
    assert [each.summary for each in result_of(ledger.timeline(A, limit=2))] == [
        "file 3",
        "file 4",
    ]
    assert store.log[-1] == "timeline 2"
    assert result_of(ledger.timeline(B)) == []
    assert store.log[-1] == "timeline 2"


def test_summary_counts_every_state() -> None:
    """
    The summary has every state, those without hosts at zero.
    """
    hosts = (
        host(A, HostState.INSTALLED, 1.0),
        host(B, HostState.BOOTING, 2.0),
        host(C, HostState.BOOTING, 3.0),
    )
    ledger = HostLedger(MemoryStore(hosts), Clock(), wall_clock=Wall())
    assert ledger.summary() == {
        "new": 0,
        "booting": 2,
        "installing": 0,
        "installed": 1,
        "local-boot": 0,
        "failed": 0,
    }
    assert HostLedger(MemoryStore(), Clock()).summary() == dict.fromkeys(
        (state.value for state in HostState), 0
    )


@st.composite
def recordings(draw: st.DrawFn) -> tuple[MacAddress, EventKind, float, dict[str, Any]]:
    kind = draw(st.sampled_from(EventKind))
    return (
        draw(st.sampled_from(MACS)),
        kind,
        draw(st.floats(min_value=0, max_value=600)),
        draw(details(kind)),
    )


@settings(derandomize=True, database=None, max_examples=40)
@given(history=st.lists(recordings(), max_size=10))
def test_the_saved_events_replay_to_the_live_hosts(
    history: list[tuple[MacAddress, EventKind, float, dict[str, Any]]],
) -> None:
    """
    Whatever events a ledger records, each host it holds is what its saved events replay
    to, what the store saved last, and what a new ledger on the same store loads.
    """
    store = MemoryStore()
    wall = Wall()
    ledger = HostLedger(store, Clock(), wall_clock=wall)
    for mac, kind, delay, detail in history:
        wall.now += delay
        ledger.note(mac, kind, kind.value, **detail)
    for mac, live in ledger.hosts.items():
        assert reduce(advance, store.events[mac], None) == live
    assert store.hosts == ledger.hosts
    assert HostLedger(store, Clock()).hosts == ledger.hosts


# -- on a real thread


class ThreadNotingStore(SQLiteHostStore):
    """
    The SQLite store, noting which thread each save ran in.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[int] = []

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> None:
        self.threads.append(threading.get_ident())
        super().save_many(saves)


@pytest_twisted.ensureDeferred
async def test_saves_run_in_order_on_the_worker_thread(tmp_path: Path) -> None:
    """
    With a L{WorkerThread}, saves run off the reactor thread, one thread for all, in the
    order they were recorded, those that waited for the first together; stopping waits
    for them and closes the database.
    """
    from twisted.internet import reactor

    path = tmp_path / "pxe-pilot.sqlite3"
    store = ThreadNotingStore(path)
    ledger = HostLedger(
        store, reactor, run_blocking=WorkerThread(IReactorFromThreads(reactor), "pxe-pilot-hosts")
    )
    ledger.startService()
    hosts: list[Host] = []
    for n in range(20):
        ledger.record(A, EventKind.TFTP, f"file {n}", n=n).addCallback(hosts.append)
    await ledger.stopService()
    assert [each.last_event.detail["n"] for each in hosts] == list(range(20))
    assert len(set(store.threads)) == 1
    assert store.threads[0] != threading.get_ident()
    assert len(store.threads) == 2

    reopened = SQLiteHostStore(path)
    try:
        assert [each.detail["n"] for each in reopened.timeline(A, 100)] == list(range(20))
        assert reopened.load() == [hosts[-1]]
    finally:
        reopened.close()


# -- bounds: hosts only seen expire, and the ledger has a ceiling


def seen_ledger(
    store: MemoryStore, *, expiry: float = 3600.0, max_hosts: int = 10_000
) -> tuple[HostLedger, Clock]:
    clock = Clock()
    clock.advance(START)
    ledger = HostLedger(
        store,
        clock,
        wall_clock=clock.seconds,
        host_expiry=expiry,
        max_hosts=max_hosts,
    )
    return ledger, clock


def test_a_host_only_seen_is_forgotten_after_the_expiry() -> None:
    """
    A host that only fetched a menu is forgotten, in memory and in the store, once it
    has been silent for longer than the host expiry; one served an answer, one
    installed and one re-armed at the same time are kept; a host seen again before the
    expiry starts its silence over.
    """
    store = MemoryStore()
    ledger, clock = seen_ledger(store, expiry=3600.0)
    ledger.note(A, EventKind.SCRIPT, "menu")
    ledger.note(B, EventKind.SCRIPT, "menu")
    ledger.note(B, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    ledger.note(C, EventKind.TFTP, "boot file sent")
    ledger.note(C, EventKind.INSTALLED, "installed")
    rearmed = MacAddress.parse("b0:7b:25:00:00:99")
    ledger.note(rearmed, EventKind.REARMED, "re-armed")
    late = MacAddress.parse("b0:7b:25:00:00:98")
    ledger.note(late, EventKind.SCRIPT, "menu")
    ledger.startService()

    clock.advance(1800)
    ledger.note(late, EventKind.TFTP, "boot file sent")
    clock.advance(1800)
    assert A in ledger.hosts  # exactly the expiry: not yet longer
    clock.advance(900)
    assert A not in ledger.hosts
    assert A not in store.hosts and A not in store.events
    assert {B, C, rearmed, late} <= set(ledger.hosts)
    assert ledger.forgotten["expired"] == 1

    clock.advance(1800)
    assert late not in ledger.hosts
    assert {B, C, rearmed} == set(ledger.hosts)
    clock.advance(10 * 86400)
    assert {B, C, rearmed} == set(ledger.hosts)
    assert ledger.forgotten == {"expired": 2, "ceiling": 0}
    result_of(ledger.stopService())


def test_a_forgotten_host_seen_again_starts_over() -> None:
    """
    A forgotten host's next event starts a new host, saved after the removal of the old
    one, so the store does not bring the old timeline back.
    """
    store = MemoryStore()
    ledger, clock = seen_ledger(store, expiry=600.0)
    ledger.note(A, EventKind.SCRIPT, "menu")
    ledger.startService()
    clock.advance(700)
    assert A not in ledger.hosts
    ledger.note(A, EventKind.SCRIPT, "menu again")
    assert ledger.hosts[A].first_seen == START + 700
    assert [event.summary for event in store.events[A]] == ["menu again"]
    result_of(ledger.stopService())


def test_sightings_loaded_from_the_store_expire_too() -> None:
    """
    Hosts only seen before a restart are forgotten once silent for the expiry; the
    installed ones are kept.
    """
    store = MemoryStore(
        (
            host(A, HostState.BOOTING, START - 7200),
            host(B, HostState.INSTALLED, START - 7200, installed_at=START - 7200),
            host(C, HostState.BOOTING, START - 60),
        )
    )
    ledger, clock = seen_ledger(store, expiry=3600.0)
    ledger.startService()
    assert set(ledger.hosts) == {B, C}
    clock.advance(3600)
    assert set(ledger.hosts) == {B}
    result_of(ledger.stopService())


def test_at_the_ceiling_the_longest_silent_sighting_gives_way() -> None:
    """
    A new host when the ledger is full takes the place of the host only seen that has
    been silent longest, never of one served an answer.
    """
    store = MemoryStore()
    ledger, clock = seen_ledger(store, max_hosts=3)
    ledger.note(A, EventKind.SCRIPT, "menu")
    clock.advance(1)
    ledger.note(B, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    clock.advance(1)
    ledger.note(C, EventKind.SCRIPT, "menu")
    clock.advance(1)
    ledger.note(A, EventKind.TFTP, "boot file sent")  # A is now the most recent
    newcomer = MacAddress.parse("b0:7b:25:00:00:99")
    ledger.note(newcomer, EventKind.SCRIPT, "menu")
    assert set(ledger.hosts) == {A, B, newcomer}
    assert C not in store.hosts
    assert ledger.forgotten["ceiling"] == 1


def test_a_full_ledger_of_kept_hosts_records_answers_but_not_sightings(
    events: list[LogEvent],
) -> None:
    """
    When every host is one the ledger keeps, a new host's boot events are not recorded
    (counted, logged once, the caller's Deferred fails with NotRecorded), while a new
    host's answer is recorded beyond the ceiling: a decision depends on it.
    """
    store = MemoryStore()
    ledger, _ = seen_ledger(store, max_hosts=2)
    ledger.note(A, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    ledger.note(B, EventKind.INSTALLED, "installed")
    strangers = [MacAddress.parse(f"b0:7b:25:00:01:{n:02x}") for n in range(5)]
    for mac in strangers:
        ledger.note(mac, EventKind.SCRIPT, "menu")
    with pytest.raises(NotRecorded):
        result_of(ledger.record(strangers[0], EventKind.TFTP, "boot file sent"))
    assert set(ledger.hosts) == {A, B}
    assert ledger.not_recorded == 6
    full = [e for e in events if "ledger is full" in str(e.get("log_format", ""))]
    assert len(full) == 1
    assert failures(events, strangers[1]) == []

    ledger.note(C, EventKind.ANSWER_SERVED, "answer", file="default.toml")
    assert ledger.hosts[C].state is HostState.INSTALLING
    assert C in store.hosts


def test_a_database_above_the_ceiling_is_brought_down_to_it() -> None:
    """
    A store that holds more sightings than the ceiling (saved before it was lowered) is
    brought down to it on start, the longest silent first.
    """
    many = [MacAddress.parse(f"b0:7b:25:00:02:{n:02x}") for n in range(6)]
    store = MemoryStore(
        tuple(host(mac, HostState.BOOTING, START - 100 + n) for n, mac in enumerate(many))
    )
    ledger, _ = seen_ledger(store, max_hosts=4)
    ledger.startService()
    assert set(ledger.hosts) == set(many[2:])
    assert ledger.forgotten["ceiling"] == 2
    result_of(ledger.stopService())


def test_pages_cover_every_host_once_in_mac_order() -> None:
    """
    Pages of hosts by MAC address: each page follows the last, none repeats a host, the
    last one says so; a host added between pages appears when it sorts after the page.
    """
    ledger, _ = seen_ledger(MemoryStore())
    macs = [MacAddress.parse(f"b0:7b:25:00:03:{n:02x}") for n in (7, 1, 9, 3, 5)]
    for mac in macs:
        ledger.note(mac, EventKind.SCRIPT, "menu")
    first, after = ledger.page(None, 2)
    assert [host.mac for host in first] == sorted(macs, key=lambda mac: mac.octets)[:2]
    assert after == first[-1].mac
    late = MacAddress.parse("b0:7b:25:00:03:ff")
    ledger.note(late, EventKind.SCRIPT, "menu")
    seen = [host.mac for host in first]
    while after is not None:
        page, after = ledger.page(after, 2)
        seen.extend(host.mac for host in page)
    assert seen == sorted([*macs, late], key=lambda mac: mac.octets)
    whole, following = ledger.page(None, 100)
    assert len(whole) == 6 and following is None
    with pytest.raises(ValueError, match="at least one host"):
        ledger.page(None, 0)
