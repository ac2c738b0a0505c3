"""
One read transfer as a small state machine, with no socket and no reactor in sight:
datagrams go out through a C{send} callable, time comes from an injected clock.

States: C{NEGOTIATING} (OACK sent, waiting for ACK 0), C{SENDING} (a window of DATA
out, waiting for its ACK), C{DONE}. The handler for ACKs is swapped on each state
change, so the per-block path makes no state tests.

Block numbers are 16 bits on the wire and wrap to 0 after 65535; inside, blocks are
counted without bound and each ACK is mapped onto the count by its distance from the
last acknowledged block, so files of any size work and a stale ACK from before a wrap
is never taken for a new one.
"""

from __future__ import annotations

import contextlib
import enum
import struct
from collections.abc import Callable

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pxepilot.tftp.files import IReader
from pxepilot.tftp.negotiation import Negotiated
from pxepilot.tftp.packets import OP_DATA, ErrorCode, OptionAck, encode, encode_error

_data_header = struct.Struct("!HH").pack

# Bytes read from the file at once for transfers whose windows are smaller.
READ_AHEAD = 64 * 1024


class TransferState(enum.Enum):
    NEGOTIATING = "negotiating"
    SENDING = "sending"
    DONE = "done"


class OutcomeKind(enum.Enum):
    """
    How a transfer ended.
    """

    COMPLETE = "complete"
    PROBE = "probe"  # the client asked for the size (tsize) and stopped, as firmware does
    ABORTED = "aborted"  # the client sent an ERROR
    TIMED_OUT = "timed-out"
    TOO_LONG = "too-long"
    TOO_SLOW = "too-slow"  # acknowledged, but far slower than any real client
    EVICTED = "evicted"  # made room for another client: never acknowledged, or very slow
    SHUTDOWN = "shutdown"
    FAILED = "failed"


@frozen
class Outcome:
    kind: OutcomeKind
    detail: str = ""


@frozen
class RetransmitPolicy:
    """
    When to send again and when to give up.

    @ivar timeout: Seconds before the first retransmission, unless the client asked
        for its own (RFC 2349).
    @ivar max_timeout: The backoff doubles the wait up to this.
    @ivar retries: Retransmissions in a row before a transfer times out.
    @ivar unconfirmed_retries: The same, for a transfer never acknowledged at all: a
        spoofed request must not turn the server into an amplifier.
    @ivar max_duration: Longest a transfer may take, in seconds.
    @ivar min_rate: Bytes a second an acknowledged transfer must progress, on average
        over each C{rate_window}, or it ends as too slow.
    @ivar rate_window: Seconds over which C{min_rate} is measured.
    """

    timeout: float = 1.0
    max_timeout: float = 8.0
    retries: int = 6
    unconfirmed_retries: int = 3
    max_duration: float = 3600.0
    # A client holding a transfer open with tiny blocks and rare ACKs (blksize 8, one
    # ACK in 5 s is 1.6 B/s) keeps a place for an hour. 32 B/s over a minute is four
    # blocks of 512: a real client that slow loses four datagrams in a row for every
    # block, and is a backoff away from timing out anyway; one in lock-step over a
    # 100 ms round trip does 5 KB/s.
    min_rate: float = 32.0
    rate_window: float = 60.0


