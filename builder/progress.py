"""
What the builder tells the person running it: a progress bar on a terminal; elsewhere
(systemd's journal, docker logs, CI) one line per step and, during a transfer, a
progress line every 5 s or 5 %, whichever comes first.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

#: Without a terminal: a progress line at least this often (seconds) ...
LINE_EVERY = 5.0
#: ... or once the transfer is this many percent further on ...
LINE_PERCENT = 5
#: ... but never more often than this (seconds), however fast the transfer goes.
LINE_AT_MOST = 1.0

# A redrawn bar costs nothing to read: five a second look smooth.
_BAR_EVERY = 0.2


class Clock(Protocol):
    def seconds(self) -> float: ...


class _Monotonic:
    def seconds(self) -> float:
        return time.monotonic()


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class Progress:
    """
    Reports steps, and the bytes of the current transfer: as a bar redrawn in place on
    a terminal, as whole lines otherwise.

    @param clock: Gives the time (the reactor, or a fake one in tests); by default a
        monotonic clock.
    """

    def __init__(self, stream: TextIO, tty: bool | None = None, clock: Clock | None = None):
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock: Clock = clock or _Monotonic()
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._shown: float | None = None
        self._line_at = 0.0
        self._line_done = 0
        self._label = ""

    def step(self, message: str) -> None:
        self._clear()
        self._stream.write(f"{message}\n")
        self._stream.flush()

    def start(self, label: str, total: int | None) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._started = self._clock.seconds()
        self._shown = None
        self._line_at = self._started
        self._line_done = 0
        size = f" ({_size(total)})" if total else ""
        self.step(f"{label}{size}")

    def advance(self, count: int) -> None:
        self._done += count
        now = self._clock.seconds()
        if self._tty:
            self._bar(now)
        else:
            self._line(now)

    def _fraction(self) -> float | None:
        return min(self._done / self._total, 1.0) if self._total else None

    def _rate(self, now: float) -> float:
        return self._done / max(now - self._started, 1e-6)

    def _line(self, now: float) -> None:
        elapsed = now - self._line_at
        if elapsed < LINE_AT_MOST:
            return
        # In whole numbers: 5 % of a size is not always a float that adds up.
        total = self._total or 0
        further = total > 0 and (self._done - self._line_done) * 100 >= total * LINE_PERCENT
        if elapsed < LINE_EVERY and not further:
            return
        self._line_at = now
        self._line_done = self._done
        rate = _size(self._rate(now))
        fraction = self._fraction()
        if fraction is None:
            text = f"{_size(self._done)}, {rate}/s"
        else:
            assert self._total is not None
            text = f"{fraction * 100:.0f}% {_size(self._done)} of {_size(self._total)}, {rate}/s"
        self._stream.write(f"{text}\n")
        self._stream.flush()

    def _bar(self, now: float) -> None:
        if self._shown is not None and now - self._shown < _BAR_EVERY:
            return
        self._shown = now
        rate = self._rate(now)
        fraction = self._fraction()
        if fraction is not None:
            assert self._total is not None
            bar = "#" * int(fraction * 30)
            text = (
                f"\r[{bar:<30}] {fraction * 100:5.1f}% {_size(self._done)} of "
                f"{_size(self._total)}, {_size(rate)}/s"
            )
        else:
            text = f"\r{_size(self._done)}, {_size(rate)}/s"
        self._stream.write(text)
        self._stream.flush()

    def _clear(self) -> None:
        if self._tty and self._shown is not None:
            self._stream.write("\r" + " " * 79 + "\r")
            self._shown = None
