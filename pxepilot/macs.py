"""
MAC addresses as the Proxmox installer, iPXE and operators spell them.

Every spelling in common use maps to one L{MacAddress}; the canonical file-name form is
C{aa-bb-cc-dd-ee-ff}. Parsing is strict: a string is either one of the spellings below or
it is rejected, so a malformed value can never reach a file-system path.
"""

from __future__ import annotations

import re

from attrs import frozen

_HEX = "[0-9A-Fa-f]"
_SPELLINGS = (
    # aa:bb:cc:dd:ee:ff and aa-bb-cc-dd-ee-ff, one separator throughout
    re.compile(
        rf"({_HEX}{{2}})([:-])({_HEX}{{2}})\2({_HEX}{{2}})\2({_HEX}{{2}})\2"
        rf"({_HEX}{{2}})\2({_HEX}{{2}})"
    ),
    # aabb.ccdd.eeff (Cisco)
    re.compile(rf"({_HEX}{{4}})\.({_HEX}{{4}})\.({_HEX}{{4}})"),
    # aabbccddeeff
    re.compile(rf"{_HEX}{{12}}"),
)

# A hardware address of another length (EUI-64 and FireWire's 8 octets, InfiniBand's 20),
# written as colon- or dash-separated octets.
_OTHER_HARDWARE_ADDRESS = re.compile(rf"{_HEX}{{2}}(?:([:-]){_HEX}{{2}})(?:\1{_HEX}{{2}}){{6,30}}")


class MacAddressError(ValueError):
    """
    A string is not a MAC address in any accepted spelling.
    """


@frozen(order=True)
class MacAddress:
    """
    A 48-bit IEEE 802 MAC address.

    @ivar octets: The six octets.
    """

    octets: bytes

    def __attrs_post_init__(self) -> None:
        if len(self.octets) != 6:
            raise MacAddressError(f"a MAC address has 6 octets, not {len(self.octets)}")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """
        Parse any accepted spelling: C{aa:bb:cc:dd:ee:ff}, C{AA-BB-CC-DD-EE-FF},
        C{aabb.ccdd.eeff} or C{aabbccddeeff}, in any letter case, surrounding white space
        ignored.

        @raise MacAddressError: for anything else.
        """
        candidate = text.strip()
        for spelling in _SPELLINGS:
            if spelling.fullmatch(candidate):
                digits = re.sub("[^0-9A-Fa-f]", "", candidate)
                return cls(bytes.fromhex(digits))
        raise MacAddressError(f"not a MAC address: {describe(text)}")

    @property
    def canonical(self) -> str:
        """
        The canonical spelling used for host file names: C{aa-bb-cc-dd-ee-ff}.
        """
        return self.octets.hex("-")

    def __str__(self) -> str:
        """
        The conventional display spelling: C{aa:bb:cc:dd:ee:ff}.
        """
        return self.octets.hex(":")


def is_other_hardware_address(text: str) -> bool:
    """
    Whether C{text} is a well-formed hardware address that is not 48 bits long, such as
    the 20-octet address of an InfiniBand interface. The installer lists such interfaces
    beside the Ethernet ones; they cannot name a host but are not a malformed request.
    """
    return _OTHER_HARDWARE_ADDRESS.fullmatch(text.strip()) is not None


def describe(value: object, limit: int = 40) -> str:
    """
    A short, printable rendering of an untrusted value for error messages and logs.
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
