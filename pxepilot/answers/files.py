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
from pathlib import Path

from attrs import frozen
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
        return tuple(
            sorted(
                (f for f in self.identity_files if f.rule is rule and f.key == key),
                key=lambda f: (not f.canonical, f.name),
            )
        )

    def useless_identity_files(self) -> tuple[IdentityFile, ...]:
        """
        Identity files named after a value that never names a machine.
        """
        return tuple(f for f in self.identity_files if f.key is None)

    def identity_conflicts(self) -> dict[tuple[Rule, str], tuple[IdentityFile, ...]]:
        """
        Identities named by more than one file.
        """
        keys = sorted({(f.rule.value, f.key) for f in self.identity_files if f.key})
        found = {(Rule(rule), key): self.identity_files_for(Rule(rule), key) for rule, key in keys}
        return {identity: files for identity, files in found.items() if len(files) > 1}

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
        return tuple(
            sorted(
                (f for f in self.host_files if f.mac == mac),
                key=lambda f: (not f.canonical, f.name),
            )
        )

    def conflicts(self) -> dict[MacAddress, tuple[HostFile, ...]]:
        """
        MAC addresses named by more than one host file.
        """
        macs = sorted({f.mac for f in self.host_files})
        found = {mac: self.files_for(mac) for mac in macs}
        return {mac: files for mac, files in found.items() if len(files) > 1}


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


@implementer(IAnswerFiles)
@frozen
class DirectoryAnswerFiles:
    """
    L{IAnswerFiles} on a directory of the local file system.

    @ivar root: The answers directory.
    """

    root: Path

    def listing(self) -> AnswerListing:
        try:
            if not self.root.is_dir():
                raise AnswersUnavailable("answers directory is missing or not a directory")
            default_present = _is_regular_file(self.root / DEFAULT_NAME)
            host_files: list[HostFile] = []
            sidecars: list[HostFile] = []
            unrecognised: list[str] = []
            for entry in _scan(self.root / HOSTS_DIR):
                name = f"{HOSTS_DIR}/{entry.name}"
                sidecar = entry.name.endswith(SIDECAR_SUFFIX)
                stem = entry.name[: -len(SIDECAR_SUFFIX if sidecar else TOML_SUFFIX)]
                try:
                    mac = MacAddress.parse(stem)
                except MacAddressError:
                    unrecognised.append(name)
                else:
                    (sidecars if sidecar else host_files).append(HostFile(mac, name))
            identity_files = [
                IdentityFile(rule, key_of_name(rule, _stem(entry.name)), f"{folder}/{entry.name}")
                for rule, folder in FOLDERS.items()
                # Only a model's file is shared by many machines, so only it may be a
                # template; a UUID's or a serial's file is that machine's own already.
                for entry in _scan(self.root / folder, templates=rule is Rule.MODEL)
            ]
        except OSError as e:
            raise AnswersUnavailable(f"answers directory cannot be read: {e.strerror}") from e
        return AnswerListing(
            default_present,
            tuple(sorted(host_files, key=lambda f: f.name)),
            tuple(sorted(unrecognised)),
            tuple(sorted(sidecars, key=lambda f: f.name)),
            tuple(sorted(identity_files, key=lambda f: f.name)),
            _is_regular_file(self.root / DEFAULT_TEMPLATE),
            _is_regular_file(self.root / INVENTORY_NAME),
        )

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
            with os.fdopen(fd, "rb") as f:
                before = os.fstat(f.fileno())
                if not stat.S_ISREG(before.st_mode):
                    raise AnswersUnavailable(f"{name} is not a regular file")
                if before.st_size > MAX_ANSWER_BYTES:
                    raise AnswerFileTooLarge(name)
                try:
                    data = f.read(MAX_ANSWER_BYTES + 1)
                except OSError as e:
                    raise AnswersUnavailable(f"{name} cannot be read: {e.strerror}") from e
                after = os.fstat(f.fileno())
            if len(data) > MAX_ANSWER_BYTES:
                raise AnswerFileTooLarge(name)
            unchanged = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
            if unchanged and len(data) == after.st_size:
                return FileContents(data, after.st_mtime_ns / 1e9)
        raise AnswerFileChanging(name)


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
