"""
A reader of FAT12, FAT16 and FAT32 file systems held in memory: the EFI boot image of
an ISO (El Torito's UEFI entry) is one, and the builder takes the boot loaders out of it
without mounting anything.

Only what reading a file by its path needs: the boot sector's layout, directories
(short names and long names), and cluster chains. Every number read from the image is
checked against the image's size, and a chain that loops or leaves the data area is an
error rather than an endless read.
"""

from __future__ import annotations

import struct

from attrs import evolve, frozen

DIRECTORY_ENTRY = 32
ATTR_LONG_NAME = 0x0F
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
# Directories deeper than this or holding more entries are not plausible in a boot image.
MAX_DEPTH = 16
MAX_ENTRIES = 65536


class FatError(ValueError):
    """
    The image is not a FAT file system this reader understands, or is damaged; the
    message says what was found.
    """


@frozen
class FatEntry:
    """
    A directory entry.

    @ivar name: Its long name, or its short name (as C{NAME.EXT}) without one.
    @ivar short_name: Its 8.3 name.
    @ivar cluster: Its first cluster (0 for an empty file).
    @ivar size: Its size in bytes (0 for a directory).
    @ivar is_directory: Whether it is a directory.
    """

    name: str
    short_name: str
    cluster: int
    size: int
    is_directory: bool

    def matches(self, name: str) -> bool:
        """
        Whether C{name} names this entry (FAT names are case-insensitive).
        """
        wanted = name.casefold()
        return wanted in (self.name.casefold(), self.short_name.casefold())


