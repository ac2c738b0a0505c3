"""
ISO 9660 (with Rock Ridge and Joliet) read from a stream, and a file added to it by
appending, the way C{xorriso} grows an image: the original bytes stay where they are,
a complete new directory tree (old records, new locations, one record more) and the
new file go after them, and the volume descriptors are rewritten to point at the new
tree. Nothing is decompressed, moved or copied.

Everything here is pure: data comes from a C{read(offset, length)} callable, which may
raise L{NeedMoreData} while the image is still arriving.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Literal

from attrs import frozen

SECTOR = 2048
FIRST_DESCRIPTOR = 16
MAX_DESCRIPTORS = 64
MAX_DIRECTORIES = 100_000
MAX_DIRECTORY_BYTES = 16 << 20

Reader = Callable[[int, int], bytes]


class IsoError(Exception):
    """
    The data is not an ISO 9660 image pxe-pilot can prepare; the message says why.
    """


class NeedMoreData(Exception):
    """
    A read reached past what has arrived so far.

    @ivar offset: The first byte that is still missing.
    """

    def __init__(self, offset: int) -> None:
        super().__init__(f"byte {offset} has not arrived yet")
        self.offset = offset


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _sectors(size: int) -> int:
    return (size + SECTOR - 1) // SECTOR


@frozen
class Record:
    """
    One directory record, as found on disc.

    @ivar raw: Its bytes, length byte included.
    """

    raw: bytes

    @property
    def extent(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 2)[0])

    @property
    def size(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 10)[0])

    @property
    def flags(self) -> int:
        return self.raw[25]

    @property
    def identifier(self) -> bytes:
        return self.raw[33 : 33 + self.raw[32]]

    @property
    def is_directory(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def is_self_or_parent(self) -> bool:
        return self.identifier in (b"\x00", b"\x01")

    @property
    def system_use(self) -> bytes:
        start = 33 + self.raw[32]
        if start % 2:
            start += 1
        return self.raw[start:]

    def relocated(self, extent: int, size: int | None = None) -> Record:
        """
        The same record pointing at C{extent} (and of C{size} bytes, if given).
        """
        raw = bytearray(self.raw)
        raw[2:10] = _both32(extent)
        if size is not None:
            raw[10:18] = _both32(size)
        return Record(bytes(raw))


def parse_records(data: bytes) -> list[Record]:
    """
    The records of a directory extent; they never cross a sector boundary, and a zero
    length byte means the rest of the sector is padding.

    @raise IsoError: for a record that does not fit its sector.
    """
    records = []
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length == 0:
            offset = (offset // SECTOR + 1) * SECTOR
            continue
        end = offset + length
        if length < 34 or end > (offset // SECTOR + 1) * SECTOR or 33 + data[offset + 32] > length:
            raise IsoError(f"malformed directory record at byte {offset} of a directory")
        records.append(Record(bytes(data[offset:end])))
        offset = end
    return records


def pack_records(records: list[Record]) -> bytes:
    """
    Records laid out in sectors, as a directory extent.
    """
    sectors: list[bytearray] = [bytearray()]
    for record in records:
        if len(sectors[-1]) + len(record.raw) > SECTOR:
            sectors.append(bytearray())
        sectors[-1] += record.raw
    return b"".join(bytes(s).ljust(SECTOR, b"\0") for s in sectors)


@frozen
class SuspEntry:
    """
    One System Use Sharing Protocol entry (Rock Ridge uses them for names, modes...).
    """

    signature: bytes
    version: int
    data: bytes

    def encode(self) -> bytes:
        return self.signature + bytes([len(self.data) + 4, self.version]) + self.data


def parse_susp(area: bytes) -> list[SuspEntry]:
    """
    The entries of a system use area, up to padding or a stop (ST) entry.
    """
    entries = []
    offset = 0
    while offset + 4 <= len(area):
        length = area[offset + 2]
        if length < 4 or offset + length > len(area):
            break
        entry = SuspEntry(
            area[offset : offset + 2], area[offset + 3], area[offset + 4 : offset + length]
        )
        if entry.signature == b"ST":
            break
        entries.append(entry)
        offset += length
    return entries


def _susp_entries(record: Record, skip: int, read: Reader) -> Iterator[SuspEntry]:
    """
    A record's SUSP entries, following continuation areas (CE).
    """
    area = record.system_use[skip:]
    for _ in range(32):
        entries = parse_susp(area)
        continuation = None
        for entry in entries:
            if entry.signature == b"CE" and len(entry.data) >= 24:
                block, offset, length = (
                    struct.unpack_from("<I", entry.data, i)[0] for i in (0, 8, 16)
                )
                continuation = (block * SECTOR + offset, length)
            else:
                yield entry
        if continuation is None:
            return
        area = read(*continuation)


def rock_ridge_name(record: Record, skip: int, read: Reader) -> bytes | None:
    """
    The Rock Ridge name (NM entries, which may continue one another), if any.
    """
    name = b""
    found = False
    for entry in _susp_entries(record, skip, read):
        if entry.signature == b"NM" and entry.data:
            found = True
            flags = entry.data[0]
            if flags & 0x02:
                return b"."
            if flags & 0x04:
                return b".."
            name += entry.data[1:]
    return name if found else None


Kind = Literal["iso9660", "joliet"]


@frozen
class Descriptor:
    """
    A primary or supplementary volume descriptor with a directory tree.

    @ivar sector: Where it is.
    @ivar kind: C{iso9660} for the primary tree, C{joliet} for a Joliet tree.
    @ivar raw: Its 2048 bytes.
    """

    sector: int
    kind: Kind
    raw: bytes

    @property
    def volume_space_size(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 80)[0])

    @property
    def block_size(self) -> int:
        return int(struct.unpack_from("<H", self.raw, 128)[0])

    @property
    def path_table_size(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 132)[0])

    @property
    def l_path_table(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 140)[0])

    @property
    def root(self) -> Record:
        return Record(self.raw[156:190])

    def rewritten(self, volume_space_size: int, root: Record, l_table: int, m_table: int) -> bytes:
        raw = bytearray(self.raw)
        raw[80:88] = _both32(volume_space_size)
        raw[140:144] = struct.pack("<I", l_table)
        raw[144:148] = b"\0\0\0\0"  # the optional copies are not kept
        raw[148:152] = struct.pack(">I", m_table)
        raw[152:156] = b"\0\0\0\0"
        raw[156:190] = root.raw
        return bytes(raw)


_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")


def read_descriptors(read: Reader) -> list[Descriptor]:
    """
    The volume descriptors with directory trees: the primary one and any Joliet one.

    @raise IsoError: when the data is not an ISO 9660 image.
    """
    trees: list[Descriptor] = []
    for sector in range(FIRST_DESCRIPTOR, FIRST_DESCRIPTOR + MAX_DESCRIPTORS):
        raw = read(sector * SECTOR, SECTOR)
        if raw[1:6] != b"CD001":
            if sector == FIRST_DESCRIPTOR:
                raise IsoError("not an ISO 9660 image (no volume descriptor at 32 KiB)")
            raise IsoError(f"volume descriptor set not terminated (sector {sector})")
        kind = raw[0]
        if kind == 255:
            break
        if kind == 1:
            trees.append(Descriptor(sector, "iso9660", raw))
        elif kind == 2 and raw[88:91] in _JOLIET_ESCAPES:
            trees.append(Descriptor(sector, "joliet", raw))
    else:
        raise IsoError("volume descriptor set not terminated")
    primary = [d for d in trees if d.kind == "iso9660"]
    if not primary:
        raise IsoError("no primary volume descriptor")
    if primary[0].block_size != SECTOR:
        raise IsoError(f"unsupported logical block size {primary[0].block_size}")
    return trees


@frozen
class Directory:
    """
    One directory of a tree.

    @ivar extent: Where it starts (sector).
    @ivar size: Its size in bytes.
    @ivar records: Its records, C{.} and C{..} first.
    @ivar path: Its path, by the names this tree uses (Rock Ridge for the primary tree).
    """

    extent: int
    size: int
    records: tuple[Record, ...]
    path: str


@frozen
class Entry:
    """
    A file found in a tree.
    """

    extent: int
    size: int


@frozen
class Tree:
    """
    A directory tree as read from the image.

    @ivar descriptor: The descriptor it hangs from.
    @ivar directories: Every directory, in the order they were found (root first).
    @ivar files: Files by path (lower-case is not applied: paths are as stored).
    @ivar skip: Rock Ridge's per-record skip length (primary tree only).
    @ivar rock_ridge: Whether the tree carries Rock Ridge names.
    """

    descriptor: Descriptor
    directories: tuple[Directory, ...]
    files: dict[str, Entry]
    skip: int
    rock_ridge: bool

    def end(self) -> int:
        """
        The byte after the last directory extent: the tree is read once the image
        has arrived this far.
        """
        return max(d.extent * SECTOR + d.size for d in self.directories)


def _name(record: Record, tree_kind: Kind, skip: int, rock_ridge: bool, read: Reader) -> str:
    if tree_kind == "joliet":
        return record.identifier.decode("utf-16-be", "replace").split(";")[0]
    if rock_ridge:
        name = rock_ridge_name(record, skip, read)
        if name is not None:
            return name.decode("utf-8", "surrogateescape")
    return record.identifier.decode("ascii", "replace").split(";")[0].rstrip(".").lower()


def read_tree(descriptor: Descriptor, read: Reader) -> Tree:
    """
    Walk a descriptor's directory tree.

    @raise NeedMoreData: when a directory has not arrived yet.
    @raise IsoError: for a malformed or absurd tree.
    """
    root = descriptor.root
    skip = 0
    rock_ridge = False
    if descriptor.kind == "iso9660":
        first = parse_records(read(root.extent * SECTOR, min(root.size, SECTOR)))
        for entry in parse_susp(first[0].system_use if first else b""):
            if entry.signature == b"SP" and len(entry.data) >= 3 and entry.data[:2] == b"\xbe\xef":
                skip = entry.data[2]
                rock_ridge = True
    directories: list[Directory] = []
    files: dict[str, Entry] = {}
    queue = [(root.extent, root.size, "")]
    seen = {root.extent}
    total = 0
    while queue:
        extent, size, path = queue.pop(0)
        total += size
        if size > MAX_DIRECTORY_BYTES or total > 4 * MAX_DIRECTORY_BYTES:
            raise IsoError("directory tree too large")
        records = parse_records(read(extent * SECTOR, size))
        directories.append(Directory(extent, size, tuple(records), path or "/"))
        if len(directories) > MAX_DIRECTORIES:
            raise IsoError("too many directories")
        for record in records:
            if record.is_self_or_parent:
                continue
            child = f"{path}/{_name(record, descriptor.kind, skip, rock_ridge, read)}"
            if record.is_directory:
                if record.extent in seen:
                    raise IsoError(f"directory loop at {child}")
                seen.add(record.extent)
                queue.append((record.extent, record.size, child))
            else:
                files[child] = Entry(record.extent, record.size)
    return Tree(descriptor, tuple(directories), files, skip, rock_ridge)


# --- adding a file


def _iso_timestamp(now: float) -> bytes:
    t = time.gmtime(now)
    return bytes([t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0])


def _make_record(
    extent: int, size: int, identifier: bytes, system_use: bytes, now: float
) -> Record:
    body = (
        bytes([0])
        + _both32(extent)
        + _both32(size)
        + _iso_timestamp(now)
        + bytes([0, 0, 0])
        + _both16(1)
        + bytes([len(identifier)])
        + identifier
    )
    if len(identifier) % 2 == 0:
        body += b"\0"
    body += system_use
    if (len(body) + 1) % 2:
        body += b"\0"
    if len(body) + 1 > 255:
        raise IsoError("new directory record too long")
    return Record(bytes([len(body) + 1]) + body)


def _rock_ridge_area(template: Record | None, skip: int, name: bytes, now: float) -> bytes:
    """
    Rock Ridge entries for a new read-only regular file, in the style of an existing
    file record of the same directory (its PX and TF layout), with its own name.
    """
    px_data = (
        struct.pack("<I", 0o100444) + struct.pack(">I", 0o100444) + _both32(1) + _both32(0) * 2
    )
    tf = SuspEntry(b"TF", 1, bytes([0x0E]) + _iso_timestamp(now) * 3)
    px = SuspEntry(b"PX", 1, px_data)
    rr = None
    prefix = b""
    if template is not None:
        prefix = template.system_use[:skip]
        for entry in parse_susp(template.system_use[skip:]):
            if entry.signature == b"PX":
                # RRIP 1.12 adds an inode number (PX is 44 bytes long then).
                px = SuspEntry(b"PX", entry.version, px_data + entry.data[len(px_data) :])
            elif entry.signature == b"RR":
                rr = SuspEntry(b"RR", entry.version, bytes([0x89]))  # PX, NM and TF present
    nm = SuspEntry(b"NM", 1, b"\0" + name)
    entries = [e for e in (rr, px, tf, nm) if e is not None]
    return prefix + b"".join(e.encode() for e in entries)


def _iso_identifier(taken: set[bytes]) -> bytes:
    for index in range(100):
        stem = b"AUTO_INS" if index == 0 else b"AUTO_I%02d" % index
        candidate = stem + b".TOM;1"
        if candidate not in taken:
            return candidate
    raise IsoError("no free ISO 9660 name for the answer mode file")


def _sort_key(identifier: bytes) -> tuple[bytes, bytes]:
    name, _, version = identifier.partition(b";")
    return name, version


def _with_file(records: tuple[Record, ...], new: Record, replaced: set[bytes]) -> list[Record]:
    kept = [r for r in records if r.identifier not in replaced or r.is_self_or_parent]
    head, rest = kept[:2], kept[2:]
    key = _sort_key(new.identifier)
    position = next((i for i, r in enumerate(rest) if _sort_key(r.identifier) > key), len(rest))
    return head + rest[:position] + [new] + rest[position:]


@frozen
class Prepared:
    """
    How to turn the original image into the prepared one.

    @ivar patches: Sectors to overwrite in the original bytes, as (offset, bytes).
    @ivar tail_offset: Where the appended part starts (a sector boundary at or after the
        end of the original data).
    @ivar tail: The appended part: new directories, path tables and the new file.
    @ivar size: The prepared image's size in bytes.
    """

    patches: tuple[tuple[int, bytes], ...]
    tail_offset: int
    tail: bytes

    @property
    def size(self) -> int:
        return self.tail_offset + len(self.tail)


def _path_table(
    descriptor: Descriptor, mapping: dict[int, int], read: Reader
) -> tuple[bytes, bytes]:
    """
    The descriptor's L and M path tables with directory locations moved.
    """
    table = read(descriptor.l_path_table * SECTOR, descriptor.path_table_size)
    little = bytearray()
    big = bytearray()
    offset = 0
    while offset < len(table):
        length = table[offset]
        if length == 0:
            raise IsoError("malformed path table")
        record_length = 8 + length + (length % 2)
        record = table[offset : offset + record_length]
        old = struct.unpack_from("<I", record, 2)[0]
        if old not in mapping:
            raise IsoError("path table names a directory that is not in the tree")
        parent = struct.unpack_from("<H", record, 6)[0]
        name = record[8:]
        little += record[:2] + struct.pack("<I", mapping[old]) + struct.pack("<H", parent) + name
        big += record[:2] + struct.pack(">I", mapping[old]) + struct.pack(">H", parent) + name
        offset += record_length
    return bytes(little), bytes(big)


def _relocate_susp(record: Record, skip: int, mapping: dict[int, int]) -> Record:
    """
    Rock Ridge CL and PL entries name directory locations: move them too.
    """
    area = record.system_use
    entries = parse_susp(area[skip:])
    if not any(e.signature in (b"CL", b"PL") for e in entries):
        return record
    start = len(record.raw) - len(area) + skip
    raw = bytearray(record.raw)
    offset = start
    for entry in entries:
        if entry.signature in (b"CL", b"PL"):
            old = struct.unpack_from("<I", entry.data, 0)[0]
            raw[offset + 4 : offset + 12] = _both32(mapping.get(old, old))
        offset += len(entry.data) + 4
    return Record(bytes(raw))


def prepare(
    trees: list[Tree],
    source_size: int,
    rr_name: str,
    content: bytes,
    read: Reader,
    now: float | None = None,
) -> Prepared:
    """
    Plan the image with one more file in its root directory (replacing a file of that
    Rock Ridge name): new trees, path tables and file content after the original data.

    @param trees: The primary tree and any Joliet tree.
    @param source_size: The size of the original data, which stays untouched.
    """
    stamp = time.time() if now is None else now
    cursor = max(_sectors(source_size), trees[0].descriptor.volume_space_size)
    tail_offset = cursor * SECTOR
    content_sector = cursor
    cursor += max(1, _sectors(len(content)))
    chunks: list[tuple[int, bytes]] = [(content_sector, content)]
    name = rr_name.encode()

    rewritten: list[tuple[Descriptor, dict[int, int], dict[int, int], list[list[Record]]]] = []
    for tree in trees:
        root = tree.directories[0]
        if tree.descriptor.kind == "iso9660":
            replaced = {
                r.identifier
                for r in root.records
                if not r.is_self_or_parent
                and not r.is_directory
                and rock_ridge_name(r, tree.skip, read) == name
            }
            taken = {r.identifier for r in root.records} - replaced
            template = next(
                (
                    r
                    for r in root.records
                    if not r.is_self_or_parent and not r.is_directory and r.system_use[tree.skip :]
                ),
                None,
            )
            area = _rock_ridge_area(template, tree.skip, name, stamp) if tree.rock_ridge else b""
            new = _make_record(content_sector, len(content), _iso_identifier(taken), area, stamp)
        else:
            identifier = rr_name.encode("utf-16-be")
            versioned = any(r.identifier.endswith(";1".encode("utf-16-be")) for r in root.records)
            if versioned:
                identifier += ";1".encode("utf-16-be")
            replaced = {
                r.identifier
                for r in root.records
                if r.identifier.split(";".encode("utf-16-be"))[0] == rr_name.encode("utf-16-be")
            }
            new = _make_record(content_sector, len(content), identifier, b"", stamp)
        contents = [list(d.records) for d in tree.directories]
        contents[0] = _with_file(root.records, new, replaced)
        sizes = {
            d.extent: len(pack_records(c)) if i == 0 else d.size
            for i, (d, c) in enumerate(zip(tree.directories, contents, strict=True))
        }
        mapping: dict[int, int] = {}
        for directory in tree.directories:
            mapping[directory.extent] = cursor
            cursor += _sectors(sizes[directory.extent])
        rewritten.append((tree.descriptor, mapping, sizes, contents))

    updates: list[tuple[Descriptor, Record, int, int]] = []
    for (descriptor, mapping, sizes, contents), tree in zip(rewritten, trees, strict=True):
        parents = {tree.directories[0].extent: tree.directories[0].extent}
        for directory in tree.directories:
            for record in directory.records:
                if record.is_directory and not record.is_self_or_parent:
                    parents[record.extent] = directory.extent
        for directory, records in zip(tree.directories, contents, strict=True):
            parent = parents[directory.extent]
            new_records = []
            for record in records:
                if record.identifier == b"\x00":
                    record = record.relocated(mapping[directory.extent], sizes[directory.extent])
                elif record.identifier == b"\x01":
                    record = record.relocated(mapping[parent], sizes[parent])
                elif record.is_directory:
                    record = record.relocated(mapping[record.extent], sizes[record.extent])
                new_records.append(_relocate_susp(record, tree.skip, mapping))
            chunks.append((mapping[directory.extent], pack_records(new_records)))
        little, big = _path_table(descriptor, mapping, read)
        l_sector = cursor
        cursor += _sectors(len(little))
        m_sector = cursor
        cursor += _sectors(len(big))
        chunks += [(l_sector, little), (m_sector, big)]
        root = tree.directories[0]
        updates.append(
            (
                descriptor,
                descriptor.root.relocated(mapping[root.extent], sizes[root.extent]),
                l_sector,
                m_sector,
            )
        )

    patches = tuple(
        (d.sector * SECTOR, d.rewritten(cursor, root_record, l_sector, m_sector))
        for d, root_record, l_sector, m_sector in updates
    )
    tail = bytearray((cursor - content_sector) * SECTOR)
    for sector, data in chunks:
        start = (sector - content_sector) * SECTOR
        tail[start : start + len(data)] = data
    return Prepared(patches, tail_offset, bytes(tail))