class ReadTransfer:
    """
    Sends one file to one client.

    @ivar state: The current L{TransferState}.
    @ivar confirmed: Whether the client has acknowledged anything.
    @ivar bytes_acknowledged: Data bytes the client has confirmed.
    """

    def __init__(
        self,
        reader: IReader,
        negotiated: Negotiated,
        send: Callable[[bytes], object],
        clock: IReactorTime,
        policy: RetransmitPolicy,
        finished: Callable[[Outcome], None],
        on_confirmed: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._negotiated = negotiated
        self._blksize = negotiated.blksize
        self._window = negotiated.windowsize
        self._send = send
        self._clock = clock
        self._seconds = clock.seconds
        self._policy = policy
        self._finished = finished
        self._on_confirmed = on_confirmed
        size = reader.size
        # The last block: short, or empty when the size is a multiple of the block size.
        self._last: int | None = None if size is None else size // self._blksize + 1
        self._acked = 0
        self._next = 1
        # The window after the one in flight, read ahead (at most one window).
        self._ready: list[bytes] = []
        self._ready_first = 0
        # What was read ahead of the window being made, and where it starts.
        self._buffer = b""
        self._buffer_offset = 0
        self._base_timeout = float(negotiated.timeout or policy.timeout)
        self._timeout = self._base_timeout
        self._retries = 0
        self._timer: IDelayedCall | None = None
        self._sent_at = 0.0
        self.started = clock.seconds()
        # Progress is measured over windows of time: bytes acknowledged at the start
        # of the current one, and when it started.
        self._rate_since = self.started
        self._rate_bytes = 0
        self.confirmed = False
        self.state = TransferState.NEGOTIATING
        self.ack: Callable[[int], None] = self._ack_ignored

    @property
    def bytes_acknowledged(self) -> int:
        sent = self._acked * self._blksize
        size = self._reader.size
        return sent if size is None else min(sent, size)

    def start(self) -> None:
        """
        Send the OACK, or DATA 1 when no option was granted.
        """
        if self._negotiated.oack:
            self.ack = self._ack_negotiating
            self._send_oack()
        else:
            self._enter_sending()

    # -- inputs

    def _ack_ignored(self, block: int) -> None:
        pass

    def _ack_negotiating(self, block: int) -> None:
        if block == 0:
            self._confirm()
            self._enter_sending()

    def _ack_sending(self, block: int) -> None:
        acked = self._acked
        delta = (block - acked) & 0xFFFF
        # 0: a duplicate, which must not trigger a resend (RFC 1123 4.2.3.1, the
        # Sorcerer's Apprentice). Beyond what was sent: stale from before a wrap.
        if not delta or delta >= self._next - acked:
            return
        acked += delta
        if self._acknowledged(acked):
            # A window ACKed in part means blocks were lost: go on right after the
            # highest block received in order (RFC 7440 section 4).
            self._send_from(acked + 1)

    def _ack_lockstep(self, block: int) -> None:
        # _ack_sending for a window of one block, the way most firmware transfers, with
        # nothing read ahead but the file's piece: on a busy server this runs for every
        # block of every transfer.
        acked = self._acked
        # Only the block in flight moves the transfer on: not a duplicate (RFC 1123
        # 4.2.3.1), nor a stale ACK from before a wrap.
        if (block - acked) & 0xFFFF != 1:
            return
        acked += 1
        if self._acknowledged(acked):
            self._send_block(acked + 1)

    def _acknowledged(self, acked: int) -> bool:
        """
        The client has everything up to block C{acked}: whether there is more to send.
        """
        self._acked = acked
        if not self.confirmed:
            self._confirm()
        if acked == self._last:
            self._end(Outcome(OutcomeKind.COMPLETE))
            return False
        if self._retries:
            # Back from retransmitting: the backed-off timer goes, a fresh one follows.
            self._retries = 0
            self._timeout = self._base_timeout
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return True

    def _send_block(self, number: int) -> None:
        blksize = self._blksize
        data = self._read((number - 1) * blksize, blksize)
        if len(data) < blksize:
            self._last = number
        # Not contextlib.suppress: it would cost more than the rest of this method.
        try:  # noqa: SIM105
            self._send(_data_header(OP_DATA, number & 0xFFFF) + data)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            # A full send buffer: lost like a datagram on the wire, sent again on time.
            pass
        self._next = number + 1
        self._sent()

    def _confirm(self) -> None:
        self.confirmed = True
        if self._on_confirmed is not None:
            self._on_confirmed()

    def client_error(self, code: int, message: str) -> None:
        """
        The client sent an ERROR. ERROR 0 or 8 right after the OACK (or after DATA 1
        when no option was granted) is the size probe of PXE firmware, a normal end.
        """
        if self.state is TransferState.DONE:
            return
        before_data = self.state is TransferState.NEGOTIATING or (
            not self._negotiated.oack and self._acked == 0
        )
        if code in (ErrorCode.NOT_DEFINED, ErrorCode.OPTION_REFUSED) and before_data:
            self._end(Outcome(OutcomeKind.PROBE, f"error {code} {message!r}"))
        else:
            self._end(Outcome(OutcomeKind.ABORTED, f"client sent error {code} {message!r}"))

    def stop(self, kind: OutcomeKind, message: str | None) -> None:
        """
        End the transfer from this side, telling the client with ERROR 0 and
        C{message} unless it is L{None}.
        """
        if self.state is TransferState.DONE:
            return
        if message is not None:
            self._send_quietly(encode_error(ErrorCode.NOT_DEFINED, message))
        self._end(Outcome(kind, message or ""))

    def fail(self, reason: str) -> None:
        """
        Something went wrong on this side: tell the client and end.
        """
        if self.state is not TransferState.DONE:
            self._send_quietly(encode_error(ErrorCode.NOT_DEFINED, "server error"))
            self._end(Outcome(OutcomeKind.FAILED, reason))

    # -- outputs

    def _enter_sending(self) -> None:
        self.state = TransferState.SENDING
        if self._window == 1:
            self.ack = self._ack_lockstep
            self._send_block(1)
        else:
            self.ack = self._ack_sending
            self._send_from(1)

    def _send_oack(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError, ConnectionRefusedError):
            self._send(encode(OptionAck(self._negotiated.oack)))
        self._sent()

    def _window_from(self, first: int) -> list[bytes]:
        """
        The DATA datagrams of the window that starts at block C{first}.
        """
        blksize = self._blksize
        count = self._window
        last = self._last
        if last is not None and first + count - 1 > last:
            count = last - first + 1
        data = self._read((first - 1) * blksize, count * blksize)
        if count == 1:
            if len(data) < blksize:
                self._last = first
            return [_data_header(OP_DATA, first & 0xFFFF) + data]
        datagrams = []
        for index in range(count):
            chunk = data[index * blksize : (index + 1) * blksize]
            datagrams.append(_data_header(OP_DATA, (first + index) & 0xFFFF) + chunk)
            if len(chunk) < blksize:
                self._last = first + index
                break
        return datagrams

    def _read(self, offset: int, length: int) -> bytes:
        # Read in pieces of at least READ_AHEAD bytes and cut blocks from them: a
        # lock-step transfer would otherwise make one read per block, a third of its
        # system calls.
        start = self._buffer_offset
        buffer = self._buffer
        if start <= offset and offset + length <= start + len(buffer):
            return buffer[offset - start : offset - start + length]
        if length >= READ_AHEAD:
            return self._reader.read(offset, length)
        buffer = self._reader.read(offset, READ_AHEAD - READ_AHEAD % self._blksize or length)
        self._buffer = buffer
        self._buffer_offset = offset
        return buffer[:length]

    def _send_from(self, first: int) -> None:
        # The per-block path: kept flat, since on a busy server every microsecond here
        # is multiplied by every block of every transfer.
        datagrams = self._ready if first == self._ready_first else self._window_from(first)
        send = self._send
        try:
            for datagram in datagrams:
                send(datagram)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            # A full send buffer: the rest of the window is lost like any datagram on
            # the wire, and the retransmission timer brings it back.
            pass
        following = first + len(datagrams)
        self._next = following
        self._sent_at = self._seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._timer_fired)
        # While the client takes this window in, the next one is made ready, so that
        # its ACK is answered at once.
        self._ready = []
        self._ready_first = 0
        last = self._last
        if last is None or following <= last:
            try:
                self._ready = self._window_from(following)
                self._ready_first = following
            except OSError:
                # Reading ahead is only a head start: the read is tried again, and its
                # failure reported, when the client asks for that window.
                pass

    def _sent(self) -> None:
        # One timer per transfer, re-armed lazily: a new window only moves the time it
        # is measured from, which costs nothing per block.
        self._sent_at = self._seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self.state is TransferState.DONE:
            return
        try:
            self._check_time()
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e}")

    def _check_time(self) -> None:
        now = self._clock.seconds()
        if now - self.started >= self._policy.max_duration:
            self.stop(OutcomeKind.TOO_LONG, "transfer took too long")
            return
        if self.confirmed and now - self._rate_since >= self._policy.rate_window:
            sent = self.bytes_acknowledged
            if sent - self._rate_bytes < self._policy.min_rate * (now - self._rate_since):
                self.stop(OutcomeKind.TOO_SLOW, "transfer too slow")
                return
            self._rate_since = now
            self._rate_bytes = sent
        due = self._sent_at + self._timeout
        if now < due:
            self._timer = self._clock.callLater(due - now, self._timer_fired)
            return
        allowed = self._policy.retries if self.confirmed else self._policy.unconfirmed_retries
        if self._retries >= allowed:
            waiting = (
                "ACK 0"
                if self.state is TransferState.NEGOTIATING
                else (f"ACK {(self._next - 1) & 0xFFFF}")
            )
            self._end(Outcome(OutcomeKind.TIMED_OUT, f"no {waiting} after {allowed} retries"))
            return
        self._retries += 1
        self._timeout = min(self._timeout * 2, max(self._policy.max_timeout, self._base_timeout))
        if self.state is TransferState.NEGOTIATING:
            self._send_oack()
        elif self._window == 1:
            self._send_block(self._acked + 1)
        else:
            self._send_from(self._acked + 1)

    def _send_quietly(self, datagram: bytes) -> None:
        with contextlib.suppress(OSError):
            self._send(datagram)

    def _end(self, outcome: Outcome) -> None:
        self.state = TransferState.DONE
        self.ack = self._ack_ignored
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ready = []
        self._buffer = b""
        self._reader.close()
        self._finished(outcome)
