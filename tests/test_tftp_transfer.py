"""
The read transfer state machine on a L{Clock}: data, windows, wrap-around,
retransmission, probes and limits, without sockets or real time.
"""

from __future__ import annotations

import struct

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from pxepilot.tftp.files import BytesReader, IReader, NetasciiReader
from pxepilot.tftp.negotiation import Negotiated
from pxepilot.tftp.packets import Ack, Data, Error, OptionAck, Packet, decode
from pxepilot.tftp.transfer import (
    READ_AHEAD,
    Outcome,
    OutcomeKind,
    ReadTransfer,
    RetransmitPolicy,
    TransferState,
)


@implementer(IReader)
class SyntheticReader:
    """
    A large file whose bytes are computed, never stored; counts reads.
    """

    def __init__(self, size: int) -> None:
        self.size: int | None = size
        self.closed = False
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        assert self.size is not None
        length = max(0, min(length, self.size - offset))
        return (
            bytes((offset + i) % 251 for i in range(length))
            if length <= 4096
            else (b"\0" * length)
        )

    def close(self) -> None:
        self.closed = True


class Harness:
    """
    A transfer, the datagrams it sent, and how it ended.
    """

    def __init__(
        self,
        reader: IReader,
        negotiated: Negotiated | None = None,
        policy: RetransmitPolicy | None = None,
    ) -> None:
        self.clock = Clock()
        self.sent: list[bytes] = []
        self.outcomes: list[Outcome] = []
        self.reader = reader
        self.transfer = ReadTransfer(
            reader,
            negotiated or Negotiated(),
            self.sent.append,
            self.clock,
            policy or RetransmitPolicy(),
            self.outcomes.append,
        )

    def packets(self) -> list[Packet]:
        packets = [decode(d) for d in self.sent]
        self.sent.clear()
        return packets

    def blocks(self) -> list[int]:
        return [p.block for p in self.packets() if isinstance(p, Data)]

    def outcome(self) -> OutcomeKind | None:
        return self.outcomes[0].kind if self.outcomes else None


def test_lock_step_without_options() -> None:
    """
    No OACK: DATA 1 at once, each ACK brings the next block, a short block ends it.
    """
    h = Harness(BytesReader(b"a" * 512 + b"b" * 100))
    h.transfer.start()
    assert h.packets() == [Data(1, b"a" * 512)]
    h.transfer.ack(1)
    assert h.packets() == [Data(2, b"b" * 100)]
    assert h.outcome() is None
    h.transfer.ack(2)
    assert h.outcome() is OutcomeKind.COMPLETE
    assert h.transfer.state is TransferState.DONE
    assert h.transfer.bytes_acknowledged == 612
    assert h.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("size", "blocks"),
    [(0, [b""]), (512, [b"x" * 512, b""]), (1024, [b"x" * 512, b"x" * 512, b""])],
)
def test_empty_block_at_the_end(size: int, blocks: list[bytes]) -> None:
    """
    An empty file is one empty DATA 1; a multiple of the block size ends with an empty
    block.
    """
    h = Harness(BytesReader(b"x" * size))
    h.transfer.start()
    received = []
    for number in range(1, len(blocks) + 1):
        [packet] = h.packets()
        assert isinstance(packet, Data)
        assert packet.block == number
        received.append(packet.payload)
        h.transfer.ack(number)
    assert received == blocks
    assert h.outcome() is OutcomeKind.COMPLETE


def test_oack_then_data() -> None:
    """
    With options: OACK, then DATA 1 only after ACK 0.
    """
    negotiated = Negotiated(1024, 1, None, (("blksize", "1024"), ("tsize", "1500")))
    h = Harness(BytesReader(b"z" * 1500), negotiated)
    h.transfer.start()
    assert h.packets() == [OptionAck((("blksize", "1024"), ("tsize", "1500")))]
    assert h.transfer.state is TransferState.NEGOTIATING
    h.transfer.ack(5)
    assert h.packets() == []
    h.transfer.ack(0)
    assert h.packets() == [Data(1, b"z" * 1024)]
    assert h.transfer.confirmed


