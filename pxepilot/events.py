"""
What happens in pxe-pilot, as values, and the one way to hear of it.

Protocols and routes say what happened by publishing an event; whoever needs to know
(the host ledger, the metrics) subscribes. Neither side imports the other: this module
depends on nothing of pxe-pilot but the MAC address value, so the TFTP server, the
proxyDHCP server and the boot routes stay free of the ledger and the metrics.

Every event is a frozen value that carries facts only (addresses, names, numbers, the
outcome as text): what each subscriber makes of it is its own business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)


@frozen
class TransferFinished:
    """
    A TFTP transfer ended.

    @ivar client: The client's IP address.
    @ivar file: The file as the client named it.
    @ivar outcome: How it ended (C{complete}, C{probe}, C{timed-out}, ...).
    @ivar bytes: Bytes the client acknowledged.
    @ivar seconds: How long it took.
    """

    client: str
    file: str
    outcome: str
    bytes: int
    seconds: float


@frozen
class DownloadStarted:
    """
    An asset's body started over HTTP.

    @ivar client: The client's IP address.
    @ivar path: The file, below the assets directory, or C{ipxe/<name>} for a
        file of the TFTP root served over HTTP.
    @ivar length: Bytes to send.
    """

    client: str
    path: str
    length: int


@frozen
class DownloadEnded:
    """
    An asset's body ended, whole or broken off.

    @ivar sent: Bytes sent.
    @ivar complete: Whether that was all of them.
    @ivar seconds: How long it took.
    """

    client: str
    path: str
    length: int
    sent: int
    complete: bool
    seconds: float


@frozen
class BootScriptServed:
    """
    C{boot.ipxe} was fetched over HTTP; it names no machine, only its address does.
    """

    client: str


@frozen
class MenuServed:
    """
    A machine fetched its boot menu.

    @ivar mac: The machine, as the menu's query named it.
    @ivar default: What the menu boots when nobody chooses.
    @ivar reason: Why, for a person.
    @ivar local: Whether that default is the local disk.
    @ivar platform: C{efi}, C{pcbios} or L{None}.
    @ivar memory_mib: The machine's memory, if known.
    """

    client: str
    mac: MacAddress
    default: str
    reason: str
    local: bool
    platform: str | None
    memory_mib: int | None


@frozen
class AnswerServed:
    """
    An installer got its answer file.

    @ivar mac: The host it was served to.
    @ivar source: The file (C{hosts/<file>} or C{default.toml}).
    @ivar identity: What the installer said of the machine (serial, uuid, product,
        client), JSON-ready.
    """

    client: str
    mac: MacAddress
    source: str
    identity: Mapping[str, Any] = field(factory=dict)


@frozen
class AnswerRefused:
    """
    An installer was refused its answer.

    @ivar mac: The host concerned; L{None} when the request named none it could be
        (unauthorised, malformed, or the answers could not be read).
    @ivar code: The HTTP status.
    @ivar outcome: Why, as one word (C{installed}, C{rejected-answer},
        C{invalid-answer}, C{no-answer}, C{unauthorized}, C{bad-request},
        C{unavailable}).
    @ivar summary: One line for the host's timeline.
    @ivar reason: What the installer is told.
    @ivar source: The answer file concerned, if any.
    """

    client: str
    mac: MacAddress | None
    code: int
    outcome: str
    summary: str
    reason: str
    source: str | None = None
    identity: Mapping[str, Any] = field(factory=dict)


@frozen
class InstallationReported:
    """
    The installer's post-installation webhook: a host is installed.

    @ivar mac: The host.
    @ivar installation: What it reported, JSON-ready.
    """

    client: str
    mac: MacAddress
    installation: Mapping[str, Any]
    serial: str | None = None
    uuid: str | None = None


@frozen
class ProxyDHCPReplied:
    """
    proxyDHCP decided what to do with a packet.

    @ivar outcome: C{offered}, C{acked}, C{not-pxe}, C{unsupported-arch},
        C{too-large}, C{ignored} or C{malformed}.
    @ivar mac: The client's hardware address as text, if the packet named one.
    @ivar detail: The firmware and boot file, or why nothing was sent.
    """

    outcome: str
    mac: str | None = None
    detail: str = ""


class IEventObserver(Interface):
    """
    Something that wants to hear of pxe-pilot's events.
    """

    def observe(event: object) -> Deferred[None] | None:
        """
        Handle one event; ignore the kinds it does not know.

        @return: L{None} when done at once, or a L{Deferred} firing once it is done (the
            ledger: once the event is saved), failing if it cannot be.
        """


class IEvents(Interface):
    """
    Where events are published.
    """

    def publish(event: object) -> None:
        """
        Tell every observer, waiting for none; an observer's failure is logged.
        """

    def deliver(event: object) -> Deferred[None]:
        """
        Tell every observer and wait for all of them.

        @return: a L{Deferred} firing once every observer is done, or failing with the
            first observer's failure (not logged: the caller decides what it means).
        """


@implementer(IEvents)
@define
class EventBus:
    """
    Hands each event to its observers, in the order they subscribed.
    """

    _observers: list[IEventObserver] = field(factory=list)

    def subscribe(self, observer: IEventObserver) -> None:
        self._observers.append(observer)

    def publish(self, event: object) -> None:
        for observer in self._observers:
            maybeDeferred(observer.observe, event).addErrback(self._failed, event)

    def deliver(self, event: object) -> Deferred[None]:
        handled = [maybeDeferred(observer.observe, event) for observer in self._observers]
        everyone = DeferredList(handled, fireOnOneErrback=True, consumeErrors=True)
        return everyone.addCallbacks(lambda _: None, _first_failure)

    def _failed(self, failure: Failure, event: object) -> None:
        log.failure("{event} could not be handled", failure, event=type(event).__name__)


def _first_failure(failure: Failure) -> Failure:
    # DeferredList wraps the observer's failure; the caller wants the failure itself.
    inner = getattr(failure.value, "subFailure", None)
    return inner if isinstance(inner, Failure) else failure
