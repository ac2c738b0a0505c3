"""
Reading builder outputs back: newc cpio archives, combined initrds, prepared ISOs.
"""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib


def parse_newc(data: bytes, offset: int = 0) -> tuple[list[tuple[str, int, int]], int]:
    """
    The members of the newc archive at C{offset}: (name, data offset, size); and where
    the archive ends (after its trailer).
    """
    members: list[tuple[str, int, int]] = []
    while True:
        if data[offset : offset + 6] != b"070701":
            raise AssertionError(f"no newc header at {offset}")
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        assert data[offset + 110 + namesize - 1] == 0
        start = offset + 110 + namesize
        start += (4 - start % 4) % 4
        end = start + filesize
        if name == "TRAILER!!!":
            return members, end
        members.append((name, start, filesize))
        offset = end + (4 - end % 4) % 4


def split_combined(data: bytes, initrd_size: int) -> tuple[bytes, bytes]:
    """
    A combined initrd's parts: the original initrd, and the ISO member's content. The
    zero padding between them and the archive's trailer are checked on the way.
    """
    head = data[:initrd_size]
    archive = initrd_size + (4 - initrd_size % 4) % 4
    assert data[initrd_size:archive] == b"\0" * (archive - initrd_size)
    members, end = parse_newc(data, archive)
    assert [name for name, _, _ in members] == ["proxmox.iso"]
    assert end == len(data), "bytes after the archive's trailer"
    _, start, size = members[0]
    return head, data[start : start + size]


def iso_file(
    iso: bytes | Path, rr_path: str | None = None, joliet_path: str | None = None
) -> bytes:
    """
    A file of an ISO, read with pycdlib by its Rock Ridge or Joliet path.
    """
    reader = pycdlib.PyCdlib()
    if isinstance(iso, Path):
        reader.open(str(iso))
    else:
        reader.open_fp(io.BytesIO(iso))
    out = io.BytesIO()
    if rr_path is not None:
        reader.get_file_from_iso_fp(out, rr_path=rr_path)
    else:
        assert joliet_path is not None
        reader.get_file_from_iso_fp(out, joliet_path=joliet_path)
    reader.close()
    return out.getvalue()


def rock_ridge_listing(iso: bytes) -> dict[str, bytes]:
    """
    Every file of an ISO by Rock Ridge path, with its content.
    """
    reader = pycdlib.PyCdlib()
    reader.open_fp(io.BytesIO(iso))
    files = {}
    for root, _dirs, names in reader.walk(rr_path="/"):
        for name in names:
            path = f"{root.rstrip('/')}/{name}"
            out = io.BytesIO()
            reader.get_file_from_iso_fp(out, rr_path=path)
            files[path] = out.getvalue()
    reader.close()
    return files
