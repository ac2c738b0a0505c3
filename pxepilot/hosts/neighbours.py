"""
Who is at an IP address: the system's neighbour (ARP) table.

TFTP requests carry no MAC address. A machine that fetches its boot file is on the
server's own link (TFTP is not routed in practice, and DHCP relays do not relay it), so
once pxe-pilot has answered it, the kernel knows its MAC address. Through a router the
table holds the router's address instead of the client's, and the lookup finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
