"""
The host ledger: every host's state in memory, every event saved through an
L{IHostStore} on one worker thread, and the clock that fails silent installations.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.neighbours import NeighbourLookup, no_neighbours
from pxepilot.hosts.store import IHostStore
from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], "Deferred[T]"]

# How long an address keeps pointing at the MAC that last asked for a menu from it: a
# boot from menu to installer takes minutes, a DHCP lease usually hours.
ADDRESS_MEMORY = 3600.0


class WorkerThread:
    """
    One thread that runs blocking calls in the order they are given.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work)


def run_here(work: Callable[[], T]) -> Deferred[T]:
    """
    Run blocking calls at once, in the caller's thread: for tests and tools.
    """
    return maybeDeferred(work)


class HostLedger(Service):
    """
    What pxe-pilot knows of every host, kept up to date by its events.

    Reads come from memory. Writes are applied in memory at once and saved in order;
    L{record} fires once the event is durable, so a caller can acknowledge only what is
    saved. L{stopService} waits for every pending save.

    @ivar hosts: Every host, by MAC address.
    @ivar counts: Events recorded since start, by kind.
    """

    def __init__(
        self,
        store: IHostStore,
        clock: IReactorTime,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] = run_here,
        install_timeout: float = 3600.0,
        neighbours: NeighbourLookup = no_neighbours,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._run = run_blocking
        self.install_timeout = install_timeout
        self._neighbours = neighbours
        self._wall_clock = wall_clock
        self.hosts: dict[MacAddress, Host] = {host.mac: host for host in store.load()}
        self.counts: Counter[EventKind] = Counter()
        self._addresses: dict[str, tuple[MacAddress, float]] = {}
        self._pending: set[Deferred[Any]] = set()
        # Why the latest save failed; None once one succeeds again.
        self.last_failure: str | None = None
        self._watch = LoopingCall(self.fail_silent_installations)
        self._watch.clock = clock

    # -- the service

    def startService(self) -> None:
        super().startService()
        start = getattr(self._run, "start", None)
        if start is not None:
            start()
        self._watch.start(min(60.0, self.install_timeout / 4), now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._watch.running:
            self._watch.stop()
        pending = DeferredList(list(self._pending), consumeErrors=True)

        def close(_: object) -> None:
            stop = getattr(self._run, "stop", None)
            if stop is not None:
                stop()
            self._store.close()

        return pending.addCallback(close)

    # -- events

    def now(self) -> float:
        return self._wall_clock()

    def record(
        self, mac: MacAddress, kind: EventKind, summary: str, **detail: Any
    ) -> Deferred[Host]:
        """
        Record an event: the host moves on at once, and the result fires with it once
        the event is saved (or fails when it cannot be).
        """
        event = Event(mac=mac, at=self.now(), kind=kind, summary=summary, detail=detail)
        before = self.hosts.get(mac)
        host = advance(before, event)
        self.hosts[mac] = host
        self.counts[kind] += 1
        log.info(
            "host {mac}: {summary} ({state})",
            mac=str(mac),
            summary=summary,
            state=host.state.value,
            previous_state=before.state.value if before else None,
            event=kind.value,
        )
        saved = self._run(lambda: self._store.save(event, host))
        self._pending.add(saved)

        def done(result: object) -> object:
            self._pending.discard(saved)
            self.last_failure = str(result.value) if isinstance(result, Failure) else None
            return result

        saved.addBoth(done)
        return saved.addCallback(lambda _: host)

    def note(self, mac: MacAddress, kind: EventKind, summary: str, **detail: Any) -> None:
        """
        Record an event nobody waits for; a failure to save it is logged.
        """
        self.record(mac, kind, summary, **detail).addErrback(self._not_saved, mac)

    def _not_saved(self, failure: Failure, mac: MacAddress) -> None:
        log.failure("host {mac}: the event could not be saved", failure, mac=str(mac))

    def rearm(self, mac: MacAddress) -> Deferred[Host]:
        """
        Let a host install again: its next network boot installs, and its next answer
        request is served.
        """
        return self.record(mac, EventKind.REARMED, "re-armed for installation")

    def fail_silent_installations(self) -> None:
        """
        Mark failed every host that was served an answer longer ago than the install
        timeout and has not reported success since.
        """
        now = self.now()
        for host in list(self.hosts.values()):
            if host.state is HostState.INSTALLING and now - host.since > self.install_timeout:
                minutes = round(self.install_timeout / 60)
                self.note(
                    host.mac,
                    EventKind.FAILED,
                    f"no installation report within {minutes} min of the answer",
                    reason="timeout",
                )

    # -- finding hosts

    def host(self, mac: MacAddress) -> Host | None:
        return self.hosts.get(mac)

    def identify(self, macs: Iterable[MacAddress], fallback: MacAddress) -> MacAddress:
        """
        Which of a machine's MAC addresses it is known by: the most recently active known
        one, else C{fallback}.
        """
        known = [self.hosts[mac] for mac in macs if mac in self.hosts]
        if not known:
            return fallback
        return max(known, key=lambda host: host.last_event.at).mac

    def saw_address(self, address: str, mac: MacAddress) -> None:
        """
        Remember that C{mac} asked from C{address}, to know who later asks from it
        without saying (TFTP, asset downloads).
        """
        self._addresses[address] = (mac, self._clock.seconds())

    def mac_at(self, address: str) -> MacAddress | None:
        """
        The MAC address of the machine at C{address}: the one that last asked from it
        recently, else the one in the system's neighbour table.
        """
        seen = self._addresses.get(address)
        if seen is not None:
            mac, when = seen
            if self._clock.seconds() - when <= ADDRESS_MEMORY:
                return mac
            del self._addresses[address]
        return self._neighbours(address)

    def timeline(self, mac: MacAddress, limit: int = 100) -> Deferred[list[Event]]:
        if mac not in self.hosts:
            return succeed([])
        return self._run(lambda: self._store.timeline(mac, limit))

    def summary(self) -> Mapping[str, int]:
        """
        How many hosts are in each state.
        """
        states = Counter(host.state.value for host in self.hosts.values())
        return {state.value: states.get(state.value, 0) for state in HostState}
