"""
Option negotiation: only requested and granted options, never above a request, invalid
values left out, and no empty OACK.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.tftp.negotiation import Limits, Negotiated, negotiate
from pxepilot.tftp.packets import RequestOption

LIMITS = Limits(max_blksize=65464, max_windowsize=64, max_window_bytes=64 * 1024)


def opts(*pairs: tuple[str, str]) -> tuple[RequestOption, ...]:
    return tuple(RequestOption(name, value.encode()) for name, value in pairs)


def test_no_options_means_no_oack() -> None:
    """
    A plain RFC 1350 request: 512-byte lock-step, no OACK.
    """
    assert negotiate((), 1000, False, LIMITS) == Negotiated(512, 1, None, ())


def test_ipxe() -> None:
    """
    iPXE's request is granted as asked, in its order.
    """
    result = negotiate(opts(("blksize", "1432"), ("tsize", "0")), 70000, False, LIMITS)
    assert result == Negotiated(1432, 1, None, (("blksize", "1432"), ("tsize", "70000")))


def test_uefi_window() -> None:
    """
    EDK2's request with a window of 4.
    """
    result = negotiate(
        opts(("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")), 5, False, LIMITS
    )
    assert (result.blksize, result.windowsize) == (1468, 4)
    assert result.oack == (("tsize", "5"), ("blksize", "1468"), ("windowsize", "4"))


@pytest.mark.parametrize(
    ("value", "granted"),
    [
        ("8", 8),
        ("512", 512),
        ("65464", 65464),
        ("70000", 65464),
        ("99999999", 65464),
        ("7", None),
        ("0", None),
        ("abc", None),
        ("-512", None),
        ("+512", None),
        (" 512", None),
        ("0x200", None),
        ("1" * 30, None),
        ("", None),
    ],
)
def test_blksize(value: str, granted: int | None) -> None:
    """
    blksize: 8 up to the request, capped at 65464; invalid values are left out.
    """
    result = negotiate(opts(("blksize", value)), 100, False, LIMITS)
    if granted is None:
        assert result == Negotiated()
    else:
        assert result.blksize == granted
        assert result.oack == (("blksize", str(granted)),)


def test_blksize_capped_by_configuration() -> None:
    """
    The configured maximum caps the grant.
    """
    result = negotiate(opts(("blksize", "9000")), 100, False, Limits(max_blksize=1468))
    assert result.oack == (("blksize", "1468"),)


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        ("1", "1"),
        ("6", "6"),
        ("255", "255"),
        ("06", "06"),
        ("0", None),
        ("256", None),
        ("x", None),
    ],
)
def test_timeout(value: str, echoed: str | None) -> None:
    """
    timeout: 1-255 echoed exactly, anything else left out.
    """
    result = negotiate(opts(("timeout", value)), 100, False, LIMITS)
    assert result.oack == ((("timeout", echoed),) if echoed else ())
    assert result.timeout == (int(value) if echoed else None)


def test_tsize() -> None:
    """
    tsize: the exact size in octet mode; left out in netascii, for unknown sizes and
    for an empty file (curl rejects 'tsize 0').
    """
    assert negotiate(opts(("tsize", "0")), 5 * 2**30, False, LIMITS).oack == (
        ("tsize", str(5 * 2**30)),
    )
    assert negotiate(opts(("tsize", "0")), 100, True, LIMITS).oack == ()
    assert negotiate(opts(("tsize", "0")), None, False, LIMITS).oack == ()
    assert negotiate(opts(("tsize", "0")), 0, False, LIMITS).oack == ()
    assert negotiate(opts(("tsize", "enable")), 100, False, LIMITS).oack == ()


@pytest.mark.parametrize(
    ("blksize", "requested", "granted"),
    [
        ("512", "1", 1),
        ("512", "16", 16),
        ("512", "65535", 64),
        ("1468", "16", 16),
        ("1468", "64", 44),
        ("8192", "64", 8),
        ("65464", "8", 1),
        ("512", "0", None),
        ("512", "65536", None),
    ],
)
def test_windowsize(blksize: str, requested: str, granted: int | None) -> None:
    """
    windowsize: never above the request, capped in blocks and in bytes; out of range
    left out. The block size may come after it in the request.
    """
    result = negotiate(opts(("windowsize", requested), ("blksize", blksize)), 100, False, LIMITS)
    if granted is None:
        assert [n for n, _ in result.oack] == ["blksize"]
        assert result.windowsize == 1
    else:
        assert result.oack[0] == ("windowsize", str(granted))
        assert result.windowsize == granted


def test_names_are_case_insensitive_and_echoed_as_sent() -> None:
    """
    Option names match in any case and come back spelled as the client spelled them;
    unknown options are left out.
    """
    result = negotiate(
        opts(("BlkSize", "1024"), ("multicast", ""), ("TSIZE", "0")), 7, False, LIMITS
    )
    assert result.oack == (("BlkSize", "1024"), ("TSIZE", "7"))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "x"]),
            st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=5)),
        ),
        max_size=6,
        unique_by=lambda p: p[0],
    ),
    st.one_of(st.none(), st.integers(0, 2**40)),
    st.booleans(),
)
def test_grants_are_never_above_requests(
    pairs: list[tuple[str, str]], size: int | None, netascii: bool
) -> None:
    """
    Whatever is asked, the OACK holds only requested options, within their limits.
    """
    options = tuple(RequestOption(n, v.encode("utf-8")) for n, v in pairs)
    result = negotiate(options, size, netascii, LIMITS)
    requested = dict(pairs)
    for name, value in result.oack:
        assert name in requested
        if name in ("blksize", "windowsize"):
            assert int(value) <= int(requested[name])
    assert 8 <= result.blksize <= 65464
    assert 1 <= result.windowsize <= 64
    assert result.windowsize * result.blksize <= 64 * 1024 or result.windowsize == 1
