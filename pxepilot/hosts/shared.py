"""
A host ledger whose store other pxe-pilot instances write too: which store a
configuration names, the service that keeps the ledger's view of hosts up to date with
the changes the others make, the store's health, and the refusal of installation
reports that could not be stored.

The decisions that matter (the menu's default for an installed host, the 409 of
C{POST /answer}, re-arming) read the ledger's hosts in memory. Every change of a host in
PostgreSQL is announced (C{NOTIFY}); L{SharedHosts} reloads the hosts announced and
replaces them in the ledger, so a change made through another instance is seen within
the time of one notification and one read (milliseconds; C{bench/state_load.py}
measures it). When the notifications' connection is lost, every host is reloaded once
it is back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import Host
from pxepilot.hosts.store import (
    REPORT_LATER,
    REPORT_RETRY_SECONDS,
    IHostStore,
    SQLiteHostStore,
    StoreError,
)
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError

if TYPE_CHECKING:
    from pxepilot.hosts.postgres import PostgresHostStore

log = logger(__name__)


def open_store(sqlite: Path, database_url: str | None) -> IHostStore:
    """
    The store a configuration names: PostgreSQL at C{database_url}, else the SQLite
    database file C{sqlite}.

    @raise pxepilot.hosts.store.StoreError: when it cannot be opened; the message names
        it, never with its password.
    """
    if database_url is None:
        return SQLiteHostStore(sqlite)
    # Only an instance configured for PostgreSQL loads its driver.
    try:
        from pxepilot.hosts.postgres import PostgresHostStore
    except ImportError as e:
        raise StoreError(
            f"a PostgreSQL database needs psycopg and libpq ({e}): install "
            "pxe-pilot[postgresql] and Debian's libpq5"
        ) from None

    store = PostgresHostStore(database_url)
    log.info("host database: {where}", where=store.where)
    return store


class Watch(Protocol):
    """
    What listens for other instances' changes (L{pxepilot.hosts.postgres.PostgresWatch}):
    made with the callables to tell, from a thread of its own, of a host changed, the
    connection lost and the connection (re)gained; stopping returns once it has ended.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...


WatchFactory = Callable[[Callable[[str], None], Callable[[str], None], Callable[[], None]], Watch]


def postgres_watch(store: PostgresHostStore) -> WatchFactory:
    """
    What L{SharedHosts} listens with: a L{pxepilot.hosts.postgres.PostgresWatch} on
    C{store}'s database.
    """
    from pxepilot.hosts.postgres import PostgresWatch

    def make(
        changed: Callable[[str], None], lost: Callable[[str], None], regained: Callable[[], None]
    ) -> Watch:
        return PostgresWatch(store, changed, lost, regained)

    return make