def test_duplicate_ack_does_not_resend() -> None:
    """
    A duplicated ACK sends nothing (the Sorcerer's Apprentice bug); so does an ACK for a
    block not sent yet.
    """
    h = Harness(BytesReader(b"q" * 2000))
    h.transfer.start()
    h.packets()
    h.transfer.ack(1)
    assert h.blocks() == [2]
    h.transfer.ack(1)
    h.transfer.ack(1)
    h.transfer.ack(3)
    h.transfer.ack(9)
    assert h.packets() == []


def test_windows_carry_the_file_in_order() -> None:
    """
    Windows of 4 blocks of 8 bytes, each sent after the ACK of the previous window's
    last block, carry the file exactly.
    """
    content = bytes(range(100))
    h = Harness(BytesReader(content), Negotiated(8, 4, None, (("windowsize", "4"),)))
    h.transfer.start()
    h.packets()
    h.transfer.ack(0)
    received = b""
    while h.outcome() is None:
        window = h.packets()
        assert 1 <= len(window) <= 4
        for packet in window:
            assert isinstance(packet, Data)
            received += packet.payload
        h.transfer.ack(window[-1].block)  # type: ignore[union-attr]
    assert received == content


def test_partial_window_ack_continues_after_it() -> None:
    """
    RFC 7440's example: after ACK 4, DATA 5-8; ACK 5 (6-8 lost) brings DATA 6-9; the
    last window is resent whole when its ACK is lost; the file ends with block 13.
    """
    negotiated = Negotiated(512, 4, None, (("windowsize", "4"),))
    h = Harness(BytesReader(b"w" * (512 * 12 + 100)), negotiated)
    h.transfer.start()
    h.packets()
    h.transfer.ack(0)
    assert h.blocks() == [1, 2, 3, 4]
    h.transfer.ack(4)
    assert h.blocks() == [5, 6, 7, 8]
    h.transfer.ack(5)
    assert h.blocks() == [6, 7, 8, 9]
    h.transfer.ack(9)
    assert h.blocks() == [10, 11, 12, 13]
    h.clock.advance(1)
    assert h.blocks() == [10, 11, 12, 13]
    h.transfer.ack(13)
    assert h.outcome() is OutcomeKind.COMPLETE


def test_window_shorter_at_the_end() -> None:
    """
    The last window holds only the blocks left, the empty final block included.
    """
    negotiated = Negotiated(8, 8, None, (("windowsize", "8"),))
    h = Harness(BytesReader(b"x" * 24), negotiated)
    h.transfer.start()
    h.transfer.ack(0)
    packets = h.packets()[1:]
    assert [p.block for p in packets] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert packets[-1] == Data(4, b"")


def test_block_numbers_wrap_to_zero() -> None:
    """
    At blksize 8, a 5-wrap file: block 65536 goes out as 0, and the transfer completes
    with every block in order.
    """
    size = 8 * 65536 * 5 + 3
    h = Harness(SyntheticReader(size), Negotiated(8, 1, None, (("blksize", "8"),)))
    h.transfer.start()
    h.packets()
    h.transfer.ack(0)
    expected = 1
    while h.outcome() is None:
        [datagram] = h.sent
        h.sent.clear()
        (opcode, wire) = struct.unpack_from("!HH", datagram)
        assert (opcode, wire) == (3, expected & 0xFFFF)
        h.transfer.ack(wire)
        expected += 1
    assert expected - 1 == size // 8 + 1
    assert h.outcome() is OutcomeKind.COMPLETE
    assert h.transfer.bytes_acknowledged == size


def test_stale_ack_around_the_wrap() -> None:
    """
    After the wrap, a late ACK 65535 (or 65534) is old news, not a block from the future:
    it is ignored and the transfer goes on.
    """
    h = Harness(SyntheticReader(8 * 70000), Negotiated(8, 1, None, (("blksize", "8"),)))
    h.transfer.start()
    h.transfer.ack(0)
    for block in range(1, 65537):
        h.transfer.ack(block & 0xFFFF)
    assert h.blocks()[-1] == 65537 & 0xFFFF
    for stale in (65535, 65534, 60000, 0):
        h.transfer.ack(stale)
    assert h.sent == []
    h.transfer.ack(1)  # block 65537
    assert h.blocks() == [65538 & 0xFFFF]
    assert h.outcome() is None


