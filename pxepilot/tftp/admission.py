"""
Who gets a TFTP transfer, decided without a socket or a clock of its own: the request
budget of each address, and which transfer, if any, gives way to a new one.

A read request costs a file, a socket and a datagram sent, before anything says the
sender is real: its address may be spoofed, and nothing on the request port tells a
spoofed request from a real one. So:

- each address has a request budget (a token bucket); requests beyond it are dropped
  before they are even parsed, which makes a flood from a few addresses cheap at any
  rate the reactor can read;
- a transfer just started is in its grace period: nobody else's request displaces it
  before its client could have answered, however many requests arrive meanwhile;
- transfers never acknowledged share at most half of the places, so acknowledged ones
  always keep the other half;
- addresses that already hold a transfer share at most three quarters of the places,
  so an address with none always finds one free;
- when the server is full, a stale unacknowledged transfer gives way first, then, for
  an address with no transfer yet, the slowest acknowledged one, if it is far slower
  than any real client.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict

from attrs import frozen

# A transfer cannot be displaced by another address's request for this long after it
# started: the client's first ACK, or its answer to the first retransmission (after 1 s)
# when a datagram was lost, arrive within it even while the server is busy reading a
# flood.
GRACE_SECONDS = 2.0

# Each place an address may hold (--tftp-max-per-client) is worth this many requests
# at once: a PXE client asks for a size and then the file, asks again when a reply is
# lost, and PXELINUX tries up to eleven configuration names before it finds one. At the
# default of 8 places an address may send 64 requests in a burst.
REQUESTS_PER_PLACE = 8

# The request budget refills in this time; at the default, 8 requests a second: more than
# a booting machine ever asks for, far below the thousands a second that hurt the server.
BUDGET_REFILL_SECONDS = 8.0

# Budgets are kept for at most this many addresses (about 4 MB); beyond it the one heard
# from longest ago is forgotten, so a flood from random addresses cannot grow the table.
# An address that keeps sending stays in it.
MAX_BUDGETS = 16384

# Unacknowledged transfers may take this share of the places: the rest is kept for
# clients that answered.
UNCONFIRMED_SHARE = 0.5

# Addresses that already hold a transfer may take this share of the places; the rest is
# kept for addresses that hold none, so a few slow clients cannot lock out new ones.
HOLDER_SHARE = 0.75

# When the server is full, an acknowledged transfer slower than this (bytes a second,
# since it started) may give way to an address that holds nothing. A lock-step client
# at blksize 512 over a 100 ms round trip does 5 KB/s; this is a fifth of that.
EVICTABLE_RATE = 1024.0

# ... and only once it has run this long, so its rate says something.
EVICTABLE_AGE = 10.0

# ERROR replies to refused requests, at most this many a second (and as many at once):
# each is a datagram to an address that may be spoofed, from a socket of its own.
REFUSALS_PER_SECOND = 32.0


@frozen
class Bucket:
    """
    A token bucket at one moment.

    @ivar tokens: Requests it allows now.
    @ivar at: When C{tokens} was counted.
    """

    tokens: float
    at: float


def take(bucket: Bucket | None, now: float, rate: float, burst: float) -> tuple[Bucket, bool]:
    """
    Take one token from C{bucket} (L{None}: a full one) at C{now}: the bucket after, and
    whether there was a token to take.
    """
    tokens = burst if bucket is None else min(burst, bucket.tokens + (now - bucket.at) * rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), True
    return Bucket(tokens, now), False


class RequestBudgets:
    """
    The request budget of every address heard from lately.
    """

    def __init__(self, burst: float, refill_seconds: float, capacity: int = MAX_BUDGETS) -> None:
        self.burst = burst
        self.rate = burst / refill_seconds
        self._refill = refill_seconds
        self._capacity = capacity
        # Least recently heard from first, so forgetting is cheap.
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, address: str, now: float) -> bool:
        """
        Whether C{address} may make a request at C{now}; it counts against its budget.
        """
        buckets = self._buckets
        bucket, allowed = take(buckets.pop(address, None), now, self.rate, self.burst)
        buckets[address] = bucket
        # A bucket untouched for the whole refill time is full again, the same as none.
        while len(buckets) > self._capacity or (
            now - next(iter(buckets.values())).at >= self._refill
        ):
            buckets.popitem(last=False)
        return allowed


class Verdict(enum.Enum):
    """
    What becomes of a read request.
    """

    ADMIT = "admit"
    REPLACE_OWN = "replace-own"  # the address's own oldest unacknowledged transfer ends
    EVICT_STALE = "evict-stale"  # the oldest unacknowledged transfer past its grace ends
    EVICT_SLOWEST = "evict-slowest"  # the slowest evictable acknowledged transfer ends
    BUSY = "busy"  # refused: told "Server busy"
    DROP = "drop"  # ignored: the client asks again, by which time there is room


@frozen
class Places:
    """
    How many transfers may run, and how they are shared.

    @ivar max_transfers: Transfers in all.
    @ivar max_per_client: Acknowledged transfers from one address; also how many
        unacknowledged ones it may have.
    @ivar grace: Seconds a new transfer cannot be displaced by another address.
    """

    max_transfers: int = 200
    max_per_client: int = 8
    grace: float = GRACE_SECONDS

    @property
    def unconfirmed(self) -> int:
        return max(1, int(self.max_transfers * UNCONFIRMED_SHARE))

    @property
    def holders(self) -> int:
        return max(1, int(self.max_transfers * HOLDER_SHARE))

    @property
    def request_burst(self) -> int:
        return REQUESTS_PER_PLACE * self.max_per_client


@frozen
class Load:
    """
    What runs when a request arrives.

    @ivar transfers: Transfers in all.
    @ivar unconfirmed: Transfers not acknowledged yet.
    @ivar oldest_unconfirmed: When the oldest of those started (L{None}: there is none).
    @ivar held: Transfers of the requesting address.
    @ivar held_confirmed: Acknowledged transfers of the requesting address.
    @ivar held_unconfirmed: Unacknowledged transfers of the requesting address.
    """

    transfers: int
    unconfirmed: int
    oldest_unconfirmed: float | None
    held: int
    held_confirmed: int
    held_unconfirmed: int


def admit(places: Places, load: Load, now: float) -> Verdict:
    """
    What becomes of a read request arriving at C{now} under C{load}.
    """
    if load.held_confirmed >= places.max_per_client:
        return Verdict.BUSY
    if load.held_unconfirmed >= places.max_per_client:
        # A client that asks again has given up on its earlier request; a flood from one
        # address only ever displaces its own transfers.
        return Verdict.REPLACE_OWN
    stale = load.oldest_unconfirmed is not None and now - load.oldest_unconfirmed >= places.grace
    if load.unconfirmed >= places.unconfirmed:
        return Verdict.EVICT_STALE if stale else Verdict.DROP
    limit = places.holders if load.held else places.max_transfers
    if load.transfers < limit:
        return Verdict.ADMIT
    if stale:
        return Verdict.EVICT_STALE
    if not load.held:
        return Verdict.EVICT_SLOWEST
    return Verdict.BUSY


def evictable_rate(age: float, sent: int) -> float | None:
    """
    The rate (bytes a second) of an acknowledged transfer that has run C{age} seconds
    and had C{sent} bytes acknowledged, when it is slow enough to give way; else L{None}.
    """
    if age < EVICTABLE_AGE:
        return None
    rate = sent / age
    return rate if rate < EVICTABLE_RATE else None


# -- what the log says about it

# Lines about requests and transfers nobody answered (refusals, transfers never
# acknowledged that time out) are logged one by one up to this many per summary
# interval; the rest are only counted, so a flood writes a bounded log.
DETAILED_LINES = 20

# One summary line at most per this many seconds, only when something was dropped,
# refused as busy, evicted or left out of the log.
SUMMARY_SECONDS = 10.0

# Addresses told apart in a summary; more are counted together.
SUMMARY_ADDRESSES = 1024


@frozen
class Summary:
    """
    What was turned away or displaced during one interval.

    @ivar seconds: The interval's length.
    @ivar counts: By what happened: C{rate-limited}, C{busy}, C{evicted}, C{unlogged}.
    @ivar addresses: How many addresses were involved (a lower bound when
        C{more_addresses}).
    @ivar top: The addresses involved most, with their counts, most first.
    @ivar more_addresses: Whether there were more addresses than were told apart.
    """

    seconds: float
    counts: tuple[tuple[str, int], ...]
    addresses: int
    top: tuple[tuple[str, int], ...]
    more_addresses: bool = False

    def text(self) -> str:
        counts = dict(self.counts)
        parts = []
        if counts.get("evicted"):
            parts.append(f"{counts['evicted']:,} transfers evicted")
        if counts.get("rate-limited"):
            parts.append(f"{counts['rate-limited']:,} requests over their address's budget")
        if counts.get("busy"):
            parts.append(f"{counts['busy']:,} requests turned away while full")
        if counts.get("unlogged"):
            parts.append(f"{counts['unlogged']:,} other lines not logged")
        many = "more than " if self.more_addresses else ""
        top = ", ".join(f"{address} ({count:,})" for address, count in self.top)
        return (
            f"TFTP in the last {self.seconds:.0f} s: {', '.join(parts)}; "
            f"from {many}{self.addresses:,} addresses, most {top}"
        )


class Digest:
    """
    Counts what is not worth a line each, and rations the lines that are.
    """

    def __init__(self, started: float) -> None:
        self._since = started
        self._counts: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()
        self._more_addresses = False
        self._lines_left = DETAILED_LINES
        self._lines_since = started

    def count(self, kind: str, address: str) -> None:
        """
        One more C{kind} (C{rate-limited}, C{busy}, C{evicted}, ...) from C{address}.
        """
        self._counts[kind] += 1
        addresses = self._addresses
        if address in addresses or len(addresses) < SUMMARY_ADDRESSES:
            addresses[address] += 1
        else:
            self._more_addresses = True

    def may_log(self, address: str, now: float) -> bool:
        """
        Whether a detailed line about C{address} fits this interval at C{now}; if not,
        it is counted for the summary instead.
        """
        if now - self._lines_since >= SUMMARY_SECONDS:
            # The ration renews with time too, for a server nobody asks for summaries.
            self._lines_since = now
            self._lines_left = DETAILED_LINES
        if self._lines_left > 0:
            self._lines_left -= 1
            return True
        self.count("unlogged", address)
        return False

    def flush(self, now: float) -> Summary | None:
        """
        What happened since the last flush (L{None}: nothing), and start over.
        """
        counts, addresses = self._counts, self._addresses
        more = self._more_addresses
        since = self._since
        self._since = now
        self._counts = Counter()
        self._addresses = Counter()
        self._more_addresses = False
        self._lines_left = DETAILED_LINES
        self._lines_since = now
        if not counts:
            return None
        return Summary(
            seconds=now - since,
            counts=tuple(sorted(counts.items())),
            addresses=len(addresses),
            top=tuple(addresses.most_common(3)),
            more_addresses=more,
        )
