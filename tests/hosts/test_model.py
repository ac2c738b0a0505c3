"""
A host's state follows its events: the transition rules, what each event records, and
replays and JSON round trips that give back the same host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxepilot.hosts.model import (
    Event,
    EventKind,
    Host,
    HostState,
    Installation,
    advance,
    next_state,
)
from tests.hosts.strategies import MACS, events

A = MACS[0]

NEW = HostState.NEW
BOOTING = HostState.BOOTING
INSTALLING = HostState.INSTALLING
INSTALLED = HostState.INSTALLED
LOCAL_BOOT = HostState.LOCAL_BOOT
FAILED = HostState.FAILED

# After a boot event (TFTP, a script, an asset download): a host installing has failed
# (it booted again without reporting success); failed and installed hosts stay as they
# are; every other host is booting.
_AFTER_BOOT = {
    NEW: BOOTING,
    BOOTING: BOOTING,
    INSTALLING: FAILED,
    INSTALLED: INSTALLED,
    LOCAL_BOOT: BOOTING,
    FAILED: FAILED,
}

# The state after each kind of event, from each state; written out from the rules in
# the model's docstrings, not computed from the code under test.
EXPECTED: dict[EventKind, dict[HostState, HostState]] = {
    EventKind.TFTP: _AFTER_BOOT,
    EventKind.SCRIPT: _AFTER_BOOT,
    EventKind.DOWNLOAD_STARTED: _AFTER_BOOT,
    EventKind.DOWNLOAD_ENDED: _AFTER_BOOT,
    # An answer starts an installation from anywhere, a failed one included.
    EventKind.ANSWER_SERVED: dict.fromkeys(HostState, INSTALLING),
    # A refusal changes nothing.
    EventKind.ANSWER_REFUSED: {state: state for state in HostState},
    EventKind.INSTALLED: dict.fromkeys(HostState, INSTALLED),
    # The menu chose the local disk: while installing, the installation has failed.
    EventKind.LOCAL_BOOT: {
        NEW: LOCAL_BOOT,
        BOOTING: LOCAL_BOOT,
        INSTALLING: FAILED,
        INSTALLED: LOCAL_BOOT,
        LOCAL_BOOT: LOCAL_BOOT,
        FAILED: LOCAL_BOOT,
    },
    EventKind.REARMED: dict.fromkeys(HostState, NEW),
    EventKind.FAILED: dict.fromkeys(HostState, FAILED),
}

EVERY_TRANSITION = [(state, kind) for kind in EventKind for state in HostState]


def event(kind: EventKind, at: float = 1000.0, mac: Any = A, **detail: Any) -> Event:
    return Event(mac=mac, at=at, kind=kind, summary=kind.value, detail=detail)


def host_in(state: HostState, since: float = 500.0) -> Host:
    return Host(
        mac=A,
        state=state,
        since=since,
        first_seen=100.0,
        last_event=event(EventKind.SCRIPT, at=since),
    )


def replay(history: Iterable[Event]) -> Host | None:
    host: Host | None = None
    for each in history:
        host = advance(host, each)
    return host


def through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


def test_the_table_covers_every_state_and_kind() -> None:
    """
    The expected table has a row for every event kind and a column for every state, so
    a new state or kind cannot go untested.
    """
    assert set(EXPECTED) == set(EventKind)
    for kind, row in EXPECTED.items():
        assert set(row) == set(HostState), kind


@pytest.mark.parametrize(("state", "kind"), EVERY_TRANSITION, ids=lambda v: v.value)
def test_transition(state: HostState, kind: EventKind) -> None:
    """
    Every state moves on every kind of event as the rules say, and L{advance} agrees
    with L{next_state}.
    """
    assert next_state(state, kind) is EXPECTED[kind][state]
    assert advance(host_in(state), event(kind)).state is EXPECTED[kind][state]


def test_a_host_seen_for_the_first_time() -> None:
    """
    A first event creates the host, as new, first seen then; the event then applies.
    """
    refused = advance(None, event(EventKind.ANSWER_REFUSED, at=42.0))
    assert (refused.mac, refused.state, refused.since, refused.first_seen) == (A, NEW, 42.0, 42.0)
    booting = advance(None, event(EventKind.TFTP, at=43.0))
    assert (booting.state, booting.since, booting.first_seen) == (BOOTING, 43.0, 43.0)
    assert booting.last_event == event(EventKind.TFTP, at=43.0)


def test_since_changes_only_with_the_state() -> None:
    """
    C{since} is when the host entered its state: more events in the same state leave it,
    and C{first_seen} never moves.
    """
    host = replay(
        [
            event(EventKind.TFTP, at=10.0),
            event(EventKind.SCRIPT, at=11.0),
            event(EventKind.DOWNLOAD_ENDED, at=12.0),
        ]
    )
    assert host is not None
    assert (host.state, host.since, host.first_seen, host.last_event.at) == (
        BOOTING,
        10.0,
        10.0,
        12.0,
    )
    served = advance(host, event(EventKind.ANSWER_SERVED, at=20.0, file="default.toml"))
    assert (served.state, served.since, served.first_seen) == (INSTALLING, 20.0, 10.0)


def test_a_new_answer_restarts_the_install_clock() -> None:
    """
    An answer served again while installing restarts C{since}, from which the install
    timeout counts.
    """
    first = advance(None, event(EventKind.ANSWER_SERVED, at=20.0, file="default.toml"))
    again = advance(first, event(EventKind.ANSWER_SERVED, at=50.0, file="default.toml"))
    assert (again.state, again.since) == (INSTALLING, 50.0)


def test_identity_and_answer_are_kept() -> None:
    """
    Serial, UUID and product are taken from any event that names them and kept through
    events that do not (or send them empty); the answer is the last one served.
    """
    host = replay(
        [
            event(EventKind.ANSWER_REFUSED, at=1.0, serial="7XK2LM3", uuid="4c4c", product="pve"),
            event(EventKind.ANSWER_SERVED, at=2.0, file="hosts/b0-7b-25-c1-0a-10.toml"),
            event(EventKind.TFTP, at=3.0, serial="", uuid=None),
        ]
    )
    assert host is not None
    assert (host.serial, host.uuid, host.product) == ("7XK2LM3", "4c4c", "pve")
    assert host.answer == "hosts/b0-7b-25-c1-0a-10.toml"
    again = advance(host, event(EventKind.ANSWER_SERVED, at=4.0, file="default.toml"))
    assert again.answer == "default.toml"


def test_installed_records_the_installation_and_rearm_clears_it() -> None:
    """
    The webhook's report makes the host installed, since then, with what it reported;
    re-arming makes it new and no longer installed.
    """
    report = Installation(
        fqdn="pve01.example.com",
        address="192.0.2.21/24",
        product="pve",
        version="9.1.1",
        macs=("b0:7b:25:c1:0a:10",),
        disks=({"device": "/dev/sda", "serial": "S2HSNX0H5", "size": None, "boot": True},),
        ssh_host_keys=({"type": "ed25519", "fingerprint": "SHA256:x"},),
    )
    installing = advance(None, event(EventKind.ANSWER_SERVED, at=10.0, file="default.toml"))
    installed = advance(
        installing, event(EventKind.INSTALLED, at=600.0, installation=report.as_json())
    )
    assert (installed.state, installed.since, installed.installed_at) == (INSTALLED, 600.0, 600.0)
    assert installed.installed
    assert installed.installation == report

    rebooted = advance(installed, event(EventKind.TFTP, at=700.0))
    assert (rebooted.state, rebooted.installed_at) == (INSTALLED, 600.0)

    rearmed = advance(rebooted, event(EventKind.REARMED, at=800.0))
    assert (rearmed.state, rearmed.since, rearmed.installed_at) == (NEW, 800.0, None)
    assert not rearmed.installed


def test_installed_without_details() -> None:
    """
    A report without details still makes the host installed, with an empty record.
    """
    host = advance(None, event(EventKind.INSTALLED, at=5.0))
    assert (host.state, host.installed_at, host.installation) == (INSTALLED, 5.0, Installation())


def test_an_installation_that_boots_again_has_failed() -> None:
    """
    The story the rules tell: an answer, then a new network boot without a report, is a
    failure, and the failure stays visible while the machine boots, until the next answer.
    """
    host = replay(
        [
            event(EventKind.TFTP, at=1.0),
            event(EventKind.SCRIPT, at=2.0),
            event(EventKind.ANSWER_SERVED, at=3.0, file="default.toml"),
            event(EventKind.TFTP, at=400.0),
            event(EventKind.SCRIPT, at=401.0),
            event(EventKind.DOWNLOAD_STARTED, at=402.0),
            event(EventKind.DOWNLOAD_ENDED, at=403.0),
        ]
    )
    assert host is not None
    assert (host.state, host.since) == (FAILED, 400.0)
    host = advance(host, event(EventKind.ANSWER_SERVED, at=404.0, file="default.toml"))
    assert (host.state, host.since) == (INSTALLING, 404.0)


@settings(derandomize=True, database=None, max_examples=50)
@given(history=st.lists(events(), max_size=8))
def test_replay_gives_the_live_host(history: list[Event]) -> None:
    """
    Replaying events read back from JSON (as the store keeps them) gives the same host
    as applying them as they happened, and every intermediate host survives its own JSON
    round trip unchanged.
    """
    live: Host | None = None
    for each in history:
        live = advance(live, each)
        assert Host.from_json(through_json(live.as_json())) == live
    stored = [Event.from_json(A, through_json(each.as_json())) for each in history]
    assert stored == history
    assert replay(stored) == live


@settings(derandomize=True, database=None, max_examples=50)
@given(each=events())
def test_event_json_round_trip(each: Event) -> None:
    """
    An event read back from its JSON is the same event.
    """
    assert Event.from_json(each.mac, through_json(each.as_json())) == each


def test_event_from_json_without_detail() -> None:
    """
    An event stored without details reads back with empty details.
    """
    read = Event.from_json(A, {"at": 3, "kind": "tftp", "summary": "boot file"})
    assert read == Event(mac=A, at=3.0, kind=EventKind.TFTP, summary="boot file", detail={})


def test_unknown_values_are_refused() -> None:
    """
    A state or kind this version does not know is an error, not a silent default.
    """
    with pytest.raises(ValueError, match="rebooting"):
        Event.from_json(A, {"at": 1, "kind": "rebooting", "summary": ""})
    data = host_in(NEW).as_json()
    data["state"] = "exploded"
    with pytest.raises(ValueError, match="exploded"):
        Host.from_json(data)