def test_retransmission_backs_off_and_gives_up() -> None:
    """
    Nothing is resent before the timeout; then resends wait 1, 2, 4, 8, 8, 8 s, and after
    six the transfer times out without a word to the silent client.
    """
    h = Harness(BytesReader(b"r" * 2000))
    h.transfer.start()
    h.packets()
    h.transfer.ack(1)
    assert h.blocks() == [2]
    resent_at = []
    ended = None
    for _ in range(100):
        h.clock.advance(0.5)
        if h.sent:
            assert h.blocks() == [2]
            resent_at.append(h.clock.seconds())
        if h.outcome() is not None:
            ended = h.clock.seconds()
            break
    assert [b - a for a, b in zip([0.0, *resent_at], resent_at, strict=False)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
        8.0,
    ]
    assert h.outcome() is OutcomeKind.TIMED_OUT
    assert ended is not None
    assert ended - resent_at[-1] == 8
    assert "ACK 2" in h.outcomes[0].detail


def test_progress_resets_the_backoff() -> None:
    """
    An ACK after retransmissions brings the timeout back to its start.
    """
    h = Harness(BytesReader(b"r" * 2000))
    h.transfer.start()
    h.clock.advance(1)
    h.clock.advance(2)
    assert h.blocks() == [1, 1, 1]
    h.transfer.ack(1)
    assert h.blocks() == [2]
    h.clock.advance(0.9)
    assert h.packets() == []
    h.clock.advance(0.1)
    assert h.blocks() == [2]


def test_unacknowledged_requests_give_up_sooner() -> None:
    """
    A transfer never acknowledged (a spoofed request, perhaps) resends only three times.
    """
    h = Harness(BytesReader(b"s" * 100), Negotiated(512, 1, None, (("tsize", "100"),)))
    h.transfer.start()
    h.clock.pump([1, 2, 4, 8, 8, 8])
    assert [type(p) for p in h.packets()] == [OptionAck] * 4
    assert h.outcome() is OutcomeKind.TIMED_OUT


def test_client_timeout_option() -> None:
    """
    The client's timeout option sets the first retransmission delay.
    """
    h = Harness(BytesReader(b"t" * 100), Negotiated(512, 1, 6, (("timeout", "6"),)))
    h.transfer.start()
    h.packets()
    h.clock.advance(5.9)
    assert h.packets() == []
    h.clock.advance(0.1)
    assert len(h.packets()) == 1


@pytest.mark.parametrize("code", [0, 8])
def test_size_probe_after_oack(code: int) -> None:
    """
    ERROR 0 or 8 right after the OACK is the firmware's size probe.
    """
    h = Harness(BytesReader(b"p" * 100), Negotiated(512, 1, None, (("tsize", "100"),)))
    h.transfer.start()
    h.transfer.client_error(code, "User aborted the transfer")
    assert h.outcome() is OutcomeKind.PROBE
    assert h.clock.getDelayedCalls() == []
    assert h.reader.closed if hasattr(h.reader, "closed") else True


def test_probe_without_options_and_real_aborts() -> None:
    """
    Without an OACK, ERROR 0 after DATA 1 is a probe too; an ERROR later, or with another
    code, is an abort.
    """
    h = Harness(BytesReader(b"p" * 1000))
    h.transfer.start()
    h.transfer.client_error(0, "TFTP Aborted")
    assert h.outcome() is OutcomeKind.PROBE

    h = Harness(BytesReader(b"p" * 1000))
    h.transfer.start()
    h.transfer.ack(1)
    h.transfer.client_error(0, "disk full")
    assert h.outcome() is OutcomeKind.ABORTED

    h = Harness(BytesReader(b"p" * 1000), Negotiated(512, 1, None, (("tsize", "1000"),)))
    h.transfer.start()
    h.transfer.client_error(2, "no")
    assert h.outcome() is OutcomeKind.ABORTED


