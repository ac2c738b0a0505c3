"""
The host ledger: every host's state in memory, every event saved through an
L{IHostStore} on one worker thread, and the clock that fails silent installations and
forgets hosts that were only seen.

Anyone on the network can make pxe-pilot see a MAC address (C{GET /menu.ipxe?mac=...}
needs no token), so what mere sightings may hold is bounded twice: a host that was only
seen is forgotten once it has been silent for the host expiry, and the ledger keeps at
most L{MAX_HOSTS} hosts, giving up the longest-silent sighting for a new one. A host that
was served an answer or installed is never forgotten by either.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from pxepilot.address import plain_address
from pxepilot.answers.identity import model_key, serial_key, uuid_key
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.neighbours import NeighbourLookup, no_neighbours
from pxepilot.hosts.store import IHostStore, StoreUnavailable
from pxepilot.hosts.turns import (
    Outcome,
    _StoreCall,
    run_in_turn,
    unreachable,
)
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError

log = logger(__name__)

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], "Deferred[T]"]

# How long an address keeps pointing at the MAC that last asked for a menu from it: a
# boot from menu to installer takes minutes, a DHCP lease usually hours.
ADDRESS_MEMORY = 3600.0

# The most hosts the ledger keeps: a large fleet with room to spare, and a bound on the
# memory, the database and the host list that requests nobody authenticates can fill.
# Hosts that were served an answer or installed are kept even beyond it.
MAX_HOSTS = 10_000

# The most events kept in memory while the store cannot be reached, to be saved when it
# is back: hours of a busy fleet's events; beyond it, events are dropped and counted.
MAX_BACKLOG = 10_000
# The longest wait, in seconds, between two attempts to reach a store that is down.
MAX_BACKOFF = 30.0

# Why a host was forgotten: silent for the host expiry, or given up for a newer one.
EXPIRED = "expired"
CEILING = "ceiling"

# Events after which a host is more than a sighting: it is never forgotten.
_KEPT_KINDS = frozenset({EventKind.ANSWER_SERVED, EventKind.INSTALLED, EventKind.REARMED})


class NotRecorded(Exception):
    """
    An event of a host the ledger does not know was not recorded: the ledger holds
    L{MAX_HOSTS} hosts and none of them is a sighting it may forget.
    """


def sighting_only(host: Host) -> bool:
    """
    Whether all pxe-pilot knows of C{host} is that it was seen: it was never served an
    answer, never installed, and is not waiting since an operator re-armed it. Such a
    host is a network boot that led nowhere, or a request anyone could have made up;
    forgetting it loses a timeline of boot files and menus, nothing a decision depends
    on (a host that was never installed is served as a new one).
    """
    return (
        host.state in (HostState.NEW, HostState.BOOTING, HostState.LOCAL_BOOT)
        and host.answer is None
        and host.installation is None
        and host.installed_at is None
        and host.last_event.kind not in _KEPT_KINDS
    )


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


def installed_by_identity(
    hosts: Iterable[Host], uuid: str | None, serial: str | None
) -> Host | None:
    """
    The installed host among C{hosts} that reported this system UUID, else this serial
    number (the most recently active one if several did); placeholders match nothing.

    A machine is held back by install-once as the host it was installed as, even when
    it now asks with other MAC addresses (a replaced or reordered network card): the
    identity is the machine's, the MAC only the card's.
    """
    installed = [host for host in hosts if host.installed]
    wanted_uuid, wanted_serial = uuid_key(uuid), serial_key(serial)
    for found in (
        [h for h in installed if wanted_uuid and uuid_key(h.uuid) == wanted_uuid],
        [h for h in installed if wanted_serial and serial_key(h.serial) == wanted_serial],
    ):
        if found:
            return max(found, key=lambda host: host.last_event.at)
    return None


class HostLedger(Service):
    """
    What pxe-pilot knows of every host, kept up to date by its events.

    Reads come from memory. Writes are applied in memory at once and saved in order;
    L{record} fires once the event is durable, so a caller can acknowledge only what is
    saved. L{stopService} waits for every pending save.

    The store is called in turn, one call at a time on the worker thread. While a call
    runs, what is recorded waits in a queue, and the saves that gathered there are then
    made durable together (one commit, one sync of the disk): a save waits at most for
    the one before it and its own, and when a rack of machines asks at once the disk is
    synced once per batch rather than once per event.

    @ivar hosts: Every host, by MAC address.
    @ivar counts: Events recorded since start, by kind.
    @ivar host_expiry: Seconds after its last event before a host that was only seen
        (L{sighting_only}) is forgotten.
    @ivar max_hosts: The most hosts kept (L{MAX_HOSTS}); beyond it, the longest-silent
        sighting is forgotten for a new host.
    @ivar forgotten: Hosts forgotten since start, by why: C{expired} or C{ceiling}.
    @ivar not_recorded: Events of new hosts not recorded since start, because the ledger
        was full of hosts it keeps.
    @ivar not_saved: Events recorded in memory since start that the store failed to
        save.
    @ivar store_down: Why the store cannot be reached (L{StoreUnavailable}); L{None}
        while it can. While it is down, events are kept in L{backlog}, at most
        C{max_backlog} of them (L{dropped} counts the rest), and saved when it is back;
        the ledger tries again with a backoff doubling up to L{MAX_BACKOFF} seconds.
    """

    def __init__(
        self,
        store: IHostStore,
        clock: IReactorTime,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] = run_here,
        install_timeout: float = 3600.0,
        neighbours: NeighbourLookup = no_neighbours,
        wall_clock: Callable[[], float] = time.time,
        host_expiry: float = 86400.0,
        max_hosts: int = MAX_HOSTS,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._store = store
        self._clock = clock
        self._run = run_blocking
        self.install_timeout = install_timeout
        self.host_expiry = host_expiry
        self.max_hosts = max_hosts
        self._neighbours = neighbours
        self._wall_clock = wall_clock
        self.hosts: dict[MacAddress, Host] = {host.mac: host for host in store.load()}
        # The hosts that were only seen, longest silent first: the next to forget.
        self._sightings: dict[MacAddress, None] = dict.fromkeys(
            host.mac
            for host in sorted(self.hosts.values(), key=lambda host: host.last_event.at)
            if sighting_only(host)
        )
        # The installed hosts by their identity, so that install-once finds a machine
        # with a new network card without looking at every host of a large fleet.
        self._installed: dict[tuple[str, str], set[MacAddress]] = {}
        for host in self.hosts.values():
            self._index(None, host)
        self.counts: Counter[EventKind] = Counter()
        self.forgotten: Counter[str] = Counter({EXPIRED: 0, CEILING: 0})
        self.not_recorded = 0
        self.not_saved = 0
        self._addresses: dict[str, tuple[MacAddress, float]] = {}
        # The store's calls waiting for their turn, and the batch of them running now.
        self._queue: list[_StoreCall] = []
        self._running: Deferred[list[Outcome]] | None = None
        # Why the latest save failed; None once one succeeds again.
        self.last_failure: str | None = None
        self.store_down: str | None = None
        self.backlog: list[tuple[Event, Host]] = []
        self.max_backlog = max_backlog
        self.dropped = 0
        self._retry: IDelayedCall | None = None
        self._backoff = 1.0
        # Events of each host recorded here and not saved yet: what the store holds of
        # such a host is older than what the ledger does.
        self._unsaved: Counter[MacAddress] = Counter()
        self._watch = LoopingCall(self._tick)
        self._watch.clock = clock

    # -- the service

    def startService(self) -> None:
        super().startService()
        start = getattr(self._run, "start", None)
        if start is not None:
            start()
        self._watch.start(min(60.0, self.install_timeout / 4, self.host_expiry / 4), now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._watch.running:
            self._watch.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

        def close(_: object) -> None:
            if self.backlog:
                log.error(
                    "stopped with {count} events the host store could not save: they are lost",
                    count=len(self.backlog),
                )
            stop = getattr(self._run, "stop", None)
            if stop is not None:
                stop()
            self._store.close()

        # Calls run in turn: once a last one has had its turn, every save before it has.
        return self._in_turn(None, lambda: None).addBoth(close)

    # -- the store's calls, in turn

    def _in_turn(self, save: tuple[Event, Host] | None, call: Callable[[], T]) -> Deferred[T]:
        """
        Run C{call} of the store after every call before it; L{None} for C{save}, or
        the event and host C{call} saves, to save it with the others waiting.
        """
        waiting = _StoreCall(save, call, Deferred())
        self._queue.append(waiting)
        if self._running is None:
            self._hand_over()
        return waiting.done

    def _hand_over(self) -> None:
        """
        Give the worker thread every call waiting.
        """
        calls, self._queue = self._queue, []
        store = self._store
        running: Deferred[list[Outcome]] = self._run(lambda: run_in_turn(store, calls))
        self._running = running
        running.addBoth(self._ran, calls)

    def _ran(self, outcomes: list[Outcome] | Failure, calls: list[_StoreCall]) -> None:
        self._running = None
        if isinstance(outcomes, Failure):
            # The worker could not run them at all.
            outcomes = [(False, outcomes)] * len(calls)
        if self._queue:
            self._hand_over()
        for call, (ok, value) in zip(calls, outcomes, strict=True):
            if call.save is not None:
                self.last_failure = None if ok else str(getattr(value, "value", value))
                self.not_saved += not ok
                if not ok and unreachable(value):
                    self._keep(call.save)
                    self.store_lost(str(getattr(value, "value", value)))
                else:
                    self._unsaved[call.save[0].mac] -= 1
                if ok and isinstance(value, dict):
                    # A shared store's hosts as saved, with other instances' changes.
                    mac = call.save[0].mac
                    self.replace(mac, value.get(mac, self.hosts.get(mac)))
            if ok:
                call.done.callback(value)
            else:
                call.done.errback(value if isinstance(value, Failure) else Failure(value))

    # -- events

    def now(self) -> float:
        return self._wall_clock()

    def record(
        self, mac: MacAddress, kind: EventKind, summary: str, **detail: Any
    ) -> Deferred[Host]:
        """
        Record an event: the host moves on at once, and the result fires with it once
        the event is saved (or fails when it cannot be).

        A new host when the ledger is full takes the place of the longest-silent host
        that was only seen; when there is none, an answer or an installation is recorded
        all the same, and any other event is not (the result fails with L{NotRecorded}).
        """
        before = self.hosts.get(mac)
        if before is None and len(self.hosts) >= self.max_hosts and not self._make_room(kind):
            if not self.not_recorded:
                log.warn(
                    "the host ledger is full ({count} hosts, none of them only seen): "
                    "new hosts' boot events are not recorded",
                    count=len(self.hosts),
                )
            self.not_recorded += 1
            return fail(NotRecorded(f"{mac}: the host ledger is full"))
        event = Event(mac=mac, at=self.now(), kind=kind, summary=summary, detail=detail)
        host = advance(before, event)
        self.hosts[mac] = host
        self._index(before, host)
        self._sightings.pop(mac, None)
        if sighting_only(host):
            self._sightings[mac] = None
        self.counts[kind] += 1
        log.info(
            "host {mac}: {summary} ({state})",
            mac=str(mac),
            summary=summary,
            state=host.state.value,
            previous_state=before.state.value if before else None,
            event=kind.value,
        )
        self._unsaved[mac] += 1
        if self.store_down is not None:
            # Kept to be saved when the store is back; not durable, so not acknowledged.
            self._keep((event, host))
            self.not_saved += 1
            return fail(StoreUnavailable(self.store_down))
        store = self._store
        saved = self._in_turn((event, host), lambda: store.save(event, host))
        return saved.addCallback(lambda _: host)

    # -- a store that cannot be reached

    def _keep(self, save: tuple[Event, Host]) -> None:
        if len(self.backlog) < self.max_backlog:
            self.backlog.append(save)
            return
        if not self.dropped:
            log.error(
                "{count} events wait for the host store to be back: newer ones are dropped",
                count=len(self.backlog),
            )
        self.dropped += 1
        self._unsaved[save[0].mac] -= 1

    def store_lost(self, reason: str) -> None:
        """
        The store cannot be reached: keep events until it can, and try it again later.
        """
        if self.store_down is None:
            log.error(
                "the host store is down, events are kept until it is back: {reason}", reason=reason
            )
        self.store_down = reason
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(self._backoff, self.store_regained)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def store_regained(self) -> Deferred[None]:
        """
        Try the store again: save the events kept while it was down, in one call. The
        result fires once they are saved, or once the store is found down again.
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.store_down is None and not self.backlog:
            return succeed(None)
        kept, self.backlog = self.backlog, []
        store = self._store
        # Out of the saves' way, as a call of its own: its failure is not theirs.
        # With nothing kept, saving nothing still asks the store whether it is back.
        flushed = self._in_turn(None, lambda: store.save_many(kept))

        def saved(result: object) -> None:
            for event, _host in kept:
                self._unsaved[event.mac] -= 1
            if isinstance(result, dict):
                for mac, host in result.items():
                    self.replace(mac, host)
            if self.store_down is not None:
                log.info("the host store is back; {count} events kept were saved", count=len(kept))
            self.store_down = self.last_failure = None
            self._backoff = 1.0
            if self.backlog:
                self.store_regained()

        def failed(failure: Failure) -> None:
            self.backlog[:0] = kept
            self.store_lost(str(failure.value))

        return flushed.addCallbacks(saved, failed)

    def replace(self, mac: MacAddress, host: Host | None) -> None:
        """
        Take C{host} as C{mac}'s state (L{None}: forgotten), as the store holds it after
        a change another instance made. Ignored while an event of that host recorded here
        is not saved: the store's is then older, and a newer one will be announced.
        """
        if self._unsaved[mac] > 0:
            return
        del self._unsaved[mac]
        before = self.hosts.pop(mac, None)
        self._index(before, None)
        self._sightings.pop(mac, None)
        if host is not None:
            self.hosts[mac] = host
            self._index(None, host)
            if sighting_only(host):
                self._sightings[mac] = None

    def in_turn(self, call: Callable[[], T]) -> Deferred[T]:
        """
        Run C{call} (of the store) on the worker thread, after every call before it.
        """
        return self._in_turn(None, call)

    def note(self, mac: MacAddress, kind: EventKind, summary: str, **detail: Any) -> None:
        """
        Record an event nobody waits for; a failure to save it is logged. One not
        recorded because the ledger is full is only counted: logging each would let
        anyone flood the log.
        """
        self.record(mac, kind, summary, **detail).addErrback(self._not_saved, mac)

    def _not_saved(self, failure: Failure, mac: MacAddress) -> None:
        if failure.check(NotRecorded):
            return
        log.failure("host {mac}: the event could not be saved", failure, mac=str(mac))

    def _make_room(self, kind: EventKind) -> bool:
        """
        Forget the longest-silent sighting, for a new host's event of C{kind}; whether
        that event may be recorded.
        """
        if self._sightings:
            self._forget([next(iter(self._sightings))], CEILING)
            return True
        return kind in _KEPT_KINDS

    def forget_expired(self) -> None:
        """
        Forget every host that was only seen and has been silent longer than the host
        expiry: in memory at once, in the store on the worker thread.
        """
        horizon = self.now() - self.host_expiry
        expired: list[MacAddress] = []
        # Longest silent first: the first one still recent ends the search.
        for mac in self._sightings:
            if self.hosts[mac].last_event.at >= horizon:
                break
            expired.append(mac)
        if expired:
            self._forget(expired, EXPIRED)
            log.info(
                "forgot {count} hosts only seen, silent for more than {seconds} s",
                count=len(expired),
                seconds=round(self.host_expiry),
            )

    def _forget(self, macs: Sequence[MacAddress], reason: str) -> None:
        for mac in macs:
            self._index(self.hosts.pop(mac), None)
            del self._sightings[mac]
        self.forgotten[reason] += len(macs)
        self._remove(macs).addErrback(
            lambda failure: log.failure(
                "{count} forgotten hosts could not be removed from the store",
                failure,
                count=len(macs),
            )
        )

    def _remove(self, macs: Sequence[MacAddress]) -> Deferred[None]:
        """
        Remove C{macs} from the store; the result fires once they are removed.
        """

        def remove() -> None:
            for mac in macs:
                self._store.remove(mac)

        # In line with the saves: an event of the same MAC recorded after this is saved
        # after the removal, as the start of a new host.
        return self._in_turn(None, remove)

    def forget(self, mac: MacAddress) -> Deferred[Host]:
        """
        Forget a host because an operator asked: its state and timeline, in memory at
        once, in the store on the worker thread. Whatever its state: a host forgotten
        while installing, or once installed, is a new host at its next event, so with
        install once its next network boot installs again.

        The result fires with the host as it was once it is removed from the store, and
        fails with L{KeyError} for a host the ledger does not know.
        """
        host = self.hosts.pop(mac, None)
        if host is None:
            return fail(KeyError(str(mac)))
        self._index(host, None)
        self._sightings.pop(mac, None)
        return self._remove([mac]).addCallback(lambda _: host)

    def rearm(self, mac: MacAddress) -> Deferred[Host]:
        """
        Let a host install again: its next network boot installs, and its next answer
        request is served.
        """
        return self.record(mac, EventKind.REARMED, "re-armed for installation")

    def _tick(self) -> None:
        self.fail_silent_installations()
        self.forget_expired()
        # A database from before the ceiling, or a lower one, may hold more.
        excess = min(len(self.hosts) - self.max_hosts, len(self._sightings))
        if excess > 0:
            self._forget(list(self._sightings)[:excess], CEILING)

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

    def installed_by_identity(self, uuid: str | None, serial: str | None) -> Host | None:
        """
        The installed host that reported this system UUID, else this serial number (the
        most recently active one if several did); placeholders match nothing.
        """
        for kind, key in (("uuid", uuid_key(uuid)), ("serial", serial_key(serial))):
            macs = self._installed.get((kind, key)) if key is not None else None
            if macs:
                return installed_by_identity([self.hosts[mac] for mac in macs], uuid, serial)
        return None

    def _index(self, before: Host | None, after: Host | None) -> None:
        """
        Keep L{_installed} up to date as a host changes from C{before} to C{after}
        (L{None}: not in the ledger).
        """
        for host, keep in ((before, False), (after, True)):
            if host is None or not host.installed:
                continue
            for kind, key in (("uuid", uuid_key(host.uuid)), ("serial", serial_key(host.serial))):
                if key is None:
                    continue
                macs = self._installed.setdefault((kind, key), set())
                if keep:
                    macs.add(host.mac)
                else:
                    macs.discard(host.mac)
                    if not macs:
                        del self._installed[(kind, key)]

    def find(self, text: str) -> list[Host]:
        """
        The hosts C{text} names: by MAC address, else by system UUID, serial number or
        model, most recently active first.
        """
        try:
            mac = MacAddress.parse(text)
        except MacAddressError:
            pass
        else:
            host = self.hosts.get(mac)
            return [host] if host is not None else []
        uuid, serial, model = uuid_key(text), serial_key(text), model_key(text)
        found = [
            host
            for host in self.hosts.values()
            if (uuid is not None and uuid_key(host.uuid) == uuid)
            or (serial is not None and serial_key(host.serial) == serial)
            or (model is not None and model_key(host.model) == model)
        ]
        return sorted(found, key=lambda host: host.last_event.at, reverse=True)

    def saw_address(self, address: str, mac: MacAddress) -> None:
        """
        Remember that C{mac} asked from C{address}, to know who later asks from it
        without saying (TFTP, asset downloads). An address is kept in its plain form,
        so that however a protocol spelled it (C{::ffff:10.0.0.5}, upper-case IPv6),
        the same machine is found.
        """
        self._addresses[plain_address(address)] = (mac, self._clock.seconds())

    def mac_at(self, address: str) -> MacAddress | None:
        """
        The MAC address of the machine at C{address}: the one that last asked from it
        recently, else the one in the system's neighbour table.
        """
        address = plain_address(address)
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
        # In turn: the timeline holds every event recorded before it was asked for.
        store = self._store
        return self._in_turn(None, lambda: store.timeline(mac, limit))

    def page(self, after: MacAddress | None, limit: int) -> tuple[list[Host], MacAddress | None]:
        """
        Up to C{limit} hosts in the order of their MAC addresses, from the first after
        C{after} (from the first of all for L{None}); and the C{after} of the next page,
        or L{None} when this one is the last.
        """
        if limit < 1:
            raise ValueError(f"a page holds at least one host, not {limit}")
        following = (
            host for mac, host in self.hosts.items() if after is None or mac.octets > after.octets
        )
        hosts = heapq.nsmallest(limit + 1, following, key=lambda host: host.mac.octets)
        if len(hosts) <= limit:
            return hosts, None
        return hosts[:limit], hosts[limit - 1].mac

    def summary(self) -> Mapping[str, int]:
        """
        How many hosts are in each state.
        """
        states = Counter(host.state.value for host in self.hosts.values())
        return {state.value: states.get(state.value, 0) for state in HostState}
