"""
The build as one streaming pass: the ISO's bytes arrive in order, once, and go
straight into the assets.

Until the directory tree has arrived (the first megabytes of a Proxmox ISO) the bytes
are kept in a spill file; then the prepared image is planned (L{builder.iso9660}), the
spilled bytes are placed, and every later chunk is written where it belongs as it
arrives: into the prepared ISO (inside the combined initrd, or as C{proxmox.iso}), and,
when it falls in the kernel's or the initrd's extent, into those files too. The SHA-256
of the source is taken on the way; the SHA-256 of each output file is taken by reading
it back behind the writer. Nothing is read whole into memory, and nothing is copied
after the last byte has arrived but the small parts written at the end.

With C{threaded=True} the hashing and writing run in worker threads (hashlib and file
I/O release the GIL), so that a download, its hash and its writes proceed in parallel.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from attrs import define, field, frozen

from builder import cpio
from builder.cdinfo import ProductInfo, product_info
from builder.iso9660 import (
    SECTOR,
    IsoError,
    NeedMoreData,
    Prepared,
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

# Queued but not yet written or hashed, in bytes: the bound on the pipeline's memory.
MAX_QUEUED = 32 << 20
READ_BACK = 4 << 20
FLUSH_EVERY = 256 << 20


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


@frozen
class _Piece:
    """
    A part of an output file: static bytes, or a range of the prepared image.
    """

    length: int
    data: bytes | None = None
    image_offset: int = 0


@define
class _Output:
    """
    An output file being written, with the order of its parts for hashing.
    """

    name: str
    fd: int
    pieces: list[_Piece] = field(factory=list)

    @property
    def size(self) -> int:
        return sum(p.length for p in self.pieces)


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
    @param threaded: Hash and write in worker threads.
    @param now: The time stamped on the new file, for reproducible tests.
    """

    def __init__(
        self,
        staging: Path,
        layout: str,
        mode_file: bytes,
        source_size: int | None = None,
        threaded: bool = False,
        now: float | None = None,
    ) -> None:
        self.staging = staging
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
        self._threaded = threaded
        self._queued = 0
        self._lock = threading.Condition()
        self._room_waiters: list[Callable[[], None]] = []
        # Output hashes, taken by a thread that follows the writer (threaded mode).
        self._hasher: threading.Thread | None = None
        self._digests: dict[str, str] = {}
        self._hash_error: BaseException | None = None
        self._ended = False
        if threaded:
            self._write_queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
            self._hash_queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
            self._workers = [
                threading.Thread(
                    target=self._work,
                    args=(self._write_queue, self._write),
                    name="builder-write",
                    daemon=True,
                ),
                threading.Thread(
                    target=self._work,
                    args=(self._hash_queue, self._hash_chunks),
                    name="builder-hash",
                    daemon=True,
                ),
            ]
            for worker in self._workers:
                worker.start()
        self._pending: list[bytes] = []
        self._pending_bytes = 0

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
        if self._pending_bytes >= 1 << 20:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        chunks, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        with self._lock:
            self._queued += 2 * size
        self._write_queue.put(chunks)
        self._hash_queue.put(chunks)

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

    def _work(
        self, items: queue.SimpleQueue[list[bytes] | None], handle: Callable[[list[bytes]], None]
    ) -> None:
        while True:
            chunks = items.get()
            if chunks is None:
                return
            try:
                if self._error is None:
                    handle(chunks)
            except BaseException as e:  # reported to the feeding thread
                with self._lock:
                    if self._error is None:
                        self._error = e
            size = sum(len(c) for c in chunks)
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
            for q in (self._write_queue, self._hash_queue):
                q.put(None)
            for worker in self._workers:
                worker.join()
            self._threaded = False
        self._raise_failure()

    # --- writing (the writer's thread)

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
            self._place_all(self.received, chunks[index:])

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
            or end > self._prepared.tail_offset
        )
        if special or self.product is None:
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
        # Only now: the output hasher reads whatever is counted as received.
        self.received = end

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
            size = self.source_size
            if size is None:
                # Without a known size the appended part waits for the end.
                return
            self._prepared = prepare(
                self._trees, size, MODE_FILE, self.mode_file, self._read_spill, self._now
            )
        except NeedMoreData as e:
            self._plan_at = e.offset
            return
        self._open_outputs()
        self._place_spill()
        if self._threaded:
            self._hasher = threading.Thread(
                target=self._hash_outputs, name="builder-hash-outputs", daemon=True
            )
            self._hasher.start()

    def _open_outputs(self) -> None:
        assert self._trees is not None and self._prepared is not None
        files = self._trees[0].files
        kernel, initrd = files[KERNEL], files[INITRD]
        image_size = self._prepared.size

        def open_output(name: str) -> _Output:
            fd = os.open(self.staging / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            output = _Output(name, fd)
            self._outputs[name] = output
            return output

        vmlinuz = open_output("vmlinuz")
        vmlinuz.pieces.append(_Piece(kernel.size, image_offset=kernel.extent * SECTOR))
        self._extents.append((kernel.extent * SECTOR, kernel.size, vmlinuz, 0))
        if self.layout == "combined":
            image = open_output("initrd")
            head = cpio.align4(initrd.size)
            member = cpio.header(ISO_MEMBER, image_size, mode=0o100444)
            image.pieces += [
                _Piece(initrd.size, image_offset=initrd.extent * SECTOR),
                _Piece(head - initrd.size, b"\0" * (head - initrd.size)),
                _Piece(len(member), member),
            ]
            self._extents.append((initrd.extent * SECTOR, initrd.size, image, 0))
            self._image_base = head + len(member)
            end = cpio.data_padding(image_size) + cpio.trailer()
            image.pieces += [_Piece(image_size, image_offset=0), _Piece(len(end), end)]
            os.pwrite(image.fd, member, head)
            os.pwrite(image.fd, end, self._image_base + image_size)
        else:
            copy = open_output("initrd.img")
            copy.pieces.append(_Piece(initrd.size, image_offset=initrd.extent * SECTOR))
            self._extents.append((initrd.extent * SECTOR, initrd.size, copy, 0))
            image = open_output(ISO_MEMBER)
            image.pieces.append(_Piece(image_size, image_offset=0))
            self._image_base = 0
        self._image = image
        name = next(n for n in CD_INFO if n in files)
        self._cd_info = (name, files[name].extent * SECTOR, files[name].size)
        tail = self._prepared
        os.pwrite(image.fd, tail.tail, self._image_base + tail.tail_offset)

    def _place_spill(self) -> None:
        position = 0
        while position < self.received:
            data = os.pread(self._spill_fd, min(READ_BACK, self.received - position), position)
            self._place(position, data)
            position += len(data)
        os.close(self._spill_fd)
        self._spill_fd = -1
        os.unlink(self.staging / ".head")

    def _place(self, offset: int, data: bytes) -> None:
        assert self._image is not None and self._prepared is not None
        end = offset + len(data)
        if end > self._prepared.tail_offset:
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
        for source, length, output, destination in self._extents:
            start = max(source, offset)
            stop = min(source + length, end)
            if start < stop:
                os.pwrite(
                    output.fd, data[start - offset : stop - offset], destination + start - source
                )
        if self.product is None and self._cd_info is not None:
            _name, at, size = self._cd_info
            if end >= at + size:
                self.product = self._read_product()

    # --- the end

    def finish(self) -> BuildResult:
        """
        After the last byte: check the size, finish the files and hash them.

        @raise BuildError: for a truncated ISO or one that is not a Proxmox ISO.
        """
        self._drain()
        with self._lock:
            self._ended = True
            self._lock.notify_all()
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
        if self._hasher is not None:
            self._hasher.join()
            if self._hash_error is not None:
                raise self._hash_error
        files = {}
        for name, output in self._outputs.items():
            digest = self._digests.get(name) or self._hash_output(output)
            os.fsync(output.fd)
            os.close(output.fd)
            files[name] = OutputFile(name, output.size, digest)
        self._outputs.clear()
        return BuildResult(self.received, self._hash.hexdigest(), info, files, self.layout)

    def _read_product(self) -> ProductInfo:
        assert self._image is not None and self._cd_info is not None
        name, at, size = self._cd_info
        if size > 65536:
            raise BuildError(f"{name} is implausibly large ({size} bytes)")
        return product_info(os.pread(self._image.fd, size, self._image_base + at))

    def _available(self, offset: int) -> int:
        """
        How far the prepared image can be read from C{offset} on: the original bytes as
        far as they are written; the gap and the appended part once they all are.
        """
        assert self._prepared is not None
        if offset < self.received:
            return self.received
        size = self.source_size
        if size is not None and offset >= size and self.received >= size:
            return self._prepared.size
        return offset

    def _wait_available(self, offset: int) -> int:
        with self._lock:
            self._lock.wait_for(
                lambda: self._available(offset) > offset or self._error is not None or self._ended
            )
            self._raise_failure()
            limit = self._available(offset)
        if limit <= offset:
            raise BuildError("the ISO ended before the assets were complete")
        return limit

    def _hash_output(self, output: _Output, wait: bool = False) -> str:
        """
        An output file's SHA-256, read back in order; with C{wait}, following the writer
        as the parts arrive.
        """
        digest = hashlib.sha256()
        position = 0
        flushed = 0
        for piece in output.pieces:
            if piece.data is not None:
                digest.update(piece.data)
                position += piece.length
                continue
            done = 0
            while done < piece.length:
                at = piece.image_offset + done
                limit = self._wait_available(at) if wait else at + piece.length
                count = min(READ_BACK, piece.length - done, limit - at)
                data = os.pread(output.fd, count, position)
                if not data:
                    raise BuildError(f"{output.name} is shorter than it should be")
                digest.update(data)
                position += len(data)
                done += len(data)
                if wait and position - flushed >= FLUSH_EVERY:
                    # Behind the writer anyway: get the data onto the disk now, so that
                    # the final fsync has little left to do.
                    os.fdatasync(output.fd)
                    flushed = position
        return digest.hexdigest()

    def _hash_outputs(self) -> None:
        try:
            for name, output in list(self._outputs.items()):
                self._digests[name] = self._hash_output(output, wait=True)
        except BaseException as e:  # reported by finish(), after its own checks
            self._hash_error = e

    def abort(self) -> None:
        """
        Stop the workers and close the files (the caller removes the staging directory).
        """
        with self._lock:
            self._error = self._error or BuildError("aborted")
            self._lock.notify_all()
        if self._hasher is not None:
            self._hasher.join()
        if self._threaded:
            for q in (self._write_queue, self._hash_queue):
                q.put(None)
        for output in self._outputs.values():
            os.close(output.fd)
        self._outputs.clear()
        if self._spill_fd >= 0:
            os.close(self._spill_fd)
            self._spill_fd = -1
