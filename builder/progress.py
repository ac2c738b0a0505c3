"""
What the builder tells the person running it: a progress bar on a terminal, one line
per step otherwise.
"""

from __future__ import annotations

import time
from typing import TextIO


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class Progress:
    """
    Reports steps, and the bytes of the current transfer when on a terminal.
    """

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._shown = 0.0
        self._label = ""

    def step(self, message: str) -> None:
        self._clear()
        self._stream.write(f"{message}\n")
        self._stream.flush()

    def start(self, label: str, total: int | None) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._shown = 0.0
        size = f" ({_size(total)})" if total else ""
        self.step(f"{label}{size}")

    def advance(self, count: int) -> None:
        self._done += count
        if not self._tty:
            return
        now = time.monotonic()
        if now - self._shown < 0.2:
            return
        self._shown = now
        rate = self._done / max(now - self._started, 1e-6)
        if self._total:
            fraction = min(self._done / self._total, 1.0)
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
        if self._tty and self._shown:
            self._stream.write("\r" + " " * 79 + "\r")
            self._shown = 0.0
