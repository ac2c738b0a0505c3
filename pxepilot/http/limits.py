"""
What one HTTP client may hold of the server: how long it may take to send a request,
how long it may leave a response unread, how many connections one address may keep
open, and how close to the process's file descriptor limit the listeners go.

L{HTTPLimits} holds the values; L{ConnectionGate} admits, counts and, near the
descriptor limit, makes room or stops the listening ports from accepting until
connections close. The channel that applies the deadlines is in L{pxepilot.http.site}.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pxepilot.config import IPNetwork
from pxepilot.logs import logger

log = logger(__name__)

# iPXE, the Proxmox installer, curl and browsers send the request line and headers in
# one segment as soon as they connect. 30 s covers a lossy link many times over and
# bounds what a client that trickles its head (a byte every few seconds, which resets
# any idle timeout) can hold.
HEAD_TIMEOUT = 30.0
# Request bodies here are at most 1 MiB (the installer's JSON is a few KiB): a body
# gets at least 60 s, or as long as it takes at 16 KiB/s, whichever is longer.
BODY_TIMEOUT = 60.0
BODY_RATE = 16 << 10
# A response the client has taken nothing of for this long, while bytes wait for it, is
# given up. Checked once per period, so the connection closes between one and two
# periods after the client stopped reading; a client reading at any rate keeps it.
WRITE_TIMEOUT = 60.0
# A booting machine holds one or two connections (iPXE fetches one file at a time;
# the installer posts once), an operator's browser six. 64 is far above any of them
# and keeps one address from taking more than a sliver of the descriptors.
PER_ADDRESS = 64
# Descriptors kept back for everything but HTTP connections: the asset being sent on
# each download, TFTP's session sockets and files, the state database, the log.
DESCRIPTOR_RESERVE = 128
# Once stopped, the listeners accept again when this many more descriptors are free,
# so that they do not flap at the edge.
RESUME_MARGIN = 64
# Near the descriptor limit, room is made by closing a connection that has not sent
# its request, preferably one of an address holding more than this many (a booting
# machine holds one or two; a slowloris many), looked for among the oldest few.
CROWDED = 2
EVICTION_SCAN = 64
# Counting the open descriptors lists /proc/self/fd, which takes the reactor about
# 14 ms with 15,000 open: so at most once a second, and only as connections arrive or
# while the ports are stopped; connections opened and closed since are added and taken
# off the count.
DESCRIPTOR_SAMPLE_INTERVAL = 1.0

# The reasons the gate and the channels close connections, the keys of
# L{ConnectionGate.counts}.
PER_ADDRESS_LIMIT = "per-address-limit"
DESCRIPTOR_LIMIT = "descriptor-limit"
EVICTED = "evicted"
HEAD_TIMED_OUT = "head-timeout"
BODY_TIMED_OUT = "body-timeout"
WRITE_TIMED_OUT = "write-timeout"
REASONS = (
    PER_ADDRESS_LIMIT,
    DESCRIPTOR_LIMIT,
    EVICTED,
    HEAD_TIMED_OUT,
    BODY_TIMED_OUT,
    WRITE_TIMED_OUT,
)


@frozen
class HTTPLimits:
    """
    The limits the HTTP and HTTPS listeners apply to each client.

    @ivar head_timeout: Seconds a client has to send a request's line and headers, from
        when it connects or from its first byte after the previous response.
    @ivar body_timeout: The least number of seconds a client has to send a body.
    @ivar body_rate: The rate (bytes a second) a body's deadline allows beyond that.
    @ivar write_timeout: Seconds a response may wait on a client that takes nothing.
    @ivar per_address: Connections one client address may hold at once (trusted proxies
        are exempt).
    @ivar descriptor_reserve: Descriptors kept free for everything but connections.
    @ivar resume_margin: Descriptors that must come free, below the reserve, before
        listeners that stopped accept again.
    """

    head_timeout: float = HEAD_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    body_rate: float = BODY_RATE
    write_timeout: float = WRITE_TIMEOUT
    per_address: int = PER_ADDRESS
    descriptor_reserve: int = DESCRIPTOR_RESERVE
    resume_margin: int = RESUME_MARGIN

    def body_deadline(self, length: int | None, largest: int) -> float:
        """
        Seconds a body of C{length} bytes may take; a chunked body (C{None}) is allowed
        what the C{largest} accepted would be.
        """
        size = largest if length is None else length
        return max(self.body_timeout, size / self.body_rate)


def soft_descriptor_limit() -> int:
    """
    The process's soft C{RLIMIT_NOFILE}: opening one more than this fails (C{EMFILE}).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Unlimited still stops at the kernel's own ceiling (fs.nr_open, 1 << 20 by default).
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def descriptors_in_use() -> int | None:
    """
    How many descriptors the process has open, or L{None} where the system cannot
    say (no C{/proc}).
    """
    try:
        # Less the one the listing itself opens.
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            # Not even one more could be opened: all are.
            return soft_descriptor_limit()
        return None