class FatImage:
    """
    A FAT file system in C{data}.

    @raise FatError: when the boot sector does not describe a FAT file system that fits
        in C{data}.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        if len(data) < 512 or data[510:512] != b"\x55\xaa":
            raise FatError("not a FAT file system (no boot sector signature)")
        (
            self.sector_size,
            self.cluster_sectors,
            reserved,
            fats,
            root_entries,
            total16,
        ) = struct.unpack_from("<HBHBHH", data, 11)
        fat_size16 = struct.unpack_from("<H", data, 22)[0]
        total32, fat_size32 = struct.unpack_from("<II", data, 32)
        root_cluster = struct.unpack_from("<I", data, 44)[0]
        if self.sector_size not in (512, 1024, 2048, 4096) or self.cluster_sectors not in (
            1 << n for n in range(8)
        ):
            raise FatError(
                f"not a FAT file system (sector size {self.sector_size}, "
                f"{self.cluster_sectors} sectors per cluster)"
            )
        if reserved == 0 or fats == 0:
            raise FatError("not a FAT file system (no reserved sectors or no FAT)")
        fat_sectors = fat_size16 or fat_size32
        total = total16 or total32
        root_sectors = -(-root_entries * DIRECTORY_ENTRY // self.sector_size)
        self.data_start = (reserved + fats * fat_sectors + root_sectors) * self.sector_size
        size = total * self.sector_size
        if fat_sectors == 0 or size > len(data) or self.data_start >= size:
            raise FatError(
                f"damaged FAT file system: {total} sectors of {self.sector_size} bytes "
                f"described, {len(data)} bytes present"
            )
        self.clusters = (size - self.data_start) // self.cluster_size
        if self.clusters < 4085:
            self.bits = 12
        elif self.clusters < 65525:
            self.bits = 16
        else:
            self.bits = 32
        self._fat_start = reserved * self.sector_size
        self._fat_bytes = fat_sectors * self.sector_size
        if self.clusters + 2 > self._fat_bytes * 8 // self.bits:
            raise FatError("damaged FAT file system: the FAT is too small for its clusters")
        self._root_cluster = root_cluster if self.bits == 32 else 0
        self._root_range = (
            (reserved + fats * fat_sectors) * self.sector_size,
            root_entries * DIRECTORY_ENTRY,
        )

    @property
    def cluster_size(self) -> int:
        return int(self.sector_size * self.cluster_sectors)

    def _next(self, cluster: int) -> int | None:
        """
        The cluster after C{cluster} in its chain, or C{None} at the chain's end.
        """
        if self.bits == 12:
            at = self._fat_start + cluster + cluster // 2
            value = struct.unpack_from("<H", self._data, at)[0]
            value = value >> 4 if cluster & 1 else value & 0xFFF
            end = 0xFF8
        elif self.bits == 16:
            value = struct.unpack_from("<H", self._data, self._fat_start + 2 * cluster)[0]
            end = 0xFFF8
        else:
            at = self._fat_start + 4 * cluster
            value = struct.unpack_from("<I", self._data, at)[0] & 0x0FFFFFFF
            end = 0x0FFFFFF8
        if value >= end:
            return None
        if not 2 <= value < self.clusters + 2:
            raise FatError(f"damaged FAT file system: cluster {cluster} is followed by {value}")
        return int(value)

    def _chain(self, first: int) -> list[int]:
        if not 2 <= first < self.clusters + 2:
            raise FatError(f"damaged FAT file system: a file starts at cluster {first}")
        chain = [first]
        seen = {first}
        while (following := self._next(chain[-1])) is not None:
            if following in seen:
                raise FatError(f"damaged FAT file system: the chain from {first} loops")
            seen.add(following)
            chain.append(following)
        return chain

    def _read_chain(self, first: int, size: int | None) -> bytes:
        chain = self._chain(first)
        if size is not None and len(chain) * self.cluster_size < size:
            raise FatError(
                f"damaged FAT file system: {size} bytes in {len(chain)} clusters "
                f"of {self.cluster_size}"
            )
        parts = []
        for cluster in chain:
            at = self.data_start + (cluster - 2) * self.cluster_size
            parts.append(self._data[at : at + self.cluster_size])
            if size is not None and len(parts) * self.cluster_size >= size:
                break
        data = b"".join(parts)
        return data if size is None else data[:size]

    def _directory(self, entry: FatEntry | None) -> list[FatEntry]:
        if entry is None and self.bits != 32:
            start, length = self._root_range
            raw = self._data[start : start + length]
        else:
            raw = self._read_chain(entry.cluster if entry else self._root_cluster, None)
        entries = parse_directory(raw)
        if self.bits == 32:
            return entries
        # The high half of the first cluster means something else on FAT12 and FAT16.
        return [evolve(e, cluster=e.cluster & 0xFFFF) for e in entries]

    def find(self, path: str) -> FatEntry | None:
        """
        The entry at C{path} (C{/}-separated, any case), or C{None} if there is none.
        """
        parts = [p for p in path.split("/") if p]
        if not parts or len(parts) > MAX_DEPTH:
            return None
        directory: FatEntry | None = None
        for index, part in enumerate(parts):
            found = next((e for e in self._directory(directory) if e.matches(part)), None)
            if found is None:
                return None
            if index < len(parts) - 1 and not found.is_directory:
                return None
            directory = found
        return directory

    def read(self, path: str) -> bytes | None:
        """
        The content of the file at C{path}, or C{None} if there is no such file.

        @raise FatError: when the file's clusters are damaged.
        """
        entry = self.find(path)
        if entry is None or entry.is_directory:
            return None
        if entry.size == 0:
            return b""
        return self._read_chain(entry.cluster, entry.size)


def _short_name(raw: bytes) -> str:
    base = raw[0:8].rstrip(b" ")
    extension = raw[8:11].rstrip(b" ")
    if base[:1] == b"\x05":
        base = b"\xe5" + base[1:]
    case = raw[12]
    name = base.decode("cp437")
    ext = extension.decode("cp437")
    # Windows NT's flags for an all-lower-case base name or extension.
    if case & 0x08:
        name = name.lower()
    if case & 0x10:
        ext = ext.lower()
    return f"{name}.{ext}" if ext else name


def _long_name_part(raw: bytes) -> str:
    chars = raw[1:11] + raw[14:26] + raw[28:32]
    text = chars.decode("utf-16-le", "replace")
    return text.split("\x00")[0]


def parse_directory(raw: bytes) -> list[FatEntry]:
    """
    The entries of a directory's bytes: deleted entries and volume labels left out,
    long names joined to the short entry they precede (when their checksum matches).
    """
    entries: list[FatEntry] = []
    long_parts: list[str] = []
    long_checksum = -1
    for index, offset in enumerate(range(0, len(raw) - DIRECTORY_ENTRY + 1, DIRECTORY_ENTRY)):
        if index >= MAX_ENTRIES:
            raise FatError("damaged FAT file system: a directory is implausibly large")
        record = raw[offset : offset + DIRECTORY_ENTRY]
        first, attributes = record[0], record[11]
        if first == 0:
            break
        if first == 0xE5:
            long_parts = []
            continue
        if attributes & 0x3F == ATTR_LONG_NAME:
            if first & 0x40:
                long_parts = []
                long_checksum = record[13]
            long_parts.insert(0, _long_name_part(record))
            continue
        short = _short_name(record)
        long_name = "".join(long_parts) if long_checksum == _checksum(record[:11]) else ""
        long_parts = []
        long_checksum = -1
        if attributes & ATTR_VOLUME_ID or short in (".", ".."):
            continue
        high, low = (
            struct.unpack_from("<H", record, 20)[0],
            struct.unpack_from("<H", record, 26)[0],
        )
        entries.append(
            FatEntry(
                name=long_name or short,
                short_name=short,
                cluster=(high << 16) | low,
                size=struct.unpack_from("<I", record, 28)[0],
                is_directory=bool(attributes & ATTR_DIRECTORY),
            )
        )
    return entries


def _checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total
