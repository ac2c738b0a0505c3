"""
Which answer a machine gets, read so that an edit in progress is never served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from pxepilot.answers.check import AnswerProblem, ParsedAnswer, read_answer
from pxepilot.answers.files import (
    DEFAULT_NAME,
    AnswerFileChanging,
    AnswerFileTooLarge,
    AnswerListing,
    AnswersUnavailable,
    HostFile,
    IAnswerFiles,
)
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.versions import VersionRange
from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)


@frozen
class Served:
    """
    An answer file the installer can read.

    @ivar source: C{hosts/<file>} or C{default.toml}.
    @ivar data: Its bytes, exactly as on disk.
    @ivar mac: The MAC address whose host file it is; L{None} for the default.
    @ivar parsed: Its TOML, parsed once when it was read, for the checks that follow.
    """

    source: str
    data: bytes
    mac: MacAddress | None
    parsed: ParsedAnswer | None = field(default=None, eq=False, repr=False)

    @property
    def answer(self) -> ParsedAnswer | bytes:
        """
        What the checker reads: the parsed file, or its bytes when not parsed yet.
        """
        return self.parsed if self.parsed is not None else self.data


@frozen
class Invalid:
    """
    The chosen answer file cannot be served.

    @ivar source: C{hosts/<file>} or C{default.toml}.
    @ivar problem: Why.
    """

    source: str
    problem: AnswerProblem

    def describe(self) -> str:
        return self.problem.describe(self.source)


@frozen
class NoAnswer:
    """
    No host file matches and there is no C{default.toml}.
    """


@frozen
class Changing:
    """
    The chosen answer file was still being written when the wait for it ran out: it is
    not served (a half-written file could wipe the wrong disks), and the installer is
    told to ask again.

    @ivar source: C{hosts/<file>} or C{default.toml}.
    @ivar retry_after: Seconds after which asking again may find it settled.
    """

    source: str
    retry_after: int


Resolution = Served | Invalid | NoAnswer | Changing


def choose_source(listing: AnswerListing, macs: Sequence[MacAddress]) -> HostFile | str | None:
    """
    The answer for a machine with C{macs}: the host file of the first MAC, in the order
    given, that has one; otherwise C{default.toml} if present; otherwise L{None}. Files
    are never merged.
    """
    for mac in macs:
        files = listing.files_for(mac)
        if files:
            return files[0]
    return DEFAULT_NAME if listing.default_present else None


@define
class AnswerService:
    """
    Finds and reads answer files.

    A file changed less than C{settle} seconds ago may be half-written: it is read again
    once it has been still that long (waiting at most C{max_wait} seconds in all), so an
    edit in progress is never served. Nothing is cached: every request sees the
    directory as it is.

    @ivar files: The answers directory.
    @ivar clock: Time, for the settling wait.
    """

    files: IAnswerFiles
    clock: IReactorTime
    settle: float = 1.0
    max_wait: float = 5.0
    _reported_conflicts: frozenset[str] = field(default=frozenset(), init=False)

    def listing(self) -> AnswerListing:
        """
        The directory now; conflicts that appeared since the last look are logged.

        @raise AnswersUnavailable: when the directory cannot be read.
        """
        listing = self.files.listing()
        conflicts = listing.conflicts()
        described = frozenset(", ".join(f.name for f in files) for files in conflicts.values())
        for names in sorted(described - self._reported_conflicts):
            log.warn(
                "answers: {names} name the same MAC address; only {used} is used",
                names=names,
                used=names.split(", ")[0],
            )
        self._reported_conflicts = described
        return listing

    async def resolve(self, macs: Sequence[MacAddress]) -> Resolution:
        """
        The answer for a machine with C{macs}: a file is served only once it has been
        still for C{settle} seconds; one still changing when C{max_wait} runs out is
        L{Changing}, never served.

        @raise AnswersUnavailable: when the directory cannot be read.
        """
        deadline = self.clock.seconds() + self.max_wait
        while True:
            chosen = choose_source(self.listing(), macs)
            if chosen is None:
                return NoAnswer()
            source = chosen if isinstance(chosen, str) else chosen.name
            mac = None if isinstance(chosen, str) else chosen.mac
            now = self.clock.seconds()
            outcome: Resolution
            try:
                contents = self.files.read(source)
            except FileNotFoundError:
                # Removed since the listing: look again shortly.
                wait = self.settle / 10
                outcome = Invalid(source, AnswerProblem("removed while being read"))
            except AnswerFileChanging:
                wait = self.settle
                outcome = self._changing(source)
            except AnswerFileTooLarge:
                return Invalid(source, AnswerProblem("larger than any answer file can be"))
            else:
                age = now - contents.mtime
                # A future modification time (clock skew, copied files) is no reason to wait.
                wait = self.settle - age if 0 <= age < self.settle else 0
                parsed = read_answer(contents.data)
                if wait > 0:
                    # Written less than the settle time ago: maybe half-written (an
                    # empty file is a truncate before the write), whatever it parses as.
                    outcome = self._changing(source)
                elif isinstance(parsed, ParsedAnswer):
                    outcome = Served(source, contents.data, mac, parsed)
                else:
                    outcome = Invalid(source, parsed)
            if wait <= 0 or now >= deadline:
                if isinstance(outcome, Changing):
                    log.warn(
                        "answers: {source} is still being written after {seconds:.0f} s; "
                        "not served",
                        source=source,
                        seconds=self.max_wait,
                    )
                return outcome
            await deferLater(self.clock, min(wait, deadline - now))

    def _changing(self, source: str) -> Changing:
        return Changing(source, max(1, math.ceil(self.settle)))

    def inspect(self, versions: VersionRange | None = None) -> dict[str, Any]:
        """
        Every answer file and whether it can be served, as JSON-ready data; with
        C{versions}, also what those installers would find wrong in each.

        @raise AnswersUnavailable: when the directory cannot be read.
        """
        listing = self.listing()
        used = {listing.files_for(f.mac)[0].name for f in listing.host_files}
        hosts = []
        for host_file in listing.host_files:
            others = [f.name for f in listing.files_for(host_file.mac) if f != host_file]
            hosts.append(
                {
                    "mac": str(host_file.mac),
                    "file": host_file.name,
                    **self._validity(host_file.name, versions),
                    "used": host_file.name in used,
                    "conflicts_with": others,
                }
            )
        default: dict[str, Any] = {"file": DEFAULT_NAME, "present": listing.default_present}
        if listing.default_present:
            default.update(self._validity(DEFAULT_NAME, versions))
        return {
            "default": default,
            "hosts": hosts,
            "unrecognised_files": [
                {"file": name, "error": "the file name is not a MAC address"}
                for name in listing.unrecognised
            ],
        }

    def _validity(self, name: str, versions: VersionRange | None) -> dict[str, Any]:
        parsed: ParsedAnswer | AnswerProblem
        try:
            parsed = read_answer(self.files.read(name).data)
        except FileNotFoundError:
            parsed = AnswerProblem("removed while being checked")
        except AnswerFileChanging:
            parsed = AnswerProblem("kept changing while being read")
        except AnswerFileTooLarge:
            parsed = AnswerProblem("larger than any answer file can be")
        except AnswersUnavailable as e:
            parsed = AnswerProblem(str(e))
        if isinstance(parsed, AnswerProblem):
            return {"valid": False, "error": parsed.as_json()}
        if versions is None:
            return {"valid": True, "error": None}
        findings = lint_range(parsed, versions)
        return {
            "valid": True,
            "error": None,
            "installer_version": str(versions),
            "accepted": not errors(findings),
            "findings": [finding.as_json() for finding in findings],
        }
