"""
What the TFTP server serves: files under the TFTP root and files pxe-pilot generates,
behind L{ITFTPFiles}, read through L{IReader}.

Requested names are normalised and checked before anything touches the file system:
C{\\} counts as C{/}, C{..} and hidden segments are refused, and the directory a file is
looked up in must resolve to one under the root even through symbolic links. The file's own
name may be a link to a regular file anywhere: distributions install boot loaders that way
(Debian's C{/usr/lib/ipxe/ipxe.efi} links to C{/boot/ipxe.efi}), and only the operator can
put a link in the root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from attrs import frozen
from zope.interface import Attribute, Interface, implementer

from pxepilot.tftp.packets import RequestOption

MAX_NAME_BYTES = 255
_CHUNK = 65536


class FileNotFound(Exception):
    """
    No file of that name (TFTP error 1).
    """


class AccessViolation(Exception):
    """
    The name may not be served (TFTP error 2); the message is for the log only.
    """


class BadFileName(Exception):
    """
    The name cannot be a file name at all (TFTP error 4).
    """


class IReader(Interface):
    """
    The bytes of one transfer.
    """

    size = Attribute("The exact number of bytes, or None when it is not known in advance.")

    def read(offset: int, length: int) -> bytes:
        """
        Up to C{length} bytes from C{offset}; fewer only at the end. A transfer never
        goes back more than two windows.

        @raise OSError: when the underlying file cannot be read.
        """

    def close() -> None:
        """
        Release what the reader holds.
        """


@frozen
class RequestContext:
    """
    Who asks for a file, and how.

    @ivar client: The client's IP address.
    @ivar local: The address the request was sent to (C{""} when unknown).
    @ivar options: The request's options, as sent (their shape tells iPXE apart).
    """

    client: str
    local: str = ""
    options: tuple[RequestOption, ...] = ()


class ITFTPFiles(Interface):
    """
    The files a TFTP server serves.
    """

    def open(name: str, context: RequestContext) -> IReader:
        """
        Open the file called C{name} (as returned by L{normalise_name}) for the request
        described by C{context}.

        @raise FileNotFound: when there is no such file.
        @raise AccessViolation: when it may not be served.
        """


def normalise_name(raw: bytes) -> str:
    """
    The relative path a requested name stands for: C{\\} becomes C{/}, leading,
    doubled and C{.} segments go.

    @raise BadFileName: for names too long to be real.
    @raise FileNotFound: for a name with no segments left.
    @raise AccessViolation: for a C{..} or hidden (C{.name}) segment.
    """
    if len(raw) > MAX_NAME_BYTES:
        raise BadFileName(f"file name longer than {MAX_NAME_BYTES} bytes")
    text = os.fsdecode(raw).replace("\\", "/")
    segments = [s for s in text.split("/") if s not in ("", ".")]
    if not segments:
        raise FileNotFound("empty file name")
    for segment in segments:
        if segment == "..":
            raise AccessViolation("'..' in file name")
        if segment.startswith("."):
            raise AccessViolation("hidden file")
        if "\0" in segment:
            raise BadFileName("NUL in file name")
    return "/".join(segments)


@implementer(IReader)
class FileReader:
    """
    A regular file, read with C{pread}: nothing is buffered, so any number of
    transfers of one file cost no memory beyond the block in flight. The size is fixed
    when the file is opened; a file replaced by rename keeps serving the old content.
    """

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size: int | None = size

    def read(self, offset: int, length: int) -> bytes:
        assert self.size is not None
        remaining = self.size - offset
        if remaining <= 0:
            return b""
        return os.pread(self._fd, min(length, remaining), offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IReader)
class BytesReader:
    """
    Content made in memory, of known size.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size: int | None = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]

    def close(self) -> None:
        self._data = b""


def to_netascii(data: bytes) -> bytes:
    """
    Convert to netascii (RFC 1350, Telnet NVT): LF goes as CR LF, a bare CR as CR NUL.
    """
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@implementer(IReader)
class NetasciiReader:
    """
    Another reader converted to netascii on the fly. The converted size is unknown in
    advance. Only the last C{retain} bytes before the latest read are kept, enough to
    send the windows not yet acknowledged again.
    """

    size = None

    def __init__(self, raw: IReader, retain: int = 512 * 1024) -> None:
        self._raw = raw
        self._retain = retain
        self._raw_offset = 0
        self._buffer = b""
        self._buffer_start = 0
        self._raw_done = False

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._buffer_start:
            raise ValueError(f"netascii data before {self._buffer_start} was released")
        wanted = offset - self._buffer_start + length
        while len(self._buffer) < wanted and not self._raw_done:
            chunk = self._raw.read(self._raw_offset, _CHUNK)
            if len(chunk) < _CHUNK:
                self._raw_done = True
            self._raw_offset += len(chunk)
            self._buffer += to_netascii(chunk)
        keep_from = max(self._buffer_start, offset - self._retain)
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return self._buffer[offset - keep_from : offset - keep_from + length]

    def close(self) -> None:
        self._raw.close()
        self._buffer = b""


@implementer(ITFTPFiles)
@frozen
class TFTPRoot:
    """
    The files under C{root}.
    """

    root: Path

    def open(self, name: str, context: RequestContext) -> IReader:
        root = os.path.realpath(self.root)
        directory, _, base = name.rpartition("/")
        parent = os.path.realpath(os.path.join(root, directory))
        if os.path.commonpath([root, parent]) != root:
            raise AccessViolation("directory resolves outside the TFTP root")
        path = os.path.join(parent, base)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFound("no such file") from None
        except PermissionError:
            raise AccessViolation("permission denied") from None
        except OSError as e:
            raise AccessViolation(e.strerror or "cannot be opened") from None
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise FileNotFound("not a regular file")
        return FileReader(fd, status.st_size)
