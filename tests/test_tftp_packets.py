"""
The TFTP datagram codec: every packet round-trips, real clients' requests decode, and
arbitrary bytes raise only L{PacketError}.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    PacketError,
    ReadRequest,
    RequestOption,
    WriteRequest,
    decode,
    encode,
)

names = st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b)
option_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", min_size=1, max_size=12)
option_values = st.binary(min_size=0, max_size=20).filter(lambda b: b"\0" not in b)
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=50)


@st.composite
def requests(draw: st.DrawFn) -> ReadRequest | WriteRequest:
    write = draw(st.booleans())
    keys = draw(st.lists(option_names, unique_by=str.lower, max_size=5))
    # A value is kept only when followed by another option or the end; an empty value
    # is fine, an empty name ends the list.
    options = tuple(RequestOption(k, draw(option_values)) for k in keys)
    mode = draw(st.sampled_from(["octet", "netascii", "mail", "binary"]))
    if write:
        return WriteRequest(draw(names), mode, options)
    return ReadRequest(draw(names), mode, options)


packets = st.one_of(
    requests(),
    st.builds(Data, st.integers(0, 65535), st.binary(max_size=600)),
    st.builds(Ack, st.integers(0, 65535)),
    st.builds(Error, st.integers(0, 65535), printable),
    st.builds(
        OptionAck,
        st.lists(
            st.tuples(option_names, st.text(alphabet="0123456789", min_size=1, max_size=8)),
            max_size=4,
        ).map(tuple),
    ),
)


@given(packets)
def test_round_trip(packet: Packet) -> None:
    """
    C{decode(encode(p)) == p} for every packet.
    """
    assert decode(encode(packet)) == packet


@given(st.binary(max_size=700))
def test_arbitrary_bytes(datagram: bytes) -> None:
    """
    Any datagram decodes or raises L{PacketError}; nothing else escapes.
    """
    with contextlib.suppress(PacketError):
        decode(datagram)


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        # curl 7.88
        (
            b"\0\1f.bin\0octet\0tsize\0000\0blksize\0001468\0timeout\0006\0",
            ReadRequest(
                b"f.bin",
                "octet",
                (
                    RequestOption("tsize", b"0"),
                    RequestOption("blksize", b"1468"),
                    RequestOption("timeout", b"6"),
                ),
            ),
        ),
        # tftp-hpa 5.2: netascii, no options
        (b"\0\1f.txt\0netascii\0", ReadRequest(b"f.txt", "netascii")),
        # iPXE
        (
            b"\0\1undionly.kpxe\0octet\0blksize\0001432\0tsize\0000\0",
            ReadRequest(
                b"undionly.kpxe",
                "octet",
                (RequestOption("blksize", b"1432"), RequestOption("tsize", b"0")),
            ),
        ),
        # mode in capitals, option name in capitals
        (
            b"\0\1f\0OCTET\0BLKSIZE\0008\0",
            ReadRequest(b"f", "octet", (RequestOption("BLKSIZE", b"8"),)),
        ),
        # no final NUL
        (b"\0\1f\0octet", ReadRequest(b"f", "octet")),
        (
            b"\0\1f\0octet\0blksize\000512",
            ReadRequest(b"f", "octet", (RequestOption("blksize", b"512"),)),
        ),
        # fixed-size request padded with zeros (HP firmware)
        (b"\0\1f\0octet\0" + b"\0" * 500, ReadRequest(b"f", "octet")),
        # an option without a value, and a repeated one: first wins
        (
            b"\0\1f\0octet\0blksize\0001024\0BlkSize\0008\0tsize\0",
            ReadRequest(b"f", "octet", (RequestOption("blksize", b"1024"),)),
        ),
        (b"\0\2up\0octet\0", WriteRequest(b"up", "octet")),
        (b"\0\4\xff\xff", Ack(65535)),
        (b"\0\5\0\0No error, file close\0", Error(0, "No error, file close")),
        (b"\0\5\0\x08", Error(8, "")),
        (b"\0\5\0\1bad\x07\xffname\0junk", Error(1, "bad?\ufffdname")),
        (b"\0\6blksize\0001468\0", OptionAck((("blksize", "1468"),))),
    ],
)
def test_real_datagrams(datagram: bytes, expected: Packet) -> None:
    """
    What real clients send decodes as they mean it.
    """
    assert decode(datagram) == expected


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\0",
        b"\0\1",
        b"\0\1name",
        b"\0\1\0octet\0",
        b"\0\1f\0\0",
        b"\0\3\0",
        b"\0\4\0",
        b"\0\x07abc",
        b"\xff\xff",
        b"\0\1f\0oct\xffet\0",
        b"\0\6blksize\0",
    ],
)
def test_malformed(datagram: bytes) -> None:
    """
    Short datagrams, empty names or modes, unknown opcodes: L{PacketError}.
    """
    with pytest.raises(PacketError):
        decode(datagram)


def test_data_block_wraps_on_the_wire() -> None:
    """
    Block 65536 goes out as 0.
    """
    assert encode(Data(65536, b"x")) == b"\0\3\0\0x"
