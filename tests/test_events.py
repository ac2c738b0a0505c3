"""
The event seam: the bus, what the protocols publish, and what the ledger and the
metrics make of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pxepilot.dhcp.proxy import ProxyDHCPServer
from pxepilot.events import (
    AnswerRefused,
    AnswerServed,
    BootScriptServed,
    DownloadEnded,
    DownloadStarted,
    EventBus,
    IEventObserver,
    IEvents,
    MenuServed,
    ProxyDHCPReplied,
    TransferFinished,
)
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import EventKind
from pxepilot.hosts.recorder import LedgerRecorder
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.macs import MacAddress
from pxepilot.metrics import Metrics
from pxepilot.tftp.packets import Ack
from tests.conftest import has_result, result_of
from tests.test_tftp_server import Harness

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
CLIENT = "192.0.2.50"


@implementer(IEventObserver)
class Recording:
    """
    An observer that keeps what it is told, and answers as told.
    """

    def __init__(self, answer: Deferred[None] | None = None) -> None:
        self.seen: list[object] = []
        self.answer = answer

    def observe(self, event: object) -> Deferred[None] | None:
        self.seen.append(event)
        return self.answer


@implementer(IEventObserver)
class Broken:
    def observe(self, event: object) -> None:
        raise RuntimeError("observer broke")


# -- the bus


def test_the_bus_provides_its_interface() -> None:
    """
    L{EventBus} is an L{IEvents}; the ledger's recorder and the metrics observe.
    """
    assert verifyObject(IEvents, EventBus())
    assert verifyObject(IEventObserver, Metrics())


def test_publish_tells_every_observer_in_order_despite_a_failure(
    events: list[LogEvent],
) -> None:
    """
    Each observer hears each event, in the order they subscribed; one that fails is
    logged and keeps no other from hearing it.
    """
    bus = EventBus()
    first, last = Recording(), Recording()
    bus.subscribe(first)
    bus.subscribe(Broken())
    bus.subscribe(last)
    bus.publish(BootScriptServed(CLIENT))
    assert first.seen == last.seen == [BootScriptServed(CLIENT)]
    [failure] = [e for e in events if e.get("log_failure") is not None]
    assert failure["event"] == "BootScriptServed"
    assert isinstance(failure["log_failure"].value, RuntimeError)


def test_deliver_waits_for_every_observer() -> None:
    """
    L{EventBus.deliver} fires once the slowest observer is done.
    """
    slow: Deferred[None] = Deferred()
    bus = EventBus()
    bus.subscribe(Recording())
    bus.subscribe(Recording(slow))
    delivered = bus.deliver(BootScriptServed(CLIENT))
    assert not has_result(delivered)
    slow.callback(None)
    assert result_of(delivered) is None


def test_deliver_fails_with_the_observers_own_failure(events: list[LogEvent]) -> None:
    """
    A failing observer fails the delivery with its own exception, which the bus does
    not log: the caller decides what it means (the webhook answers 500).
    """
    bus = EventBus()
    bus.subscribe(Recording(fail(OSError("disk full"))))
    delivered = bus.deliver(BootScriptServed(CLIENT))
    with pytest.raises(OSError, match="disk full"):
        result_of(delivered)
    assert [e for e in events if e.get("log_failure") is not None] == []


# -- what the protocols publish


def test_tftp_publishes_each_finished_transfer(tmp_path: Path) -> None:
    """
    The TFTP server says who fetched what, how it ended and how much was sent.
    """
    (tmp_path / "undionly.kpxe").write_bytes(b"k" * 1000)
    heard = Recording()
    bus = EventBus()
    bus.subscribe(heard)
    h = Harness(tmp_path, events=bus)
    h.request("undionly.kpxe", ("blksize", "512"))
    [port] = h.ports
    port.receive(Ack(0))
    port.receive(Ack(1))
    port.receive(Ack(2))
    [finished] = heard.seen
    assert isinstance(finished, TransferFinished)
    assert (finished.client, finished.file, finished.outcome, finished.bytes) == (
        "192.0.2.50",
        "undionly.kpxe",
        "complete",
        1000,
    )


def test_proxy_dhcp_publishes_what_became_of_a_packet() -> None:
    """
    proxyDHCP publishes each packet's outcome, a malformed one too.
    """
    heard = Recording()
    bus = EventBus()
    bus.subscribe(heard)
    server = ProxyDHCPServer(67, lambda local: "", lambda: "192.0.2.10", events=bus)
    server.addressedDatagramReceived(b"junk", ("0.0.0.0", 68), "192.0.2.10", "", 3)
    [replied] = heard.seen
    assert isinstance(replied, ProxyDHCPReplied)
    assert replied.outcome == "malformed"
    assert server.outcomes["malformed"] == 1


# -- the ledger's recorder


@pytest.fixture
def ledger(tmp_path: Path) -> HostLedger:
    return HostLedger(SQLiteHostStore(tmp_path / "state.sqlite3"), Clock())


def kinds(ledger: HostLedger) -> list[str]:
    return [event.kind.value for event in result_of(ledger.timeline(MAC))]


def test_size_probes_and_shutdowns_stay_off_the_timeline(ledger: HostLedger) -> None:
    """
    Firmware's size probe (a transfer stopped after its options) and transfers ended
    by a shutdown are nothing the host did; a complete transfer is on its timeline.
    """
    recorder = LedgerRecorder(ledger)
    ledger.saw_address(CLIENT, MAC)
    recorder.observe(TransferFinished(CLIENT, "ipxe.efi", "probe", 0, 0.01))
    recorder.observe(TransferFinished(CLIENT, "ipxe.efi", "shutdown", 512, 0.2))
    assert ledger.host(MAC) is None
    recorder.observe(TransferFinished(CLIENT, "ipxe.efi", "complete", 1000, 0.5))
    [entry] = result_of(ledger.timeline(MAC))
    assert entry.kind is EventKind.TFTP
    assert entry.detail["outcome"] == "complete"


def test_events_from_an_unplaced_address_are_on_no_timeline(ledger: HostLedger) -> None:
    """
    TFTP, boot.ipxe and downloads from an address no menu request named are left out.
    """
    recorder = LedgerRecorder(ledger)
    recorder.observe(TransferFinished(CLIENT, "ipxe.efi", "complete", 1000, 0.5))
    recorder.observe(BootScriptServed(CLIENT))
    recorder.observe(DownloadStarted(CLIENT, "proxmox-ve/9.1-1/vmlinuz", 10))
    assert ledger.hosts == {}


def test_a_menu_places_the_address_for_what_follows(ledger: HostLedger) -> None:
    """
    After a machine fetched its menu, the downloads from its address are its own.
    """
    recorder = LedgerRecorder(ledger)
    recorder.observe(MenuServed(CLIENT, MAC, "install-0", "answer file", False, "efi", 4096))
    recorder.observe(DownloadStarted(CLIENT, "proxmox-ve/9.1-1/vmlinuz", 10))
    recorder.observe(DownloadEnded(CLIENT, "proxmox-ve/9.1-1/vmlinuz", 10, 4, False, 2.0))
    assert kinds(ledger) == ["script", "download-started", "download-ended"]
    ended = result_of(ledger.timeline(MAC))[-1]
    assert ended.detail["complete"] is False
    assert "broken off: 4 of 10 bytes" in ended.summary


def test_answers_are_recorded_and_waited_for(ledger: HostLedger) -> None:
    """
    An answer served or refused to a known host is recorded, and the recorder returns
    the save to wait for; a refusal that names no host records nothing.
    """
    recorder = LedgerRecorder(ledger)
    assert recorder.observe(AnswerRefused(CLIENT, None, 401, "unauthorized", "-", "-")) is None
    refused = recorder.observe(
        AnswerRefused(CLIENT, MAC, 404, "no-answer", "no answer file", "none", None, {})
    )
    served = recorder.observe(AnswerServed(CLIENT, MAC, "default.toml", {"client": CLIENT}))
    assert refused is not None and served is not None
    result_of(refused)
    result_of(served)
    assert kinds(ledger) == ["answer-refused", "answer-served"]


# -- the metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_metrics_count_answers_and_downloads_from_events() -> None:
    """
    Answers are counted by outcome (refusals under their metric names), downloads by
    whether they were whole, with the bytes sent.
    """
    metrics = Metrics()
    metrics.observe(AnswerServed(CLIENT, MAC, "default.toml"))
    metrics.observe(AnswerRefused(CLIENT, MAC, 422, "rejected-answer", "-", "-"))
    metrics.observe(AnswerRefused(CLIENT, None, 401, "unauthorized", "-", "-"))
    metrics.observe(DownloadEnded(CLIENT, "x", 10, 10, True, 1.0))
    metrics.observe(DownloadEnded(CLIENT, "x", 10, 4, False, 1.0))
    assert sample(metrics, "pxepilot_answers_total", outcome="served") == 1
    assert sample(metrics, "pxepilot_answers_total", outcome="rejected") == 1
    assert sample(metrics, "pxepilot_answers_total", outcome="unauthorized") == 1
    assert sample(metrics, "pxepilot_asset_downloads_total", outcome="complete") == 1
    assert sample(metrics, "pxepilot_asset_downloads_total", outcome="incomplete") == 1
    assert sample(metrics, "pxepilot_asset_bytes_sent_total") == 14


def test_tftp_metrics_read_the_servers_counts() -> None:
    """
    The TFTP metrics are read from the counts they are given, when scraped.
    """
    metrics = Metrics()
    outcomes = {"complete": 2}
    metrics.watch_tftp(outcomes, lambda: 3000, lambda: 1)
    outcomes["refused"] = 1
    assert sample(metrics, "pxepilot_tftp_transfers_total", outcome="complete") == 2
    assert sample(metrics, "pxepilot_tftp_transfers_total", outcome="refused") == 1
    assert sample(metrics, "pxepilot_tftp_bytes_sent_total") == 3000
    assert sample(metrics, "pxepilot_tftp_transfers_active") == 1
