"""
Finding a machine's MAC address in the kernel's ARP table: resolved entries only.
"""

from __future__ import annotations

from pathlib import Path

from pxepilot.hosts.neighbours import arp_table_lookup, no_neighbours, parse_arp_table
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
