"""
Who is at an IP address: the system's neighbour tables, ARP's for IPv4 and Neighbour
Discovery's for IPv6.

TFTP requests carry no MAC address. A machine that fetches its boot file is on the
server's own link (TFTP is not routed in practice, and DHCP relays do not relay it), so
once pxe-pilot has answered it, the kernel knows its MAC address. Through a router the
table holds the router's address instead of the client's, and the lookup finds nothing.

IPv4's table is a file (C{/proc/net/arp}); IPv6's is only had from the kernel over
rtnetlink (what C{ip -6 neigh} asks). Both answer from the kernel's memory at once, so
the lookup runs in place, as reading the ARP file always has, with no process started;
the IPv6 table, costlier to read, is kept for a moment.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pxepilot.address import plain_address
from pxepilot.macs import MacAddress, MacAddressError

NeighbourLookup = Callable[[str], MacAddress | None]

# Linux's table of IPv4 neighbours; flag 0x2 (ATF_COM) marks a resolved entry.
PROC_ARP = Path("/proc/net/arp")
_RESOLVED = 0x2


def no_neighbours(address: str) -> MacAddress | None:
    return None


def parse_arp_table(text: str) -> dict[str, MacAddress]:
    """
    The resolved entries of a C{/proc/net/arp} table, by IP address.
    """
    table: dict[str, MacAddress] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _hw_type, flags, hardware = fields[:4]
        try:
            if not int(flags, 16) & _RESOLVED:
                continue
            table[address] = MacAddress.parse(hardware)
        except (ValueError, MacAddressError):
            continue
    return table


# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h).
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_NDMSG = struct.Struct("=BxxxiHBB")  # family, (padding), ifindex, state, flags, type
_RTATTR = struct.Struct("=HH")  # length, type
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NDA_DST, _NDA_LLADDR = 1, 2
# The states of a neighbour whose link-layer address is known: REACHABLE, STALE, DELAY,
# PROBE, PERMANENT. INCOMPLETE (0x01) is still asking, FAILED (0x20) got no answer, and
# NOARP (0x40) entries are no neighbours (multicast groups, loopback).
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_FAILED, NUD_NOARP = 0x01, 0x02, 0x04, 0x20, 0x40
_KNOWN = 0x02 | 0x04 | 0x08 | 0x10 | 0x80
# Replies are read in pieces of this size; a dump fills them one after the other.
_RECEIVE = 1 << 16
_TIMEOUT = 1.0


def _align(length: int) -> int:
    return (length + 3) & ~3


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """
    The type and payload of each netlink message in C{data}; a truncated one ends it.
    """
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _sequence, _port = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size or offset + length > len(data):
            return
        yield kind, data[offset + _NLMSG_HEADER.size : offset + length]
        offset += _align(length)


def _attributes(payload: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size or offset + length > len(payload):
            break
        found.setdefault(kind, payload[offset + _RTATTR.size : offset + length])
        offset += _align(length)
    return found


def parse_neighbour_messages(data: bytes) -> tuple[dict[str, MacAddress], bool]:
    """
    The IPv6 neighbours whose MAC address is known, by address, from a piece of the
    kernel's answer to a neighbour dump; and whether the piece ends the answer.
    Entries still resolving or failed, of another family, or with a hardware address
    that is not a 48-bit MAC address are left out.

    @raise OSError: when the kernel answered with an error.
    """
    table: dict[str, MacAddress] = {}
    for kind, payload in _messages(data):
        if kind == _NLMSG_DONE:
            return table, True
        if kind == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
            if code:
                raise OSError(code, f"the kernel refused the neighbour dump: error {code}")
            continue
        if kind != _RTM_NEWNEIGH or len(payload) < _NDMSG.size:
            continue
        family, _index, state, _flags, _type = _NDMSG.unpack_from(payload)
        if family != socket.AF_INET6 or not state & _KNOWN:
            continue
        attributes = _attributes(payload[_NDMSG.size :])
        destination, hardware = attributes.get(_NDA_DST), attributes.get(_NDA_LLADDR)
        if destination is None or len(destination) != 16 or hardware is None:
            continue
        try:
            mac = MacAddress(hardware)
        except MacAddressError:
            continue
        table[str(ipaddress.IPv6Address(destination))] = mac
    return table, False


def neighbour_dump_request(sequence: int = 1) -> bytes:
    """
    The rtnetlink request for the kernel's whole IPv6 neighbour table.
    """
    body = _NDMSG.pack(socket.AF_INET6, 0, 0, 0, 0)
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return (
        _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _RTM_GETNEIGH, flags, sequence, 0)
        + body
    )


def ipv6_neighbour_table() -> dict[str, MacAddress]:
    """
    The kernel's IPv6 neighbours whose MAC address is known, by address.

    @raise OSError: where there is no rtnetlink, or it does not answer in time.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(_TIMEOUT)
        sock.sendall(neighbour_dump_request())
        table: dict[str, MacAddress] = {}
        done = False
        while not done:
            data = sock.recv(_RECEIVE)
            if not data:
                break
            found, done = parse_neighbour_messages(data)
            table.update(found)
        return table


# How long a read of the IPv6 table answers lookups: reading it costs about 7 ms of the
# reactor's time per 1,000 neighbours, and a rack booting at once asks many times a
# second. A machine not in a table this old is looked for again once it is older than
# the shorter time (it may have appeared since), at most that often.
IPV6_TABLE_FRESH = 1.0
IPV6_TABLE_RETRY = 0.1


def neighbour_table_lookup(
    arp: Path = PROC_ARP,
    ipv6: Callable[[], dict[str, MacAddress]] = ipv6_neighbour_table,
    clock: Callable[[], float] = time.monotonic,
) -> NeighbourLookup:
    """
    A lookup in the system's neighbour tables: ARP's for an IPv4 address, read afresh
    each time (it is a small file); IPv6's for an IPv6 one, read at most once in
    L{IPV6_TABLE_FRESH} seconds, or L{IPV6_TABLE_RETRY} for an address the last read
    did not have; nothing where there is no such table.
    """
    in_arp = arp_table_lookup(arp)
    table: dict[str, MacAddress] = {}
    read_at: float | None = None

    def lookup(address: str) -> MacAddress | None:
        nonlocal table, read_at
        address = plain_address(address)
        if ":" not in address:
            return in_arp(address)
        age = None if read_at is None else clock() - read_at
        if (
            age is None
            or age >= IPV6_TABLE_FRESH
            or (address not in table and age >= IPV6_TABLE_RETRY)
        ):
            try:
                table = ipv6()
            except OSError:
                table = {}
            read_at = clock()
        return table.get(address)

    return lookup


def arp_table_lookup(path: Path = PROC_ARP) -> NeighbourLookup:
    """
    A lookup in the system's ARP table, read afresh each time (it is small, and asked
    once per finished transfer); nothing where there is no such table.
    """

    def lookup(address: str) -> MacAddress | None:
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        return parse_arp_table(text).get(address)

    return lookup
