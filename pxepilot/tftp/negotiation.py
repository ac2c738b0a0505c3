"""
Option negotiation (RFC 2347, 2348, 2349, 7440) as a pure function.

Only options the client asked for and the server grants are acknowledged; an invalid
value leaves its option out. When nothing is granted there is no OACK at all: the
transfer starts with DATA 1, because UEFI firmware ignores an empty OACK.
"""

from __future__ import annotations

import re

from attrs import frozen

from pxepilot.tftp.packets import RequestOption

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
MAX_WINDOWSIZE = 65535

_NUMBER = re.compile(rb"[0-9]{1,10}")


@frozen
class Limits:
    """
    What the server grants at most.

    @ivar max_blksize: Largest block size (8-65464).
    @ivar max_windowsize: Largest window, in blocks.
    @ivar max_window_bytes: Largest window, in bytes: a client's receive buffer must
        hold a whole window, or the end of every window is lost. Linux gives a socket
        208 KiB by default, and counts each datagram at up to twice its size.
    """

    max_blksize: int = MAX_BLKSIZE
    max_windowsize: int = 64
    max_window_bytes: int = 64 * 1024


@frozen
class Negotiated:
    """
    The parameters of a transfer.

    @ivar blksize: Data bytes per block.
    @ivar windowsize: Blocks sent before waiting for an ACK.
    @ivar timeout: The retransmission timeout the client asked for, if granted.
    @ivar oack: The granted options in request order, with the client's spelling of
        their names; empty when the transfer starts with DATA 1.
    """

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: int | None = None
    oack: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """
        The granted options for a log line, such as C{blksize=1468 tsize=1024}.
        """
        return " ".join(f"{name.lower()}={value}" for name, value in self.oack) or "none"


def _number(value: bytes) -> int | None:
    """
    A decimal number of plain digits; signs, spaces, hex and huge values are invalid.
    """
    return int(value) if _NUMBER.fullmatch(value) else None


def negotiate(
    options: tuple[RequestOption, ...], size: int | None, netascii: bool, limits: Limits
) -> Negotiated:
    """
    Decide a read transfer's parameters.

    @param options: The request's options.
    @param size: The exact number of bytes the transfer will carry, or L{None} when it
        cannot be known in advance (netascii, generated content).
    @param netascii: Whether the transfer is in netascii mode.
    @param limits: The server's limits.
    """
    blksize = DEFAULT_BLKSIZE
    windowsize = 1
    timeout = None
    granted: list[tuple[str, str]] = []
    requested_window: int | None = None
    for option in options:
        value = _number(option.value)
        if option.key == "blksize" and value is not None and value >= MIN_BLKSIZE:
            blksize = min(value, MAX_BLKSIZE, limits.max_blksize)
            granted.append((option.name, str(blksize)))
        elif option.key == "timeout" and value is not None and 1 <= value <= 255:
            timeout = value
            granted.append((option.name, option.value.decode("ascii")))
        elif option.key == "tsize" and value is not None and not netascii and size:
            # Left out for an empty file: curl rejects "tsize 0" as invalid.
            granted.append((option.name, str(size)))
        elif option.key == "windowsize" and value is not None and 1 <= value <= MAX_WINDOWSIZE:
            # Granted once the block size is known: the window is capped in bytes too.
            requested_window = value
            granted.append((option.name, ""))
    if requested_window is not None:
        by_bytes = max(1, limits.max_window_bytes // blksize)
        windowsize = min(requested_window, limits.max_windowsize, by_bytes)
        granted = [(n, str(windowsize) if n.lower() == "windowsize" else v) for n, v in granted]
    return Negotiated(blksize, windowsize, timeout, tuple(granted))