def test_total_time_is_bounded() -> None:
    """
    A client that ACKs just slowly enough never times out, but the transfer ends at the
    maximum duration with an ERROR.
    """
    h = Harness(SyntheticReader(512 * 1000), policy=RetransmitPolicy(max_duration=30))
    h.transfer.start()
    block = 0
    while h.outcome() is None:
        h.clock.advance(0.9)
        block += 1
        h.transfer.ack(block)
    assert h.outcome() is OutcomeKind.TOO_LONG
    assert isinstance(decode(h.sent[-1]), Error)
    assert 30 <= h.clock.seconds() < 33


def test_netascii_transfer() -> None:
    """
    A netascii transfer of unknown size ends at its first short block.
    """
    h = Harness(NetasciiReader(BytesReader(b"line\n" * 150)))
    h.transfer.start()
    data = b""
    block = 0
    while h.outcome() is None:
        packet = h.packets()[-1]
        assert isinstance(packet, Data)
        data += packet.payload
        block = packet.block
        h.transfer.ack(block)
    assert data == b"line\r\n" * 150
    assert block == 2


def test_stop_and_fail() -> None:
    """
    Stopping from this side sends ERROR 0 with the message (or nothing, for an
    eviction); a failure says 'server error'.
    """
    h = Harness(BytesReader(b"x" * 100))
    h.transfer.start()
    h.packets()
    h.transfer.stop(OutcomeKind.SHUTDOWN, "Server shutting down")
    assert h.packets() == [Error(0, "Server shutting down")]
    h.transfer.stop(OutcomeKind.EVICTED, None)
    assert h.outcomes == [Outcome(OutcomeKind.SHUTDOWN, "Server shutting down")]

    h = Harness(BytesReader(b"x" * 100))
    h.transfer.start()
    h.packets()
    h.transfer.stop(OutcomeKind.EVICTED, None)
    assert h.packets() == []

    h = Harness(BytesReader(b"x" * 100))
    h.transfer.start()
    h.packets()
    h.transfer.fail("disk error")
    assert h.packets() == [Error(0, "server error")]
    assert h.outcomes == [Outcome(OutcomeKind.FAILED, "disk error")]


def test_read_error_in_timer_ends_the_transfer() -> None:
    """
    A read that fails during a retransmission ends the transfer as failed, with an
    ERROR to the client.
    """

    class Failing(SyntheticReader):
        def read(self, offset: int, length: int) -> bytes:
            if self.reads:
                raise OSError(5, "Input/output error")
            return super().read(offset, length)

    # A window as large as a read-ahead piece is read for each send, retransmissions
    # included; reading the window after it ahead fails quietly.
    window = READ_AHEAD // 512
    h = Harness(Failing(4 * READ_AHEAD), Negotiated(windowsize=window))
    h.transfer.start()
    assert h.blocks() == list(range(1, window + 1))
    h.clock.advance(1)
    assert h.packets() == [Error(0, "server error")]
    assert h.outcome() is OutcomeKind.FAILED
    assert "Input/output error" in h.outcomes[0].detail


def test_lock_step_reads_the_file_in_pieces() -> None:
    """
    A lock-step transfer reads its file a piece at a time, not once per block, and the
    blocks cut from the pieces are the file's bytes, across the pieces' edges.
    """
    pattern = bytes(range(251)) * ((3 * READ_AHEAD + 700) // 251 + 2)

    class Pattern(SyntheticReader):
        def read(self, offset: int, length: int) -> bytes:
            self.reads += 1
            assert self.size is not None
            return pattern[offset : min(offset + length, self.size)]

    reader = Pattern(3 * READ_AHEAD + 700)
    h = Harness(reader, Negotiated(blksize=1468))
    h.transfer.start()
    received = b""
    while h.outcome() is None:
        packets = h.packets()
        assert len(packets) == 1
        packet = packets[0]
        assert isinstance(packet, Data)
        received += packet.payload
        h.transfer.ack(packet.block)
    assert h.outcome() is OutcomeKind.COMPLETE
    expected = reader.size or 0
    assert len(received) == expected
    assert received == pattern[:expected]
    assert reader.reads <= expected // (READ_AHEAD - READ_AHEAD % 1468) + 2


def test_ack_is_the_only_packet_type_it_takes() -> None:
    """
    Sanity of the helper: an ACK encodes as the 4 bytes the fast path reads.
    """
    assert decode(b"\0\4\1\0") == Ack(256)
