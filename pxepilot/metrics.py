"""
pxe-pilot's Prometheus metrics, in a registry of its own (two instances in one process,
or pxe-pilot inside another application with metrics of its own, never collide).

Counters of what happens are kept from pxe-pilot's events (L{Metrics} is an event
observer); the rest is read, when scraped, from where it lives, through the plain
mappings and callables the wiring hands over: this module imports no component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from pxepilot.events import AnswerRefused, AnswerServed, DownloadEnded, IEventObserver

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# Route labels: a fixed set, so a scan of random paths cannot grow the series.
ROUTES = frozenset(
    {
        "answer",
        "webhook",
        "hosts",
        "boot.ipxe",
        "menu.ipxe",
        "assets",
        "ipxe",
        "health",
        "metrics",
    }
)


def route_label(postpath: Iterable[bytes]) -> str:
    """
    The route a request's path (below pxe-pilot's root) belongs to.
    """
    first = next(iter(postpath), b"").decode("latin-1")
    if first == "":
        return "status"
    return first if first in ROUTES else "other"


# The answers metric's label for each refusal's outcome, where they differ.
_ANSWER_LABELS = {"rejected-answer": "rejected", "invalid-answer": "invalid"}


@implementer(IEventObserver)
class Metrics:
    """
    Counters kept from events, and collectors that read the rest where it lives.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "pxepilot_http_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.answers = Counter(
            "pxepilot_answers",
            "Answer requests, by outcome (served, installed, no-answer, invalid, "
            "unauthorized, unavailable, bad-request)",
            ["outcome"],
            registry=self.registry,
        )
        self.asset_downloads = Counter(
            "pxepilot_asset_downloads",
            "Asset downloads ended, by whether the whole body was sent",
            ["outcome"],
            registry=self.registry,
        )
        self.asset_bytes = Counter(
            "pxepilot_asset_bytes_sent",
            "Bytes of assets sent over HTTP",
            registry=self.registry,
        )

    def observe(self, event: object) -> None:
        match event:
            case AnswerServed():
                self.answers.labels("served").inc()
            case AnswerRefused(outcome=outcome):
                self.answers.labels(_ANSWER_LABELS.get(outcome, outcome)).inc()
            case DownloadEnded(sent=sent, complete=complete):
                self.asset_downloads.labels("complete" if complete else "incomplete").inc()
                self.asset_bytes.inc(sent)

    def watch_hosts(
        self,
        states: Callable[[], Mapping[str, int]],
        completed: Callable[[], int],
        failed: Callable[[], int],
    ) -> None:
        """
        Hosts by state, and installations completed and failed since start.
        """
        self.registry.register(_HostsCollector(states, completed, failed))

    def watch_host_records(
        self,
        forgotten: Mapping[str, int],
        not_recorded: Callable[[], int],
        not_saved: Callable[[], int] = lambda: 0,
    ) -> None:
        """
        What the host ledger's bounds did since start: hosts forgotten, by reason
        (C{expired}, C{ceiling}), new hosts' events not recorded because it was full, and
        events the store failed to save.
        """
        self.registry.register(
            _CountsCollector(
                "pxepilot_hosts_forgotten",
                "Hosts only seen that were forgotten, by reason (expired: silent for "
                "--host-expiry; ceiling: given up for a newer host at the ledger's ceiling)",
                forgotten,
                label="reason",
            )
        )
        self.registry.register(
            _Reading(
                CounterMetricFamily,
                "pxepilot_hosts_not_recorded",
                "Events of new hosts not recorded: the ledger was at its ceiling with no "
                "host only seen to forget",
                not_recorded,
            )
        )
        self.registry.register(
            _Reading(
                CounterMetricFamily,
                "pxepilot_hosts_events_not_saved",
                "Events kept in memory that the host store failed to save (see the log)",
                not_saved,
            )
        )

    def watch_host_backlog(self, kept: Callable[[], int], dropped: Callable[[], int]) -> None:
        """
        Events kept while the host store cannot be reached, and those dropped because too
        many were kept already.
        """
        self.registry.register(
            _Reading(
                GaugeMetricFamily,
                "pxepilot_hosts_events_kept",
                "Events kept in memory until the host database is back",
                kept,
            )
        )
        self.registry.register(
            _Reading(
                CounterMetricFamily,
                "pxepilot_hosts_events_dropped",
                "Events dropped while the host database was down: more were kept already",
                dropped,
            )
        )

    def watch_tftp(
        self, outcomes: Mapping[str, int], bytes_sent: Callable[[], int], active: Callable[[], int]
    ) -> None:
        """
        TFTP transfers by outcome, bytes acknowledged and transfers now.
        """
        self.registry.register(
            _CountsCollector(
                "pxepilot_tftp_transfers",
                "TFTP transfers ended, by outcome (complete, probe, aborted, timed-out, "
                "too-long, too-slow, evicted, shutdown, failed), and requests turned away "
                "(refused; rate-limited: beyond the address's budget; dropped: no place "
                "free while every new transfer was in its grace period)",
                outcomes,
            )
        )
        self.registry.register(
            _Reading(
                CounterMetricFamily,
                "pxepilot_tftp_bytes_sent",
                "Bytes the TFTP clients acknowledged",
                bytes_sent,
            )
        )
        self.registry.register(
            _Reading(
                GaugeMetricFamily, "pxepilot_tftp_transfers_active", "TFTP transfers now", active
            )
        )

    def watch_http_connections(
        self, closed: Mapping[str, int], open_now: Callable[[], int]
    ) -> None:
        """
        HTTP and HTTPS connections the limits closed, by reason, and connections now.
        """
        self.registry.register(
            _CountsCollector(
                "pxepilot_http_connections_closed",
                "HTTP connections closed or refused by a limit, by reason (per-address-limit, "
                "descriptor-limit, evicted, head-timeout, body-timeout, write-timeout)",
                closed,
                label="reason",
            )
        )
        self.registry.register(
            _Reading(
                GaugeMetricFamily,
                "pxepilot_http_connections_open",
                "HTTP and HTTPS connections now",
                open_now,
            )
        )

    def watch_proxy_dhcp(self, outcomes: Mapping[str, int]) -> None:
        self.registry.register(
            _CountsCollector(
                "pxepilot_proxy_dhcp_packets",
                "proxyDHCP packets by outcome (offered, acked, not-pxe, unsupported-arch, "
                "too-large, ignored, malformed)",
                outcomes,
            )
        )

    def watch_downloads(self, active: Callable[[], int]) -> None:
        self.registry.register(
            _Reading(
                GaugeMetricFamily, "pxepilot_asset_downloads_active", "Asset downloads now", active
            )
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def count_requests(self, inner: IResource) -> IResource:
        """
        C{inner}, counting every request it answers by route and status.
        """
        return _Counted(inner, self.http_requests)


class _Counted(Resource):
    isLeaf = True

    def __init__(self, inner: IResource, counter: Counter) -> None:
        super().__init__()
        self._inner = inner
        self._counter = counter

    def render(self, request: IRequest) -> Any:
        route = route_label(getattr(request, "postpath", []))

        def count(result: object) -> None:
            # A connection lost before the response ended still counts; its failure is
            # no error of ours (returning it would log it as unhandled).
            self._counter.labels(route, str(getattr(request, "code", 0))).inc()

        cast(Request, request).notifyFinish().addBoth(count)
        return self._inner.render(request)


class _Reading(Collector):
    """
    One value, read when scraped: a gauge, or a counter kept elsewhere.
    """

    def __init__(
        self,
        family: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        documentation: str,
        read: Callable[[], float],
    ) -> None:
        self._family = family
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> Iterable[Metric]:
        yield self._family(self._name, self._documentation, value=self._read())


class _CountsCollector(Collector):
    def __init__(
        self, name: str, documentation: str, counts: Mapping[str, int], label: str = "outcome"
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._counts = counts
        self._label = label

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for outcome, number in sorted(self._counts.items()):
            family.add_metric([outcome], number)
        yield family


class _HostsCollector(Collector):
    def __init__(
        self,
        states: Callable[[], Mapping[str, int]],
        completed: Callable[[], int],
        failed: Callable[[], int],
    ) -> None:
        self._states = states
        self._completed = completed
        self._failed = failed

    def collect(self) -> Iterable[Metric]:
        installs = CounterMetricFamily(
            "pxepilot_installs",
            "Installations since start, by outcome: completed (reported by the webhook) or failed",
            labels=["outcome"],
        )
        installs.add_metric(["completed"], self._completed())
        installs.add_metric(["failed"], self._failed())
        yield installs
        hosts = GaugeMetricFamily("pxepilot_hosts", "Known hosts by state", labels=["state"])
        for state, number in self._states().items():
            hosts.add_metric([state], number)
        yield hosts
