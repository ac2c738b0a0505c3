"""
Access to the answers directory, behind L{IAnswerFiles}.

The directory holds C{default.toml}, C{hosts/<mac>.toml} and, for machines named by
their DMI identity, C{uuids/<uuid>.toml}, C{serials/<serial>.toml} and
C{models/<model>.toml}; templates (C{default.toml.tmpl}, C{models/<model>.toml.tmpl})
take their values from C{inventory.toml}. Only names found by listing the directory
are ever opened: nothing a client sends becomes part of a path.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from attrs import define, field, frozen
from zope.interface import Interface, implementer

from pxepilot.answers.identity import FOLDERS, Rule, key_of_name
from pxepilot.answers.template import INVENTORY_NAME, TEMPLATE_SUFFIX
from pxepilot.macs import MacAddress, MacAddressError

DEFAULT_NAME = "default.toml"
DEFAULT_TEMPLATE = "default.toml.tmpl"
HOSTS_DIR = "hosts"
TOML_SUFFIX = ".toml"
# Per-host boot settings live next to the answer: hosts/<mac>.boot.toml.
SIDECAR_SUFFIX = ".boot.toml"

# The installer reads answers of up to 10 MB; real ones are a few kilobytes.
MAX_ANSWER_BYTES = 1 << 20

# A listing is kept while none of the directories it was taken from has changed. A
# directory's change time says so exactly once it is older than this: far beyond the
# file system's timestamp granularity, so that a second change within the same tick as
# the one listed cannot go unseen.
STILL_FOR = 1.0

# What identifies a directory's entries at one moment: device, inode, modification and
# change times (a change time cannot be set back, as rsync sets modification times).
Stamp = tuple[int, int, int, int] | None


class AnswersUnavailable(Exception):
    """
    The answers directory cannot be read at all.
    """


class AnswerFileChanging(Exception):
    """
    A file kept changing while it was being read.
    """


class AnswerFileTooLarge(Exception):
    """
    A file is larger than any answer file can be.
    """


@frozen
class HostFile:
    """
    A file in C{hosts/} whose name is a MAC address.

    @ivar mac: The MAC address its name spells.
    @ivar name: Its name relative to the answers directory, C{hosts/<file>}.
    """

    mac: MacAddress
    name: str

    @property
    def canonical(self) -> bool:
        """
        Whether the file has the canonical name, C{hosts/aa-bb-cc-dd-ee-ff.toml}.
        """
        suffix = SIDECAR_SUFFIX if self.name.endswith(SIDECAR_SUFFIX) else TOML_SUFFIX
        return self.name == f"{HOSTS_DIR}/{self.mac.canonical}{suffix}"


@frozen
class IdentityFile:
    """
    A file in C{uuids/}, C{serials/} or C{models/}.

    @ivar rule: Which of them.
    @ivar key: The identity its name spells (see L{pxepilot.answers.identity}); L{None}
        for a name that never matches, such as a firmware placeholder.
    @ivar name: Its name relative to the answers directory.
    """

    rule: Rule
    key: str | None
    name: str

    @property
    def canonical(self) -> bool:
        """
        Whether the file is named by its key exactly.
        """
        return self.name == f"{FOLDERS[self.rule]}/{self.key}{TOML_SUFFIX}"


@frozen
class AnswerListing:
    """
    What the answers directory holds at one moment.

    @ivar default_present: Whether C{default.toml} exists.
    @ivar host_files: Host files in name order.
    @ivar unrecognised: C{hosts/*.toml} names that do not spell a MAC address.
    @ivar sidecars: Boot settings files, C{hosts/<mac>.boot.toml}, in name order.
    @ivar identity_files: Files of C{uuids/}, C{serials/} and C{models/}, in name order;
        C{models/} may hold templates (C{.toml.tmpl}).
    @ivar default_template_present: Whether C{default.toml.tmpl} exists.
    @ivar inventory_present: Whether C{inventory.toml}, the templates' values, exists.
    """

    default_present: bool
    host_files: tuple[HostFile, ...]
    unrecognised: tuple[str, ...]
    sidecars: tuple[HostFile, ...] = ()
    identity_files: tuple[IdentityFile, ...] = ()
    default_template_present: bool = False
    inventory_present: bool = False

    def identity_files_for(self, rule: Rule, key: str) -> tuple[IdentityFile, ...]:
        """
        The files of C{rule} for C{key}, the one that is used first: the canonical name,
        then the other spellings in name order.
        """
        return self._by_identity.get((rule, key), ())

    @cached_property
    def _by_identity(self) -> dict[tuple[Rule, str], tuple[IdentityFile, ...]]:
        # Grouped once per listing: a request looks up a few keys, not every file.
        found: dict[tuple[Rule, str], list[IdentityFile]] = {}
        for f in self.identity_files:
            if f.key:
                found.setdefault((f.rule, f.key), []).append(f)
        return {
            key: tuple(sorted(files, key=lambda f: (not f.canonical, f.name)))
            for key, files in found.items()
        }

    def useless_identity_files(self) -> tuple[IdentityFile, ...]:
        """
        Identity files named after a value that never names a machine.
        """
        return tuple(f for f in self.identity_files if f.key is None)

    def identity_conflicts(self) -> dict[tuple[Rule, str], tuple[IdentityFile, ...]]:
        """
        Identities named by more than one file.
        """
        return {
            identity: self._by_identity[identity]
            for identity in sorted(self._by_identity, key=lambda k: (k[0].value, k[1]))
            if len(self._by_identity[identity]) > 1
        }

    def sidecar_for(self, mac: MacAddress) -> HostFile | None:
        """
        The boot settings file for C{mac}: the canonical name first.
        """
        found = sorted(
            (f for f in self.sidecars if f.mac == mac), key=lambda f: (not f.canonical, f.name)
        )
        return found[0] if found else None

    def files_for(self, mac: MacAddress) -> tuple[HostFile, ...]:
        """
        The host files for C{mac}, the one that is used first: the canonical name, then the
        other spellings in name order.
        """
        return self._by_mac.get(mac, ())

    @cached_property
    def _by_mac(self) -> dict[MacAddress, tuple[HostFile, ...]]:
        # Grouped once per listing: a request looks up its few MACs, not every file.
        found: dict[MacAddress, list[HostFile]] = {}
        for f in self.host_files:
            found.setdefault(f.mac, []).append(f)
        return {
            mac: tuple(sorted(files, key=lambda f: (not f.canonical, f.name)))
            for mac, files in found.items()
        }

    def conflicts(self) -> dict[MacAddress, tuple[HostFile, ...]]:
        """
        MAC addresses named by more than one host file.
        """
        return {
            mac: self._by_mac[mac] for mac in sorted(self._by_mac) if len(self._by_mac[mac]) > 1
        }


@frozen
class FileContents:
    """
    The bytes of a file, read while it did not change.

    @ivar data: The content.
    @ivar mtime: Modification time, in seconds since the epoch.
    """

    data: bytes
    mtime: float


class IAnswerFiles(Interface):
    """
    The answers directory.
    """

    def listing() -> AnswerListing:
        """
        List the answer files now.

        @raise AnswersUnavailable: when the directory cannot be read.
        """

    def read(name: str) -> FileContents:
        """
        Read a file named by a listing (C{default.toml}, C{default.toml.tmpl},
        C{inventory.toml}, a L{HostFile.name} or an L{IdentityFile.name}).

        @raise FileNotFoundError: when it has gone since it was listed.
        @raise AnswerFileChanging: when it changed during every attempt to read it.
        @raise AnswerFileTooLarge: when it is larger than L{MAX_ANSWER_BYTES}.
        @raise AnswersUnavailable: when it cannot be read for another reason.
        """


@define
class _Kept:
    """
    The last listing worth keeping, and the directories' stamps it was taken at.
    """

    stamps: tuple[Stamp, ...] | None = None
    listing: AnswerListing | None = None


@implementer(IAnswerFiles)
@frozen
class DirectoryAnswerFiles:
    """
    L{IAnswerFiles} on a directory of the local file system.

    Listing stats the directories rather than reading them when none has changed
    since the last listing (one stat each, whatever the number of files): a rack of
    installers asking at once then costs a few system calls each, not a scan of every
    host file. A listing holding a symbolic link is never kept, since what the link
    points to may change without its directory changing.

    @ivar root: The answers directory.
    @ivar wall_clock: The time now, to tell a directory still long enough to trust its
        stamps.
    """

    root: Path
    wall_clock: Callable[[], float] = field(default=time.time, eq=False, repr=False)
    _kept: _Kept = field(factory=_Kept, init=False, eq=False, repr=False)

    def listing(self) -> AnswerListing:
        try:
            stamps = self._stamps()
            if stamps == self._kept.stamps and self._kept.listing is not None:
                return self._kept.listing
            listing, linked = self._scan_listing()
        except OSError as e:
            raise AnswersUnavailable(f"answers directory cannot be read: {e.strerror}") from e
        changed = max((stamp[3] for stamp in stamps if stamp is not None), default=0) / 1e9
        still = self.wall_clock() - changed >= STILL_FOR
        self._kept.stamps, self._kept.listing = (
            (stamps, listing) if still and not linked else (None, None)
        )
        return listing

    def _stamps(self) -> tuple[Stamp, ...]:
        """
        The stamps of the answers directory and of each folder a listing reads.
        """
        root = os.fspath(self.root)
        top = _stamp(root)
        kept = self._kept.stamps
        if kept is not None and kept[0] == top:
            # A folder made or removed changes the answers directory's stamp: while that
            # is the same, the folders absent then are absent still, and need no look.
            return (
                top,
                *(
                    None if was is None else _stamp(os.path.join(root, name))
                    for name, was in zip(_FOLDERS, kept[1:], strict=True)
                ),
            )
        return (top, *(_stamp(os.path.join(root, name)) for name in _FOLDERS))

    def _scan_listing(self) -> tuple[AnswerListing, bool]:
        """
        The directory as it is, and whether any file listed is a symbolic link.

        @raise OSError: when the directory cannot be read.
        """
        if not self.root.is_dir():
            raise AnswersUnavailable("answers directory is missing or not a directory")
        default_present = _is_regular_file(self.root / DEFAULT_NAME)
        host_files: list[HostFile] = []
        sidecars: list[HostFile] = []
        unrecognised: list[str] = []
        hosts = _scan(self.root / HOSTS_DIR)
        for entry in hosts:
            name = f"{HOSTS_DIR}/{entry.name}"
            sidecar = entry.name.endswith(SIDECAR_SUFFIX)
            stem = entry.name[: -len(SIDECAR_SUFFIX if sidecar else TOML_SUFFIX)]
            try:
                mac = MacAddress.parse(stem)
            except MacAddressError:
                unrecognised.append(name)
            else:
                (sidecars if sidecar else host_files).append(HostFile(mac, name))
        identities = [
            (rule, folder, entry)
            for rule, folder in FOLDERS.items()
            # Only a model's file is shared by many machines, so only it may be a
            # template; a UUID's or a serial's file is that machine's own already.
            for entry in _scan(self.root / folder, templates=rule is Rule.MODEL)
        ]
        identity_files = [
            IdentityFile(rule, key_of_name(rule, _stem(entry.name)), f"{folder}/{entry.name}")
            for rule, folder, entry in identities
        ]
        linked = any(entry.is_symlink() for entry in [*hosts, *(e for _, _, e in identities)])
        linked = linked or any(
            os.path.islink(self.root / name)
            for name in (DEFAULT_NAME, DEFAULT_TEMPLATE, INVENTORY_NAME)
        )
        listing = AnswerListing(
            default_present,
            tuple(sorted(host_files, key=lambda f: f.name)),
            tuple(sorted(unrecognised)),
            tuple(sorted(sidecars, key=lambda f: f.name)),
            tuple(sorted(identity_files, key=lambda f: f.name)),
            _is_regular_file(self.root / DEFAULT_TEMPLATE),
            _is_regular_file(self.root / INVENTORY_NAME),
        )
        return listing, linked

    def read(self, name: str) -> FileContents:
        path = self.root / name
        for _attempt in range(5):
            try:
                # O_NONBLOCK: a FIFO put in place of an answer file must not hang the server.
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                raise
            except OSError as e:
                raise AnswersUnavailable(f"{name} cannot be read: {e.strerror}") from e
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise AnswersUnavailable(f"{name} is not a regular file")
                if before.st_size > MAX_ANSWER_BYTES:
                    raise AnswerFileTooLarge(name)
                try:
                    # One byte more than the file holds, to see that it grew meanwhile.
                    data = _read_up_to(fd, before.st_size + 1)
                except OSError as e:
                    raise AnswersUnavailable(f"{name} cannot be read: {e.strerror}") from e
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if len(data) > MAX_ANSWER_BYTES:
                raise AnswerFileTooLarge(name)
            unchanged = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
            if unchanged and len(data) == after.st_size:
                return FileContents(data, after.st_mtime_ns / 1e9)
        raise AnswerFileChanging(name)


def _read_up_to(fd: int, size: int) -> bytes:
    """
    The bytes of regular file C{fd} from where it stands, up to C{size} of them or its
    end.

    Read into a buffer of the file's own size: asking a buffered file for up to
    L{MAX_ANSWER_BYTES} allocates that much for every read.
    """
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, left)
        chunks.append(chunk)
        # A regular file reads short only at its end: no second call to learn that.
        if len(chunk) < left:
            break
        left -= len(chunk)
    return b"".join(chunks)


# The folders a listing reads, besides the answers directory itself.
_FOLDERS = (HOSTS_DIR, *sorted(FOLDERS.values()))


def _stamp(directory: str) -> Stamp:
    """
    What identifies C{directory}'s entries now; L{None} when there is no such directory.

    @raise OSError: when it cannot be looked at.
    """
    try:
        found = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino, found.st_mtime_ns, found.st_ctime_ns


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            return False
        raise


def _stem(name: str) -> str:
    return name[: -len(TEMPLATE_SUFFIX if name.endswith(TEMPLATE_SUFFIX) else TOML_SUFFIX)]


def _scan(directory: Path, templates: bool = False) -> list[os.DirEntry[str]]:
    """
    The C{*.toml} (and with C{templates}, C{*.toml.tmpl}) regular files (or links to
    them) in C{directory}; hidden names, which editors and atomic writers use for
    temporary files, are left out.
    """
    suffixes = (TOML_SUFFIX, TEMPLATE_SUFFIX) if templates else (TOML_SUFFIX,)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return []
    return [
        entry
        for entry in entries
        if entry.name.endswith(suffixes)
        and not entry.name.startswith(".")
        and _is_regular_file(Path(entry.path))
    ]
