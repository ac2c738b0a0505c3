"""
MAC address parsing: every common spelling is one address, anything else is rejected.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.macs import MacAddress, MacAddressError, is_other_hardware_address

octets = st.binary(min_size=6, max_size=6)


def spellings(raw: bytes) -> list[str]:
    digits = raw.hex()
    return [
        raw.hex(":"),
        raw.hex(":").upper(),
        raw.hex("-"),
        raw.hex("-").upper(),
        f"{digits[0:4]}.{digits[4:8]}.{digits[8:12]}",
        digits,
        digits.upper(),
        f"  {raw.hex(':')}\n",
    ]


@given(octets)
def test_every_spelling_is_the_same_address(raw: bytes) -> None:
    """
    Colon, dash, Cisco-dotted and bare spellings, in either case, parse to one address.
    """
    parsed = {MacAddress.parse(text) for text in spellings(raw)}
    assert parsed == {MacAddress(raw)}


@given(octets)
def test_canonical_and_display_forms_round_trip(raw: bytes) -> None:
    """
    The canonical and display spellings parse back to the same address.
    """
    mac = MacAddress(raw)
    assert MacAddress.parse(mac.canonical) == mac
    assert MacAddress.parse(str(mac)) == mac
    assert MacAddress.parse(mac.canonical).canonical == mac.canonical


@given(st.text())
def test_arbitrary_text_raises_only_the_declared_error(text: str) -> None:
    """
    Any string either parses or raises L{MacAddressError}; nothing else escapes.
    """
    try:
        mac = MacAddress.parse(text)
    except MacAddressError:
        return
    assert len(mac.octets) == 6
    assert MacAddress.parse(mac.canonical) == mac


def test_forms() -> None:
    """
    The canonical form is lower-case dashed; the display form lower-case with colons.
    """
    mac = MacAddress.parse("B0:7B:25:C1:0A:10")
    assert mac.canonical == "b0-7b-25-c1-0a-10"
    assert str(mac) == "b0:7b:25:c1:0a:10"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b0:7b:25:c1:0a",
        "b0:7b:25:c1:0a:10:11",
        "b0:7b-25:c1:0a:10",  # mixed separators
        "b0:7b:25:c1:0a:1g",
        "b07b.25c1.0a1",
        "../../etc/passwd",
        "/etc/shadow",
        "b0:7b:25:c1:0a:10/../x",
        "b0:7b:25:c1:0a:10\x00",
        "01-b0-7b-25-c1-0a-10",
        "b0 7b 25 c1 0a 10",
        "\uff10" * 12,  # full-width digits are not hex digits
    ],
)
def test_rejected(text: str) -> None:
    """
    Malformed strings, path fragments and non-ASCII digits are not MAC addresses.
    """
    with pytest.raises(MacAddressError):
        MacAddress.parse(text)


def test_wrong_number_of_octets() -> None:
    """
    A L{MacAddress} has exactly six octets.
    """
    with pytest.raises(MacAddressError):
        MacAddress(b"\x00" * 5)


def test_other_hardware_addresses() -> None:
    """
    InfiniBand (20 octets) and EUI-64 (8 octets) addresses are recognised as hardware
    addresses that are not MACs; garbage and MACs are not.
    """
    infiniband = ":".join(["80", "00", "02", "08", "fe", "80"] + ["00"] * 14)
    assert is_other_hardware_address(infiniband)
    assert is_other_hardware_address("00-11-22-33-44-55-66-77")
    assert not is_other_hardware_address("b0:7b:25:c1:0a:10")
    assert not is_other_hardware_address("b0:7b:25:c1:0a:10:11")
    assert not is_other_hardware_address("not a mac")
    assert not is_other_hardware_address("00:11-22:33:44:55:66:77")
