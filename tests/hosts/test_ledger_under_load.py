"""
The ledger under load: what is recorded while the store is busy is saved together, a
save that fails fails alone and is counted, and install-once finds an installed machine
by its identity without looking at every host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pxepilot.health import ComponentHealth
from pxepilot.hosts.health import HostsHealth
from pxepilot.hosts.ledger import HostLedger, installed_by_identity
from pxepilot.hosts.model import Event, EventKind, Host
from pxepilot.macs import MacAddress
from pxepilot.metrics import Metrics
from tests.conftest import has_result, result_of
from tests.hosts.strategies import MACS
from tests.hosts.test_ledger import DiskFull, ManualRun, MemoryStore, Wall

A, B, C = MACS


def test_saves_that_wait_are_made_durable_together() -> None:
    """
    What is recorded while the store is busy waits, and is then saved in one
    L{IHostStore.save_many}, in the order recorded; each caller hears of its own save.
    """
    log: list[str] = []
    store = MemoryStore(log=log)
    run = ManualRun(log)
    ledger = HostLedger(store, Clock(), run_blocking=run, wall_clock=Wall())
    first = ledger.record(A, EventKind.TFTP, "boot file sent")
    waiting = [ledger.record(mac, EventKind.SCRIPT, "menu") for mac in (B, C, A)]
    assert len(run.waiting) == 1
    run.run_next()
    assert result_of(first).mac == A
    assert not any(has_result(each) for each in waiting)
    run.run_next()
    assert [result_of(each).mac for each in waiting] == [B, C, A]
    assert log == ["load", "save 1 at once", "save tftp", "save 3 at once"] + ["save script"] * 3
    assert [each.kind for each in store.events[A]] == [EventKind.TFTP, EventKind.SCRIPT]
    assert not run.waiting


def test_an_event_that_cannot_be_saved_fails_alone() -> None:
    """
    When the saves waiting together cannot be made at once, each is made alone: only the
    event the store refuses fails, and the others are saved; the health hears of it.
    """
    store = RefusingStore(refuse=B)
    run = ManualRun(store.log)
    ledger = HostLedger(store, Clock(), run_blocking=run, wall_clock=Wall())
    ledger.note(C, EventKind.TFTP, "boot file sent")
    waiting = [ledger.record(mac, EventKind.SCRIPT, "menu") for mac in (A, B, C)]
    run.run_next()
    run.run_next()
    assert has_result(waiting[0]) and has_result(waiting[2])
    with pytest.raises(DiskFull):
        result_of(waiting[1])
    assert set(store.events) == {A, C}
    assert (ledger.not_saved, ledger.last_failure) == (1, None)


class RefusingStore(MemoryStore):
    """
    A store that cannot save the events of one host.
    """

    def __init__(self, refuse: MacAddress) -> None:
        super().__init__()
        self.refuse = refuse

    def save(self, event: Event, host: Host) -> None:
        if event.mac == self.refuse:
            raise DiskFull(f"cannot save {event.mac}")
        super().save(event, host)

    def save_many(self, saves: Sequence[tuple[Event, Host]]) -> None:
        if any(event.mac == self.refuse for event, _ in saves):
            raise DiskFull("cannot save them all")
        super().save_many(saves)


UUIDS = ("4c4c4544-0042-3010-8057-b4c04f564433", "4c4c4544-0042-3010-8057-b4c04f564434", None)
SERIALS = ("CZ2D1234", "CZ2D5678", None)


@st.composite
def identity_recordings(draw: st.DrawFn) -> tuple[MacAddress, EventKind | None, dict[str, Any]]:
    """
    An event naming one of a few identities, or (kind L{None}) the host forgotten.
    """
    kind = draw(st.sampled_from([*EventKind, None]))
    detail = {"uuid": draw(st.sampled_from(UUIDS)), "serial": draw(st.sampled_from(SERIALS))}
    return draw(st.sampled_from(MACS)), kind, detail


@settings(derandomize=True, database=None, max_examples=60)
@given(history=st.lists(identity_recordings(), max_size=12))
def test_installed_hosts_are_found_by_identity_as_by_looking_at_every_host(
    history: list[tuple[MacAddress, EventKind | None, dict[str, Any]]],
) -> None:
    """
    However hosts are installed, re-armed and forgotten, the ledger finds the installed
    host of a UUID or serial number as looking through every host finds it.
    """
    wall = Wall()
    ledger = HostLedger(MemoryStore(), Clock(), wall_clock=wall)
    for mac, kind, detail in history:
        wall.now += 1
        if kind is None:
            ledger.forget(mac).addErrback(lambda _: None)
        else:
            ledger.note(mac, kind, kind.value, **detail)
        for uuid in UUIDS:
            for serial in SERIALS:
                assert ledger.installed_by_identity(uuid, serial) == installed_by_identity(
                    ledger.hosts.values(), uuid, serial
                )
    reloaded = HostLedger(ledger._store, Clock(), wall_clock=wall)
    for uuid in UUIDS:
        for serial in SERIALS:
            assert reloaded.installed_by_identity(uuid, serial) == installed_by_identity(
                ledger.hosts.values(), uuid, serial
            )


def test_the_health_counts_events_not_saved() -> None:
    """
    An event the store could not save is counted in the host database's health and in
    the metrics, even once saves succeed again (which clears its error): a failure is
    never silent.
    """
    store = MemoryStore()
    ledger = HostLedger(store, Clock(), wall_clock=Wall())
    health = HostsHealth(ledger)
    metrics = Metrics()
    metrics.watch_host_records(
        ledger.forgotten, lambda: ledger.not_recorded, lambda: ledger.not_saved
    )
    assert b"pxepilot_hosts_events_not_saved_total 0.0" in metrics.exposition()
    assert health.check() == ComponentHealth("ok", {"hosts": 0})
    store.failing = True
    ledger.note(A, EventKind.TFTP, "boot file sent")
    degraded = health.check()
    assert degraded.status == "degraded"
    assert degraded.details["events_not_saved"] == 1
    assert "no space left on device" in degraded.details["error"]
    store.failing = False
    ledger.note(A, EventKind.SCRIPT, "menu")
    assert health.check() == ComponentHealth("ok", {"hosts": 1, "events_not_saved": 1})
    assert b"pxepilot_hosts_events_not_saved_total 1.0" in metrics.exposition()


def test_a_timeline_asked_while_saves_wait_holds_them() -> None:
    """
    The store's calls run in the order made: a timeline asked for while events wait
    for the busy store holds them, and a host forgotten meanwhile is removed after its
    earlier events are saved.
    """
    store = MemoryStore()
    run = ManualRun(store.log)
    ledger = HostLedger(store, Clock(), run_blocking=run, wall_clock=Wall())
    ledger.note(A, EventKind.TFTP, "boot file sent")
    ledger.note(A, EventKind.SCRIPT, "menu")
    ledger.note(B, EventKind.SCRIPT, "menu")
    timeline = ledger.timeline(A)
    forgotten = ledger.forget(B)
    while run.waiting:
        run.run_next()
    assert [each.kind for each in result_of(timeline)] == [EventKind.TFTP, EventKind.SCRIPT]
    assert result_of(forgotten).mac == B
    assert B not in store.hosts and B not in store.events
