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
from functools import partial
from itertools import groupby
from typing import Any, TypeVar

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from pxepilot.address import plain_address
from pxepilot.answers.identity import model_key, serial_key, uuid_key
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.hosts.neighbours import NeighbourLookup, no_neighbours
from pxepilot.hosts.store import IHostStore
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


@frozen
class _StoreCall:
    """
    A call of the store waiting for its turn on the worker thread.

    @ivar save: The event and the host after it, for a save; saves next to each other
        in the queue are written together.
    @ivar call: Any other call (a removal, a timeline read), run alone.
    @ivar done: Fires with the call's result once it ran, or fails with its error.
    """

    save: tuple[Event, Host] | None
    call: Callable[[], Any]
    done: Deferred[Any]


Outcome = tuple[bool, Any]


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return True, call()
    except Exception as e:
        return False, e


def run_in_turn(store: IHostStore, calls: Sequence[_StoreCall]) -> list[Outcome]:
    """
    Run C{calls} in order, on the worker thread: each run of saves next to each other as
    one L{IHostStore.save_many}, which makes them durable with one write to the disk;
    each other call alone. Each call's outcome: C{(True, result)} or C{(False, error)}.

    A call's failure is its caller's alone: saves that cannot be made together are made
    one by one, so that only the events that cannot be saved fail.
    """
    outcomes: list[Outcome] = []
    for saving, run in groupby(calls, key=lambda call: call.save is not None):
        together = list(run)
        if not saving:
            outcomes += [_outcome(call.call) for call in together]
            continue
        saves = [call.save for call in together if call.save is not None]
        at_once = _outcome(partial(store.save_many, saves))
        if at_once[0] or len(together) == 1:
            outcomes += [at_once] * len(together)
        else:
            outcomes += [_outcome(call.call) for call in together]
    return outcomes


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

        def close(_: object) -> None:
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
        store = self._store
        saved = self._in_turn((event, host), lambda: store.save(event, host))
        return saved.addCallback(lambda _: host)

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
