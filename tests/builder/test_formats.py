"""
The small formats: newc cpio members and .cd-info files.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder import cpio
from builder.cdinfo import NotProxmox, parse_cd_info, product_info
from builder.testing import cd_info
from tests.builder.helpers import parse_newc


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz./_-", min_size=1, max_size=40),
    st.binary(max_size=300),
)
def test_newc_member_round_trips(name: str, data: bytes) -> None:
    """
    A member and a trailer parse back to the name and data, 4-byte aligned.
    """
    archive = cpio.header(name, len(data)) + data + cpio.data_padding(len(data)) + cpio.trailer()
    assert len(cpio.header(name, len(data))) % 4 == 0
    members, end = parse_newc(archive)
    assert end == len(archive)
    [(parsed, start, size)] = members
    assert (parsed, archive[start : start + size]) == (name, data)


def test_newc_limit() -> None:
    """
    newc sizes are 8 hex digits: a member of 4 GiB is refused, not truncated.
    """
    assert cpio.header("proxmox.iso", 2**32 - 1)
    with pytest.raises(ValueError, match="4 GiB"):
        cpio.header("proxmox.iso", 2**32)


def test_cd_info() -> None:
    """
    The identity of a Proxmox ISO, quotes and comments handled.
    """
    info = product_info(
        b"# built\nRELEASE='9.2'\nISORELEASE=\"1\"\nISONAME='proxmox-ve'\n"
        b"PRODUCT='pve'\nPRODUCTLONG='Proxmox VE'\n\n"
    )
    assert (info.product, info.product_name, info.iso_name, info.version) == (
        "pve",
        "Proxmox VE",
        "proxmox-ve",
        "9.2-1",
    )
    assert (
        product_info(
            cd_info("pbs", "Proxmox Backup Server", "proxmox-backup-server", "4.1", "1")
        ).product
        == "pbs"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PRODUCT='debian'\n", "not a Proxmox ISO"),
        (b"", "not a Proxmox ISO"),
        (cd_info(iso_name="../etc"), "no usable ISONAME"),
        (cd_info(release=""), "no usable RELEASE"),
        (cd_info(iso_release="1/2"), "no usable ISORELEASE"),
    ],
)
def test_cd_info_refused(data: bytes, message: str) -> None:
    """
    Another distribution, or names that cannot become directories, are refused.
    """
    with pytest.raises(NotProxmox, match=message):
        product_info(data)


def test_parse_cd_info_keys() -> None:
    """
    Keys are upper-cased and values unquoted.
    """
    assert parse_cd_info(b"product='pve'\nX=y\n") == {"PRODUCT": "pve", "X": "y"}
