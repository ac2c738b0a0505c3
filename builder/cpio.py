"""
The "new ASCII" (newc) cpio format, as the Linux kernel unpacks it into the initramfs.
"""

from __future__ import annotations

MAGIC = b"070701"
MAX_FILE_SIZE = 0xFFFFFFFF
TRAILER_NAME = "TRAILER!!!"


def _pad4(length: int) -> int:
    return (4 - length % 4) % 4


def header(name: str, size: int, mode: int = 0o100644, mtime: int = 0, inode: int = 1) -> bytes:
    """
    The header of one member, its name and the padding that aligns its data.

    @raise ValueError: for a member of 4 GiB or more, which newc cannot describe.
    """
    if not 0 <= size <= MAX_FILE_SIZE:
        raise ValueError(f"a cpio (newc) member must be smaller than 4 GiB, not {size} bytes")
    encoded = name.encode() + b"\0"
    fields = [inode, mode, 0, 0, 1, mtime, size, 0, 0, 0, 0, len(encoded), 0]
    head = MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
    return head + b"\0" * _pad4(len(head))


def data_padding(size: int) -> bytes:
    """
    The zeros after a member's data.
    """
    return b"\0" * _pad4(size)


def trailer() -> bytes:
    """
    The end-of-archive member.
    """
    return header(TRAILER_NAME, 0, mode=0, inode=0)


def align4(size: int) -> int:
    return size + _pad4(size)
