"""
Files out of a Debian package (a C{.deb}), read in Python: an C{ar} archive whose
C{data.tar.xz} (or C{.gz}, C{.bz2}, uncompressed) holds the package's files.

A C{data.tar.zst} is refused with a message saying so: Python's standard library reads
no zstd before 3.14 and the builder does not depend on a zstd library for this.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
# No boot loader is this large; a bigger member is not what is looked for.
MAX_MEMBER = 64 << 20


class DebError(ValueError):
    """
    The file is not a Debian package that can be read here; the message says why.
    """


class _Slice:
    """
    A read-only file over part of another, for C{tarfile}'s stream mode.
    """

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self._f = f
        self._position = start
        self._end = start + size

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._position
        if size < 0 or size > left:
            size = left
        self._f.seek(self._position)
        data = self._f.read(size)
        self._position += len(data)
        return data


def _members(f: BinaryIO, path: Path) -> dict[str, tuple[int, int]]:
    """
    The C{ar} archive's members: name -> (offset, size).
    """
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise DebError(f"{path} is not a Debian package (no ar archive header)")
    total = f.seek(0, 2)
    offset = len(AR_MAGIC)
    members: dict[str, tuple[int, int]] = {}
    while offset < total:
        f.seek(offset)
        header = f.read(AR_HEADER)
        if len(header) < AR_HEADER or header[58:60] != b"`\n":
            raise DebError(f"{path} is truncated or damaged (ar header at byte {offset})")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"{path} is damaged (ar member size at byte {offset})") from None
        start = offset + AR_HEADER
        if start + size > total:
            raise DebError(
                f"{path} is truncated: its member {name} needs {start + size} bytes, "
                f"the file has {total}"
            )
        members[name] = (start, size)
        offset = start + size + (size & 1)
    return members


def extract(path: Path, wanted: Collection[str]) -> dict[str, bytes]:
    """
    The files of the package at C{path} whose base names are in C{wanted}, by base
    name (the first one found of each).

    @raise DebError: when C{path} is not a readable Debian package, is truncated, or
        compresses its files with zstd.
    """
    try:
        with open(path, "rb") as f:
            members = _members(f, path)
            data = [name for name in members if name.startswith("data.tar")]
            if not data:
                raise DebError(f"{path} is not a Debian package (no data.tar member)")
            name = data[0]
            if name.endswith(".zst"):
                raise DebError(
                    f"{path} compresses its files with zstd ({name}), which the builder "
                    "cannot read; unpack it with 'dpkg-deb -x' and give the directory"
                )
            start, size = members[name]
            return _from_tar(_Slice(f, start, size), path, name, wanted)
    except OSError as e:
        raise DebError(f"cannot read {path}: {e.strerror}") from None


def _from_tar(stream: _Slice, path: Path, name: str, wanted: Collection[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base not in wanted or base in found or not member.isfile():
                    continue
                if member.size > MAX_MEMBER:
                    raise DebError(f"{path}: {member.name} is implausibly large")
                content = tar.extractfile(member)
                if content is None:
                    continue
                data = content.read()
                if len(data) != member.size:
                    raise DebError(f"{path} is truncated ({member.name})")
                found[base] = data
    except (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError, zlib.error) as e:
        if isinstance(e, DebError):
            raise
        raise DebError(f"{path} is truncated or damaged ({name}: {e})") from None
    return found