class Evictable(Protocol):
    """
    A connection the gate may close to make room for another.
    """

    def evict(self) -> None:
        """
        Close at once, freeing the descriptor before returning: the gate needs it.
        """


@runtime_checkable
class Pausable(Protocol):
    """
    A listening port that can stop and start taking connections while it stays bound
    (Twisted's TCP and TLS ports are file descriptors that can stop being read).
    """

    def stopReading(self) -> None: ...

    def startReading(self) -> None: ...


class ConnectionGate:
    """
    Admits each new HTTP connection, or closes it at once, and counts those open.

    A connection is refused when its address holds L{HTTPLimits.per_address} already
    (but a trusted proxy's), or while the listeners are stopped. Near the descriptor
    limit (less L{HTTPLimits.descriptor_reserve}), a connection that is not being
    answered (still sending its request, or idle between two) is closed to make room,
    the oldest of an address that holds many by preference; when every one is being
    answered, the listening ports stop accepting until enough descriptors are free
    again, checked as connections close and once a second. One log line says when they
    stop, one when they accept again.

    @param clock: For the descriptor count's age and the checks while stopped.
    @param trusted: Peers exempt from the per-address limit (reverse proxies, which
        carry many clients on one address).
    @param limit: The soft descriptor limit, read anew with each count.
    @param in_use: How many descriptors the process has open, or L{None} if unknown:
        then connections alone are counted against the limit.

    @ivar counts: Connections closed by the limits since start, by reason (L{REASONS}):
        a mapping for metrics.
    @ivar open: Connections admitted and not yet closed.
    @ivar accepting: Whether the listening ports accept connections.
    """

    def __init__(
        self,
        limits: HTTPLimits,
        clock: IReactorTime,
        trusted: Sequence[IPNetwork] = (),
        limit: Callable[[], int] = soft_descriptor_limit,
        in_use: Callable[[], int | None] = descriptors_in_use,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._trusted = tuple(trusted)
        self._limit = limit
        self._in_use = in_use
        self.counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.open = 0
        self.accepting = True
        self._per_address: dict[str, int] = {}
        self._capped: set[str] = set()
        self._connections: dict[Evictable, str] = {}
        # Insertion-ordered: the first is the one waiting longest.
        self._waiting: dict[Evictable, None] = {}
        self._ports: list[Pausable] = []
        self._sample: tuple[float, int | None, int] | None = None
        self._recheck: IDelayedCall | None = None
        self._refused_before = 0

    def enter(self, connection: Evictable, host: str) -> bool:
        """
        A connection from C{host} was accepted: whether it may stay. One that may is
        counted, as waiting for its request, until L{leave}; one that may not must free
        its descriptor at once.
        """
        if not self.accepting:
            self.counts[DESCRIPTOR_LIMIT] += 1
            return False
        key, exempt = self._address(host)
        held = self._per_address.get(key, 0)
        if not exempt and held >= self.limits.per_address:
            self.counts[PER_ADDRESS_LIMIT] += 1
            if key not in self._capped:
                self._capped.add(key)
                log.info(
                    "HTTP: {client} holds {count} connections, the most one address may: "
                    "refusing more from it",
                    client=key,
                    count=held,
                )
            return False
        self._per_address[key] = held + 1
        self._connections[connection] = key
        self.open += 1
        self._waiting[connection] = None
        if self._estimate() >= self._high():
            self._make_room(connection)
        return True

    def leave(self, connection: Evictable) -> None:
        """
        A connection L{enter} admitted has closed (again, for one the gate closed to
        make room: that was counted when it did).
        """
        forgotten = self._forget(connection)
        if forgotten and not self.accepting and self._estimate() <= self._low():
            # The estimate may be stale; count again before saying so.
            self._sample = None
            self._maybe_resume()

    def _forget(self, connection: Evictable) -> bool:
        key = self._connections.pop(connection, None)
        if key is None:
            return False
        held = self._per_address.get(key, 0) - 1
        if held > 0:
            self._per_address[key] = held
        else:
            self._per_address.pop(key, None)
            # One log line per address and attack, not one each time it dips below.
            self._capped.discard(key)
        self.open -= 1
        self._waiting.pop(connection, None)
        return True

    def waiting(self, connection: Evictable) -> None:
        """
        C{connection} waits for a request again: it may be closed to make room.
        """
        self._waiting.pop(connection, None)
        if connection in self._connections:
            self._waiting[connection] = None

    def answering(self, connection: Evictable) -> None:
        """
        C{connection}'s request is being answered: it is kept.
        """
        self._waiting.pop(connection, None)

    def watch(self, port: object) -> None:
        """
        Stop and start C{port} with the others near the descriptor limit. A port that
        cannot stop reading only has the connections it accepts closed meanwhile.
        """
        if not isinstance(port, Pausable):
            return
        self._ports.append(port)
        if not self.accepting:
            port.stopReading()
            self._schedule_recheck()

    def unwatch(self, port: object) -> None:
        """
        Forget C{port}, before it stops listening: it must not be started again.
        """
        if port in self._ports:
            self._ports.remove(port)
        if not self._ports and self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def _address(self, host: str) -> tuple[str, bool]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host, False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return str(ip), any(ip in network for network in self._trusted)

    def _high(self) -> int:
        return self._limit() - self.limits.descriptor_reserve

    def _low(self) -> int:
        return self._high() - self.limits.resume_margin

    def _estimate(self) -> int:
        """
        Descriptors in use: the last count, plus the connections opened since, less
        those closed.
        """
        now = self._clock.seconds()
        if self._sample is None or now - self._sample[0] >= DESCRIPTOR_SAMPLE_INTERVAL:
            self._sample = (now, self._in_use(), self.open)
        _, counted, open_then = self._sample
        if counted is None:
            return self.open
        return counted + self.open - open_then

    def _make_room(self, admitted: Evictable) -> None:
        victim = self._victim(admitted)
        if victim is None:
            self._stop_accepting()
            return
        self.counts[EVICTED] += 1
        # Its descriptor is free once evict returns: it no longer counts.
        self._forget(victim)
        victim.evict()

    def _victim(self, admitted: Evictable) -> Evictable | None:
        """
        The connection to close to make room: the oldest waiting one of a crowded
        address among the oldest few, or else the oldest.
        """
        oldest = None
        for seen, connection in enumerate(self._waiting):
            if connection is admitted:
                continue
            if oldest is None:
                oldest = connection
            if self._per_address[self._connections[connection]] > CROWDED:
                return connection
            if seen >= EVICTION_SCAN:
                break
        return oldest

    def _stop_accepting(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        self._refused_before = self.counts[DESCRIPTOR_LIMIT]
        for port in self._ports:
            port.stopReading()
        log.warn(
            "HTTP: {descriptors} of {limit} file descriptors in use, {open} by connections "
            "being answered: not accepting connections until {free} are free",
            descriptors=self._estimate(),
            limit=self._limit(),
            open=self.open,
            free=self.limits.descriptor_reserve + self.limits.resume_margin,
        )
        self._schedule_recheck()

    def _schedule_recheck(self) -> None:
        if self._recheck is None:
            self._recheck = self._clock.callLater(DESCRIPTOR_SAMPLE_INTERVAL, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._maybe_resume()
        if not self.accepting:
            self._schedule_recheck()

    def _maybe_resume(self) -> None:
        if self.accepting or self._estimate() > self._low():
            return
        self.accepting = True
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for port in self._ports:
            port.startReading()
        log.info(
            "HTTP: accepting connections again ({descriptors} of {limit} file descriptors "
            "in use, {refused} connections refused meanwhile)",
            descriptors=self._estimate(),
            limit=self._limit(),
            refused=self.counts[DESCRIPTOR_LIMIT] - self._refused_before,
        )
