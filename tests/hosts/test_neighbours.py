"""
Finding a machine's MAC address in the kernel's neighbour tables, ARP's for IPv4 and
IPv6's over rtnetlink: entries with a known MAC address only.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from pxepilot.address import plain_address
from pxepilot.hosts.neighbours import (
    arp_table_lookup,
    ipv6_neighbour_table,
    neighbour_dump_request,
    neighbour_table_lookup,
    no_neighbours,
    parse_arp_table,
    parse_neighbour_messages,
)
from pxepilot.macs import MacAddress

HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n"

# As Linux prints it: resolved (0x2), incomplete (0x0, all-zero address) and
# permanent (0x6) entries, an InfiniBand neighbour, and lines no kernel writes.
TABLE = HEADER + (
    "192.0.2.21       0x1         0x2         b0:7b:25:c1:0a:10     *        eno8303\n"
    "192.0.2.22       0x1         0x0         00:00:00:00:00:00     *        eno8303\n"
    "192.0.2.1        0x1         0x6         00:53:00:aa:bb:cc     *        eno8303\n"
    "198.51.100.7     0x20        0x2         80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03"
    ":00:0a:bb:cc *        ib0\n"
    "\n"
    "garbage\n"
    "192.0.2.40       0x1         zz          b0:7b:25:c1:0a:12     *        eno8303\n"
    "192.0.2.41       0x1         0x2         not-a-mac             *        eno8303\n"
    "192.0.2.42       0x1         0x2\n"
    "192.0.2.43       0x1         0x2         B0:7B:25:C1:0A:13\n"
)


def test_parse_keeps_resolved_entries_only() -> None:
    """
    Resolved and permanent entries are kept; incomplete ones, addresses that are not
    48-bit MAC addresses and malformed lines are not.
    """
    assert parse_arp_table(TABLE) == {
        "192.0.2.21": MacAddress.parse("b0:7b:25:c1:0a:10"),
        "192.0.2.1": MacAddress.parse("00:53:00:aa:bb:cc"),
        "192.0.2.43": MacAddress.parse("b0:7b:25:c1:0a:13"),
    }


def test_parse_empty_tables() -> None:
    """
    A table with only its header, or nothing at all, has no entries; the header is
    never read as an entry.
    """
    assert parse_arp_table(HEADER) == {}
    assert parse_arp_table("") == {}
    assert parse_arp_table(TABLE.splitlines()[1]) == {}


def test_lookup_reads_the_table_afresh(tmp_path: Path) -> None:
    """
    The lookup answers from the file as it is when asked: a neighbour resolved since
    the last lookup is found, one gone is not.
    """
    path = tmp_path / "arp"
    path.write_text(TABLE)
    lookup = arp_table_lookup(path)
    assert lookup("192.0.2.21") == MacAddress.parse("b0:7b:25:c1:0a:10")
    assert lookup("192.0.2.22") is None
    assert lookup("203.0.113.9") is None

    path.write_text(HEADER + "192.0.2.22  0x1  0x2  b0:7b:25:c1:0a:11  *  eno8303\n")
    assert lookup("192.0.2.22") == MacAddress.parse("b0:7b:25:c1:0a:11")
    assert lookup("192.0.2.21") is None


def test_lookup_survives_bytes_that_are_not_ascii(tmp_path: Path) -> None:
    path = tmp_path / "arp"
    path.write_bytes(b"\xff\xfe" + TABLE.encode() + b"10.0.0.1 0x1 0x2 \xc3\xa9\n")
    assert arp_table_lookup(path)("192.0.2.21") == MacAddress.parse("b0:7b:25:c1:0a:10")


def test_lookup_without_a_table(tmp_path: Path) -> None:
    """
    Where there is no table (not Linux, or a missing or unreadable path), nobody is found.
    """
    assert arp_table_lookup(tmp_path / "missing")("192.0.2.21") is None
    assert arp_table_lookup(tmp_path)("192.0.2.21") is None
    assert no_neighbours("192.0.2.21") is None


# IPv6: the kernel's table over rtnetlink, as `ip -6 neigh` shows it.

_HEADER = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")
RTM_NEWNEIGH, NLMSG_ERROR, NLMSG_DONE = 28, 2, 3
NDA_DST, NDA_LLADDR = 1, 2
NTF_ROUTER = 0x80
NUD = {
    "INCOMPLETE": 0x01,
    "REACHABLE": 0x02,
    "STALE": 0x04,
    "DELAY": 0x08,
    "PROBE": 0x10,
    "FAILED": 0x20,
    "NOARP": 0x40,
    "PERMANENT": 0x80,
}


def attribute(kind: int, value: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(value), kind) + value
    return body + b"\0" * (-len(body) % 4)


def message(kind: int, body: bytes, sequence: int = 1) -> bytes:
    raw = _HEADER.pack(_HEADER.size + len(body), kind, 2, sequence, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def neighbour(
    address: str,
    state: str,
    lladdr: str | None = None,
    flags: int = 0,
    family: int = socket.AF_INET6,
) -> bytes:
    """
    One RTM_NEWNEIGH message of a dump, as the kernel sends it for a line of
    C{ip -6 neigh}.
    """
    body = _NDMSG.pack(family, 2, NUD[state], flags, 1)
    body += attribute(NDA_DST, ipaddress.ip_address(address).packed)
    if lladdr is not None:
        body += attribute(NDA_LLADDR, bytes.fromhex(lladdr.replace(":", "")))
    return message(RTM_NEWNEIGH, body)


DONE = message(NLMSG_DONE, struct.pack("=i", 0))

# `ip -6 neigh show` on a pxe-pilot host during an IPv6 boot, line by line.
RECORDED = [
    # fd00:77::1f2 dev br0 lladdr 52:54:00:12:34:56 REACHABLE
    neighbour("fd00:77::1f2", "REACHABLE", "52:54:00:12:34:56"),
    # fd00:77::1f3 dev br0 lladdr 52:54:00:12:34:57 STALE
    neighbour("fd00:77::1f3", "STALE", "52:54:00:12:34:57"),
    # fd00:77::1f4 dev br0 lladdr 52:54:00:12:34:58 DELAY
    neighbour("fd00:77::1f4", "DELAY", "52:54:00:12:34:58"),
    # fd00:77::1f5 dev br0 FAILED
    neighbour("fd00:77::1f5", "FAILED"),
    # fd00:77::1f6 dev br0 INCOMPLETE
    neighbour("fd00:77::1f6", "INCOMPLETE"),
    # fe80::1 dev br0 lladdr 00:53:00:aa:bb:cc router STALE
    neighbour("fe80::1", "STALE", "00:53:00:aa:bb:cc", flags=NTF_ROUTER),
    # fd00:77::fe dev br0 lladdr 00:53:00:aa:bb:cd router REACHABLE
    neighbour("fd00:77::fe", "REACHABLE", "00:53:00:aa:bb:cd", flags=NTF_ROUTER),
    # ff02::16 dev br0 lladdr 33:33:00:00:00:16 NOARP
    neighbour("ff02::16", "NOARP", "33:33:00:00:00:16"),
    # fd00:77::1f7 dev ib0 lladdr 80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bb:cc
    # REACHABLE (InfiniBand: no 48-bit MAC address)
    neighbour(
        "fd00:77::1f7",
        "REACHABLE",
        "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bb:cc",
    ),
    # fd00:77::1f8 dev br0 lladdr 52:54:00:12:34:59 PERMANENT
    neighbour("fd00:77::1f8", "PERMANENT", "52:54:00:12:34:59"),
]


def test_ipv6_neighbours_with_a_known_mac_address() -> None:
    """
    Reachable, stale, delayed and permanent neighbours, routers among them, are found;
    failed and incomplete ones, multicast groups (NOARP) and hardware addresses that
    are not 48-bit MAC addresses are not.
    """
    table, done = parse_neighbour_messages(b"".join(RECORDED) + DONE)
    assert done
    assert table == {
        "fd00:77::1f2": MacAddress.parse("52:54:00:12:34:56"),
        "fd00:77::1f3": MacAddress.parse("52:54:00:12:34:57"),
        "fd00:77::1f4": MacAddress.parse("52:54:00:12:34:58"),
        "fe80::1": MacAddress.parse("00:53:00:aa:bb:cc"),
        "fd00:77::fe": MacAddress.parse("00:53:00:aa:bb:cd"),
        "fd00:77::1f8": MacAddress.parse("52:54:00:12:34:59"),
    }


def test_a_dump_comes_in_pieces() -> None:
    """
    Only the piece that holds the end says so; an IPv4 entry in an IPv6 answer, other
    messages and a truncated message at the end are passed over.
    """
    first, done = parse_neighbour_messages(b"".join(RECORDED[:2]))
    assert (len(first), done) == (2, False)
    ipv4 = neighbour("192.0.2.21", "REACHABLE", "b0:7b:25:c1:0a:10", family=socket.AF_INET)
    other = message(24, b"\0" * 12)
    truncated = RECORDED[2][:-3]
    rest, done = parse_neighbour_messages(ipv4 + other + DONE)
    assert (rest, done) == ({}, True)
    assert parse_neighbour_messages(other + truncated) == ({}, False)
    assert parse_neighbour_messages(b"") == ({}, False)
    assert parse_neighbour_messages(b"\xff" * 7) == ({}, False)


def test_an_error_answer_is_an_error() -> None:
    """
    The kernel's refusal (as to a dump it does not allow) is an L{OSError}; an
    acknowledgement (error 0) is not.
    """
    with pytest.raises(OSError, match="error 1"):
        parse_neighbour_messages(message(NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16))
    assert parse_neighbour_messages(message(NLMSG_ERROR, struct.pack("=i", 0)) + DONE) == (
        {},
        True,
    )


def test_the_dump_request() -> None:
    """
    The request asks for a dump of the IPv6 table only.
    """
    request = neighbour_dump_request(7)
    length, kind, flags, sequence, port = _HEADER.unpack_from(request)
    assert (length, kind, flags, sequence, port) == (len(request), 30, 0x301, 7, 0)
    assert _NDMSG.unpack_from(request, _HEADER.size)[0] == socket.AF_INET6


@pytest.mark.skipif(not hasattr(socket, "AF_NETLINK"), reason="rtnetlink is Linux's")
def test_the_kernel_answers() -> None:
    """
    This system's kernel answers the dump: a table, of IPv6 addresses in their plain
    spelling, with none of the NOARP entries every system has (multicast, loopback).
    """
    table = ipv6_neighbour_table()
    assert all(":" in address and address == plain_address(address) for address in table)
    assert "::1" not in table
    assert not [address for address in table if address.startswith("ff")]


def test_lookup_by_family(tmp_path: Path) -> None:
    """
    An IPv4 address, however written, is looked up in the ARP table; an IPv6 one in the
    IPv6 table; a table that cannot be read finds nobody.
    """
    path = tmp_path / "arp"
    path.write_text(TABLE)
    asked: list[int] = []
    ipv6_table = {"fd00:77::1f2": MacAddress.parse("52:54:00:12:34:56")}

    def ipv6() -> dict[str, MacAddress]:
        asked.append(1)
        return ipv6_table

    lookup = neighbour_table_lookup(path, ipv6)
    assert lookup("192.0.2.21") == MacAddress.parse("b0:7b:25:c1:0a:10")
    assert lookup("::ffff:192.0.2.21") == MacAddress.parse("b0:7b:25:c1:0a:10")
    assert asked == []
    assert lookup("fd00:77::1f2") == MacAddress.parse("52:54:00:12:34:56")
    assert lookup("FD00:77:0::1F2") == MacAddress.parse("52:54:00:12:34:56")

    def broken() -> dict[str, MacAddress]:
        raise PermissionError(1, "Operation not permitted")

    assert neighbour_table_lookup(path, broken)("fd00:77::1f2") is None


def test_the_ipv6_table_is_kept_for_a_moment(tmp_path: Path) -> None:
    """
    The IPv6 table is read once for the lookups of the next second; an address it does
    not hold has it read again, at most ten times a second, so that a machine that
    appeared since is found.
    """
    now = [100.0]
    reads: list[float] = []
    kernel: dict[str, MacAddress] = {"fd00:77::1f2": MacAddress.parse("52:54:00:12:34:56")}

    def ipv6() -> dict[str, MacAddress]:
        reads.append(now[0])
        return dict(kernel)

    lookup = neighbour_table_lookup(tmp_path / "arp", ipv6, lambda: now[0])
    assert lookup("fd00:77::1f2") is not None
    now[0] += 0.5
    assert lookup("fd00:77::1f2") is not None
    assert reads == [100.0]

    kernel["fd00:77::1f3"] = MacAddress.parse("52:54:00:12:34:57")
    assert lookup("fd00:77::1f3") is not None  # not in the last read: read again
    assert reads == [100.0, 100.5]
    assert lookup("fd00:77::99") is None
    now[0] += 0.0625
    assert lookup("fd00:77::99") is None  # asked again at once: not read again
    assert reads == [100.0, 100.5]
    now[0] += 0.0625
    assert lookup("fd00:77::99") is None
    assert reads == [100.0, 100.5, 100.625]

    del kernel["fd00:77::1f2"]
    now[0] += 0.9375
    assert lookup("fd00:77::1f2") is not None  # still in a read under a second old
    now[0] += 0.0625
    assert lookup("fd00:77::1f2") is None  # a second on: read again, gone
    assert len(reads) == 4
