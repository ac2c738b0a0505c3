"""
The build as one streaming pass: the ISO's bytes arrive in order, once, and go
straight into the assets.

Until the directory tree has arrived (the first megabytes of a Proxmox ISO) the bytes
are kept in a spill file; then the prepared image is planned (L{builder.iso9660}), the
spilled bytes are placed, and every later chunk is written where it belongs as it
arrives: into the prepared ISO (inside the combined initrd, or as C{proxmox.iso}), and,
when it falls in the kernel's or the initrd's extent, into those files too.

Both SHA-256 are taken from the bytes in memory: the source's as they arrive, each
output file's as they are written (L{InOrderDigest}). Only what is written ahead of a
file's order is read back: in the combined initrd, which starts with the original
initrd, the image bytes that arrive before the initrd's extent is complete (the first
tens of megabytes of a Proxmox ISO, whose boot files come first); the bytes kept aside
until the plan; and the small parts written at the plan. Nothing is read whole into
memory, and nothing is copied after the last byte has arrived.

With C{threaded=True} the writing, the source's hash and the outputs' hashes run in
three worker threads, fed in order through bounded queues (hashlib and file I/O
release the GIL), so that a download, its hashes and its writes use both cores. The
writer also asks the kernel to start writing the finished bytes to the disk as it
goes, so that the sync before publishing has little left to wait for.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, frozen

from builder import cpio
from builder.cdinfo import ProductInfo, product_info
from builder.iso9660 import (
    SECTOR,
    IsoError,
    NeedMoreData,
    Prepared,
    Reader,
    Tree,
    prepare,
    read_descriptors,
    read_tree,
)

KERNEL = "/boot/linux26"
INITRD = "/boot/initrd.img"
CD_INFO = ("/.cd-info", "/.disk/info")
CAPABLE = "/auto-installer-capable"
MODE_FILE = "auto-installer-mode.toml"
ISO_MEMBER = "proxmox.iso"

# Queued but not yet written or hashed, in bytes, counted once per queue: the bound on
# the pipeline's memory.
MAX_QUEUED = 32 << 20
READ_BACK = 4 << 20
# How much is written between two requests to the kernel to start writing it out.
WRITEBACK_EVERY = 32 << 20
# The reactor hands the workers batches of about this many bytes.
BATCH = 1 << 20

Buffer = bytes | bytearray | memoryview


class BuildError(Exception):
    """
    The build cannot go on; the message is the one line the user sees.
    """


@frozen
class OutputFile:
    """
    A finished output file.
    """

    name: str
    size: int
    sha256: str


@frozen
class BuildResult:
    """
    What the pass produced.

    @ivar source_size: Bytes received.
    @ivar source_sha256: Their SHA-256.
    @ivar product: The ISO's identity.
    @ivar files: The output files, by name.
    @ivar layout: C{combined} or C{named}.
    """

    source_size: int
    source_sha256: str
    product: ProductInfo
    files: dict[str, OutputFile]
    layout: str


class InOrderDigest:
    """
    The SHA-256 of a file that is written in parts, mostly in order, taken from the
    parts as they are written.

    A part that continues the hashed prefix is hashed from memory; a part written ahead
    of it, or given without its bytes, is noted and read back from the file once
    everything before it has been hashed. Each byte must be reported once, after it has
    been written.
    """

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd = fd
        self._hash = hashlib.sha256()
        # Bytes hashed: the file's first C{position} bytes.
        self.position = 0
        # Bytes read back from the file rather than hashed from memory.
        self.read_back = 0
        # Parts written ahead of the position, start -> end; the last one noted is
        # extended when the next part follows it.
        self._ahead: dict[int, int] = {}
        self._last_ahead = -1

    def wrote(self, offset: int, length: int, data: list[Buffer] | None = None) -> None:
        """
        Bytes C{offset} to C{offset + length} are written (they are C{data}, if given).
        """
        if length == 0:
            return
        if data is not None and offset == self.position:
            for part in data:
                self._hash.update(part)
            self.position += length
        elif self._ahead.get(self._last_ahead) == offset:
            self._ahead[self._last_ahead] = offset + length
        else:
            self._ahead[offset] = offset + length
            self._last_ahead = offset
        self._catch_up()

    def _catch_up(self) -> None:
        while self.position in self._ahead:
            end = self._ahead.pop(self.position)
            while self.position < end:
                data = os.pread(self._fd, min(READ_BACK, end - self.position), self.position)
                if not data:
                    raise BuildError(f"{self.name} is shorter than it should be")
                self._hash.update(data)
                self.position += len(data)
                self.read_back += len(data)

    def hexdigest(self, size: int) -> str:
        """
        The digest, once all C{size} bytes have been reported.
        """
        self._catch_up()
        if self.position != size or self._ahead:
            raise BuildError(f"{self.name} is incomplete: {self.position} of {size} bytes")
        return self._hash.hexdigest()


def _writeback_starter() -> Callable[[int], None]:
    """
    C{sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)}: start writing a file's dirty
    pages to the disk without waiting for them (Python's C{os} has no such call). Where
    the C library lacks it, nothing: the sync at the end then does all the work.
    """
    try:
        call: Any = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return lambda fd: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    sync_file_range_write = 2

    def start(fd: int) -> None:
        # Advice only: a failure here shows again, and is reported, at the sync.
        call(fd, 0, 0, sync_file_range_write)

    return start


start_writeback = _writeback_starter()


@define
class _Output:
    """
    An output file being written.
    """

    name: str
    fd: int
    size: int
    digest: InOrderDigest


# A worker's item: the bytes it accounts for in the bound, and what it works on.
_Item = tuple[int, Any]
# A part of an output file just written, for its digest: where, how long, the bytes.
_Written = tuple[InOrderDigest, int, int, list[Buffer] | None]


def _skip(chunks: list[bytes], count: int) -> list[bytes | memoryview]:
    """
    C{chunks} without their first C{count} bytes.
    """
    result: list[bytes | memoryview] = []
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        result.append(memoryview(chunk)[count:] if count else chunk)
        count = 0
    return result


class Pipeline:
    """
    Turns the ISO's bytes, fed in order, into the assets in C{staging}.

    @param staging: The directory the output files are written to.
    @param layout: C{combined} (one initrd holding the ISO) or C{named}.
    @param mode_file: The content of C{/auto-installer-mode.toml} to add.
    @param source_size: The ISO's size, if known in advance (Content-Length).
    @param threaded: Write and hash in worker threads.
    @param now: The time stamped on the new file, for reproducible tests.
    @param extract: Given the trees and a reader, more parts of the ISO to copy out
        as files (name -> byte offset and size), such as the EFI boot image.
    """

    def __init__(
        self,
        staging: Path,
        layout: str,
        mode_file: bytes,
        source_size: int | None = None,
        threaded: bool = False,
        now: float | None = None,
        extract: Callable[[list[Tree], Reader], dict[str, tuple[int, int]]] | None = None,
    ) -> None:
        self.staging = staging
        self._extract = extract
        self._extracts: dict[str, tuple[int, int]] | None = None
        self.layout = layout
        self.mode_file = mode_file
        self.source_size = source_size
        self._now = now
        # Bytes fed so far (the caller's count) and bytes written (the writer's).
        self.fed = 0
        self.received = 0
        self._hash = hashlib.sha256()
        self._spill_fd = os.open(staging / ".head", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._plan_at = 0
        self._trees: list[Tree] | None = None
        self._prepared: Prepared | None = None
        self._image: _Output | None = None
        self._image_base = 0
        self._outputs: dict[str, _Output] = {}
        self._extents: list[tuple[int, int, _Output, int]] = []
        self._error: BaseException | None = None
        # The ISO's identity, as soon as its /.cd-info has arrived.
        self.product: ProductInfo | None = None
        self._cd_info: tuple[str, int, int] | None = None
        # Parts written by the current batch, for the outputs' digests.
        self._written: list[_Written] = []
        self._unflushed = 0
        self._closed = False
        self._threaded = threaded
        self._queued = 0
        self._lock = threading.Condition()
        self._room_waiters: list[Callable[[], None]] = []
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._workers: list[threading.Thread] = []
        if threaded:
            self._write_queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
            self._hash_queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
            self._digest_queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
            self._workers = [
                threading.Thread(target=self._work, args=(q, handle), name=name, daemon=True)
                for q, handle, name in (
                    (self._write_queue, self._write_batch, "builder-write"),
                    (self._hash_queue, self._hash_chunks, "builder-hash-source"),
                    (self._digest_queue, self._digest_written, "builder-hash-outputs"),
                )
            ]
            for worker in self._workers:
                worker.start()

    # --- feeding (the caller's thread)

    def feed(self, data: bytes) -> None:
        """
        The next bytes of the ISO.

        @raise BuildError: (or L{IsoError}, L{OSError}) when the build has failed.
        """
        self._raise_failure()
        self.fed += len(data)
        if not self._threaded:
            self._hash.update(data)
            self._write([data])
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BATCH:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        chunks, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        with self._lock:
            self._queued += 2 * size
        self._write_queue.put((size, chunks))
        self._hash_queue.put((size, chunks))

    def has_room(self) -> bool:
        """
        Whether more may be fed now without the queues growing past their bound.
        """
        return not self._threaded or self._queued < MAX_QUEUED

    def when_room(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} (from a worker thread) once there is room again.
        """
        with self._lock:
            if self._queued < MAX_QUEUED or self._error is not None:
                ready = True
            else:
                self._room_waiters.append(callback)
                ready = False
        if ready:
            callback()

    def wait_for_room(self) -> None:
        """
        Block until there is room (for a source that reads in its own thread).
        """
        with self._lock:
            self._lock.wait_for(lambda: self._queued < MAX_QUEUED or self._error is not None)
        self._raise_failure()

    def _work(self, items: queue.SimpleQueue[_Item | None], handle: Callable[[Any], None]) -> None:
        while True:
            item = items.get()
            if item is None:
                return
            size, work = item
            try:
                if self._error is None:
                    handle(work)
            except BaseException as e:  # reported to the feeding thread
                with self._lock:
                    if self._error is None:
                        self._error = e
            with self._lock:
                self._queued -= size
                waiters: list[Callable[[], None]] = []
                if self._queued < MAX_QUEUED or self._error is not None:
                    waiters, self._room_waiters = self._room_waiters, []
                self._lock.notify_all()
            for waiter in waiters:
                waiter()

    def _hash_chunks(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        if self._threaded:
            self._flush_pending()
            # The writer first: it feeds the outputs' digests.
            self._write_queue.put(None)
            self._workers[0].join()
            for q in (self._hash_queue, self._digest_queue):
                q.put(None)
            for worker in self._workers[1:]:
                worker.join()
            self._threaded = False
        self._raise_failure()

    # --- writing (the writer's thread)

    def _write_batch(self, chunks: list[bytes]) -> None:
        """
        Write a batch, then pass what was written on to the outputs' digests.
        """
        try:
            self._write(chunks)
        finally:
            written, self._written = self._written, []
            if written:
                size = sum(length for _digest, _offset, length, data in written if data)
                with self._lock:
                    self._queued += size
                self._digest_queue.put((size, written))

    def _digest_written(self, written: list[_Written]) -> None:
        for digest, offset, length, data in written:
            digest.wrote(offset, length, data)

    def _wrote(self, output: _Output, offset: int, length: int, data: list[Buffer] | None) -> None:
        if self._threaded:
            self._written.append((output.digest, offset, length, data))
        else:
            output.digest.wrote(offset, length, data)

    def _write(self, chunks: list[bytes]) -> None:
        index = 0
        while index < len(chunks) and self._prepared is None:
            data = chunks[index]
            offset = self.received
            os.pwrite(self._spill_fd, data, offset)
            self.received = offset + len(data)
            index += 1
            if self.received > self._plan_at:
                self._try_plan()
        if index < len(chunks):
            start = self.received
            self._place_all(start, chunks[index:])
            self._unflushed += self.received - start
            if self._unflushed >= WRITEBACK_EVERY:
                self._unflushed = 0
                for output in self._outputs.values():
                    start_writeback(output.fd)

    def _place_all(self, offset: int, chunks: list[bytes]) -> None:
        """
        Place consecutive chunks: one vectored write for the image when nothing in them
        needs patching or copying out, chunk by chunk otherwise.
        """
        assert self._prepared is not None and self._image is not None
        end = offset + sum(len(c) for c in chunks)
        special = (
            any(at < end and offset < at + len(patch) for at, patch in self._prepared.patches)
            or any(
                source < end and offset < source + length
                for source, length, _output, _destination in self._extents
            )
            or self.source_size is None
            or end > self.source_size
        )
        if special:
            position = offset
            for data in chunks:
                self._place(position, data)
                position += len(data)
                self.received = position
            return
        written = 0
        while written < end - offset:
            # Bounded by IOV_MAX, and retried after a partial write.
            written += os.pwritev(
                self._image.fd, _skip(chunks, written)[:1024], self._image_base + offset + written
            )
        self._wrote(self._image, self._image_base + offset, end - offset, list(chunks))
        self.received = end
        self._check_product(end)

    def _read_spill(self, offset: int, length: int) -> bytes:
        if offset + length > self.received:
            raise NeedMoreData(offset + length)
        return os.pread(self._spill_fd, length, offset)

    def _try_plan(self) -> None:
        try:
            if self._trees is None:
                trees = [
                    read_tree(d, self._read_spill) for d in read_descriptors(self._read_spill)
                ]
                primary = trees[0]
                if not primary.rock_ridge:
                    raise IsoError("the ISO has no Rock Ridge names; it is not a Proxmox ISO")
                files = primary.files
                if not any(name in files for name in CD_INFO):
                    raise BuildError("not a Proxmox ISO: it has no /.cd-info or /.disk/info")
                if CAPABLE not in files:
                    raise BuildError(
                        "this ISO cannot install automatically (no /auto-installer-capable); "
                        "use Proxmox VE 8.2, Backup Server 3.3 or newer"
                    )
                for name in (KERNEL, INITRD):
                    if name not in files:
                        raise BuildError(f"not a Proxmox installer ISO: it has no {name}")
                self._trees = trees
            if self._extract is not None and self._extracts is None:
                self._extracts = self._extract(self._trees, self._read_spill)
            size = self.source_size
            if size is None:
                # Without a known size the appended part waits for the end.
                return
            volume = self._trees[0].descriptor.volume_space_size * SECTOR
            if size < volume:
                raise BuildError(f"truncated ISO: {size} bytes, expected {volume}")
            self._prepared = prepare(
                self._trees, size, MODE_FILE, self.mode_file, self._read_spill, self._now
            )
        except NeedMoreData as e:
            self._plan_at = e.offset
            return
        self._open_outputs()
        self._place_spill()

    def _open_outputs(self) -> None:
        assert self._trees is not None and self._prepared is not None
        assert self.source_size is not None
        files = self._trees[0].files
        kernel, initrd = files[KERNEL], files[INITRD]
        prepared = self._prepared

        def open_output(name: str, size: int) -> _Output:
            fd = os.open(self.staging / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            output = _Output(name, fd, size, InOrderDigest(name, fd))
            self._outputs[name] = output
            return output

        def write(output: _Output, offset: int, data: bytes) -> None:
            os.pwrite(output.fd, data, offset)
            self._wrote(output, offset, len(data), [data])

        vmlinuz = open_output("vmlinuz", kernel.size)
        self._extents.append((kernel.extent * SECTOR, kernel.size, vmlinuz, 0))
        for name, (offset, length) in (self._extracts or {}).items():
            self._extents.append((offset, length, open_output(name, length), 0))
        if self.layout == "combined":
            head = cpio.align4(initrd.size)
            member = cpio.header(ISO_MEMBER, prepared.size, mode=0o100444)
            self._image_base = head + len(member)
            end = cpio.data_padding(prepared.size) + cpio.trailer()
            image = open_output("initrd", self._image_base + prepared.size + len(end))
            self._extents.append((initrd.extent * SECTOR, initrd.size, image, 0))
            write(image, initrd.size, b"\0" * (head - initrd.size))
            write(image, head, member)
            write(image, self._image_base + prepared.size, end)
        else:
            copy = open_output("initrd.img", initrd.size)
            self._extents.append((initrd.extent * SECTOR, initrd.size, copy, 0))
            image = open_output(ISO_MEMBER, prepared.size)
            self._image_base = 0
        self._image = image
        name = next(n for n in CD_INFO if n in files)
        self._cd_info = (name, files[name].extent * SECTOR, files[name].size)
        # Between the original bytes and the appended part: zeros, to the next sector.
        gap = b"\0" * (prepared.tail_offset - self.source_size)
        write(image, self._image_base + self.source_size, gap)
        write(image, self._image_base + prepared.tail_offset, prepared.tail)

    def _place_spill(self) -> None:
        position = 0
        while position < self.received:
            data = os.pread(self._spill_fd, min(READ_BACK, self.received - position), position)
            # Not kept for the digests, which read these few megabytes back: the spill
            # may be larger than the bound on memory.
            self._place(position, data, keep=False)
            position += len(data)
        os.close(self._spill_fd)
        self._spill_fd = -1
        os.unlink(self.staging / ".head")

    def _place(self, offset: int, data: bytes, keep: bool = True) -> None:
        assert self._image is not None and self._prepared is not None
        end = offset + len(data)
        if self.source_size is None or end > self.source_size:
            raise BuildError(f"the ISO is larger than announced ({self.source_size} bytes)")
        patched: bytes | bytearray = data
        for at, patch in self._prepared.patches:
            if at < end and offset < at + len(patch):
                if isinstance(patched, bytes):
                    patched = bytearray(patched)
                start = max(at, offset)
                stop = min(at + len(patch), end)
                patched[start - offset : stop - offset] = patch[start - at : stop - at]
        os.pwrite(self._image.fd, patched, self._image_base + offset)
        self._wrote(self._image, self._image_base + offset, len(data), [patched] if keep else None)
        for source, length, output, destination in self._extents:
            start = max(source, offset)
            stop = min(source + length, end)
            if start < stop:
                part = memoryview(data)[start - offset : stop - offset]
                os.pwrite(output.fd, part, destination + start - source)
                self._wrote(
                    output, destination + start - source, len(part), [part] if keep else None
                )
        self._check_product(end)

    def _check_product(self, end: int) -> None:
        """
        Read the ISO's identity as soon as the image is written up to C{end} past it.
        """
        if self.product is None and self._cd_info is not None:
            _name, at, size = self._cd_info
            if end >= at + size:
                self.product = self._read_product()

    # --- the end

    def finish(self) -> BuildResult:
        """
        After the last byte: check the size, finish the hashes and sync the files.

        @raise BuildError: for a truncated ISO or one that is not a Proxmox ISO.
        """
        self._drain()
        if self._prepared is None:
            if self._trees is None:
                with contextlib.suppress(NeedMoreData):
                    self._try_plan()
                if self._trees is None:
                    raise BuildError(f"truncated or not an ISO 9660 image ({self.received} bytes)")
            self.source_size = self.received
            self._try_plan()
        assert self._trees is not None and self._prepared is not None
        volume = self._trees[0].descriptor.volume_space_size * SECTOR
        if self.received < volume or (
            self.source_size is not None and self.received != self.source_size
        ):
            raise BuildError(
                f"truncated ISO: {self.received} bytes, expected "
                f"{max(volume, self.source_size or 0)}"
            )
        info = self.product or self._read_product()
        files = {}
        for name, output in self._outputs.items():
            digest = output.digest.hexdigest(output.size)
            os.fsync(output.fd)
            files[name] = OutputFile(name, output.size, digest)
        self._close()
        return BuildResult(self.received, self._hash.hexdigest(), info, files, self.layout)

    def _read_product(self) -> ProductInfo:
        assert self._image is not None and self._cd_info is not None
        name, at, size = self._cd_info
        if size > 65536:
            raise BuildError(f"{name} is implausibly large ({size} bytes)")
        return product_info(os.pread(self._image.fd, size, self._image_base + at))

    def abort(self) -> None:
        """
        Stop the workers and close the files (the caller removes the staging directory).
        """
        with self._lock:
            self._error = self._error or BuildError("aborted")
            self._lock.notify_all()
        if self._threaded:
            self._threaded = False
            for q in (self._write_queue, self._hash_queue, self._digest_queue):
                q.put(None)
            # Before the files close: a worker still busy with its last item must not
            # write to a descriptor that is closed, or reused by then.
            for worker in self._workers:
                worker.join()
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for output in self._outputs.values():
            os.close(output.fd)
        self._outputs.clear()
        if self._spill_fd >= 0:
            os.close(self._spill_fd)
            self._spill_fd = -1