class SharedHosts(Service):
    """
    Keeps C{ledger}'s hosts up to date with the changes other instances make in its
    store: each host announced is read again (several announced at once in one read),
    and every host when the announcements may have been missed.

    @ivar refreshed: Hosts read again since start, announced or all.

    @param hosts: Reads the hosts of some MAC addresses from the store (blocking).
    @param load: Reads every host from the store (blocking).
    @param reactor: Provides C{IReactorFromThreads} once the service starts; the watch's
        news are handed over to it.
    @param origin: How the store names this instance's changes, to skip them.
    """

    def __init__(
        self,
        ledger: HostLedger,
        hosts: Callable[[list[MacAddress]], dict[MacAddress, Host]],
        load: Callable[[], list[Host]],
        watch: WatchFactory,
        reactor: object,
        origin: str = "",
    ) -> None:
        self._ledger = ledger
        self._hosts = hosts
        self._load = load
        self._reactor = reactor
        self._origin = origin
        self._watch = watch(
            self._from_thread(self.changed),
            self._from_thread(self.lost),
            self._from_thread(self.regained),
        )
        self._stale: set[MacAddress] = set()
        self._reading = False
        self._connected = False
        self.refreshed = 0

    def _from_thread(self, call: Callable[..., None]) -> Callable[..., None]:
        def later(*args: Any) -> None:
            IReactorFromThreads(self._reactor).callFromThread(call, *args)

        return later

    def startService(self) -> None:
        super().startService()
        self._watch.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped: Deferred[None] = Deferred()

        def stop() -> None:
            # Joins the listening thread: not on the reactor's.
            self._watch.stop()
            IReactorFromThreads(self._reactor).callFromThread(stopped.callback, None)

        threading.Thread(target=stop, name="pxe-pilot-listen-stop").start()
        return stopped

    def changed(self, payload: str) -> None:
        """
        A host changed in the store (C{payload}: its MAC address, and the origin of
        the change): read it again, unless this instance made the change (its ledger
        took the host as saved).
        """
        text, _, origin = payload.partition(" ")
        if origin and origin == self._origin:
            return
        try:
            mac = MacAddress.parse(text)
        except MacAddressError:
            log.warn("ignored a host change announced for {payload!r}", payload=payload[:64])
            return
        self._stale.add(mac)
        if not self._reading:
            self._read()

    def _read(self) -> None:
        macs, self._stale = sorted(self._stale, key=lambda mac: mac.octets), set()
        self._reading = True
        read = self._ledger.in_turn(lambda: self._hosts(macs))

        def apply(found: dict[MacAddress, Host]) -> None:
            for mac in macs:
                self._ledger.replace(mac, found.get(mac))
            self.refreshed += len(macs)

        def done(result: object) -> None:
            self._reading = False
            if isinstance(result, Failure):
                # The store is down: the hosts are read again when it is back.
                log.warn("could not read changed hosts: {error}", error=str(result.value))
            elif self._stale:
                self._read()

        read.addCallback(apply).addBoth(done)

    def lost(self, reason: str) -> None:
        """
        The announcements' connection is lost: the store is down for the ledger too.
        """
        self._connected = False
        self._ledger.store_lost(reason)

    def regained(self) -> None:
        """
        Connected (again): save what was kept meanwhile, then read every host, for the
        changes announced while nobody listened.
        """
        self._connected = True
        self._ledger.store_regained().addCallback(lambda _: self._reload())

    def _reload(self) -> None:
        def apply(hosts: list[Host]) -> None:
            known = {host.mac: host for host in hosts}
            for mac in set(self._ledger.hosts) | set(known):
                self._ledger.replace(mac, known.get(mac))
            self.refreshed += len(known)

        self._ledger.in_turn(self._load).addCallbacks(
            apply, lambda failure: log.warn("could not reload the hosts: {e}", e=failure.value)
        )


@implementer(IHealthCheck)
@frozen
class StoreHealth:
    """
    The shared host database: C{degraded} while it cannot be reached (boot scripts,
    assets and answers are still served; installation reports are refused with 503;
    other events are kept, up to a bound, until it is back).
    """

    ledger: HostLedger
    backend: str = "postgresql"
    name: str = "database"

    def check(self) -> ComponentHealth:
        details: dict[str, Any] = {
            "backend": self.backend,
            "database": "down" if self.ledger.store_down is not None else "up",
            "events_kept": len(self.ledger.backlog),
            "events_dropped": self.ledger.dropped,
        }
        if self.ledger.store_down is None:
            return ComponentHealth("ok", details)
        details["error"] = self.ledger.store_down
        details["reasons"] = [
            "the host database is down: installation reports are refused (503) and "
            "other events are kept until it is back"
        ]
        return ComponentHealth("degraded", details)


@implementer(IResource)
class ReportsNeedStore(Resource):
    """
    C{inner}, but for C{POST .../webhook} while the host store is down: 503, so that an
    installer is never told its report was stored when it was not (it tries again).
    """

    isLeaf = True

    def __init__(
        self, inner: IResource, ledger: HostLedger, retry_after: int = REPORT_RETRY_SECONDS
    ) -> None:
        super().__init__()
        self._inner = inner
        self._ledger = ledger
        self._retry_after = retry_after

    def render(self, request: IRequest) -> Any:
        path: Iterable[bytes] = getattr(request, "postpath", [])
        if (
            request.method == b"POST"
            and list(path) == [b"webhook"]
            and self._ledger.store_down is not None
        ):
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"retry-after", str(self._retry_after).encode())
            body = {"error": REPORT_LATER}
            return json.dumps(body).encode() + b"\n"
        return self._inner.render(request)
