"""
A small file of an ISO's root directory read where it lies, from the volume
descriptors, the root directory and the file's own sectors only: the product of a
prepared ISO of 1.5 GB, known in a few reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.iso9660 import (
    SECTOR,
    IsoError,
    parse_records,
    parse_susp,
    read_descriptors,
    rock_ridge_name,
)

MAX_SMALL_FILE = 64 * 1024
MAX_ROOT_DIRECTORY = 1 << 20


def root_file(path: Path, name: str) -> bytes | None:
    """
    A small file of an ISO's root directory, by its Rock Ridge or Joliet name.

    @raise IsoError: when C{path} is no ISO 9660 image this can read.
    """
    with open(path, "rb") as f:
        fd = f.fileno()

        def read(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        for descriptor in read_descriptors(read):
            root = descriptor.root
            if root.size > MAX_ROOT_DIRECTORY:
                raise IsoError("root directory too large")
            records = parse_records(read(root.extent * SECTOR, root.size))
            skip, rock_ridge = 0, False
            if descriptor.kind == "iso9660" and records:
                for entry in parse_susp(records[0].system_use):
                    if entry.signature == b"SP" and entry.data[:2] == b"\xbe\xef":
                        skip, rock_ridge = entry.data[2], True
                if not rock_ridge:
                    continue
            for record in records:
                if record.is_directory or record.is_self_or_parent:
                    continue
                if descriptor.kind == "joliet":
                    found = record.identifier.decode("utf-16-be", "replace").split(";")[0]
                else:
                    found = (rock_ridge_name(record, skip, read) or b"").decode("utf-8", "replace")
                if found == name:
                    if record.size > MAX_SMALL_FILE:
                        raise IsoError(f"/{name} is too large")
                    return read(record.extent * SECTOR, record.size)
    return None
