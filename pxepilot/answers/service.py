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
    DEFAULT_TEMPLATE,
    AnswerFileChanging,
    AnswerFileTooLarge,
    AnswerListing,
    AnswersUnavailable,
    HostFile,
    IAnswerFiles,
    IdentityFile,
)
from pxepilot.answers.identity import FOLDERS, Identity, Rule
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.recent import Recent
from pxepilot.answers.template import (
    INVENTORY_NAME,
    TEMPLATE_SUFFIX,
    TemplateError,
    host_for,
    parse_inventory,
    render,
    renderings,
)
from pxepilot.answers.versions import VersionRange
from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)


@frozen
class Served:
    """
    An answer file the installer can read.

    @ivar source: C{hosts/<file>}, C{uuids/<file>}, C{serials/<file>},
        C{models/<file>}, C{default.toml} or C{default.toml.tmpl}.
    @ivar data: Its bytes, exactly as on disk, or a template's as rendered.
    @ivar mac: The MAC address whose host file it is; L{None} for the default.
    @ivar parsed: Its TOML, parsed once when it was read, for the checks that follow.
    """

    source: str
    data: bytes
    mac: MacAddress | None
    parsed: ParsedAnswer | None = field(default=None, eq=False, repr=False)

    @property
    def rule(self) -> Rule:
        """
        Which rule chose the file.
        """
        return rule_of(self.source) if self.mac is None else Rule.MAC

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

# Parsed answer files remembered by their bytes: a host file each for a large rack,
# within a bound on the memory they hold.
PARSED_FILES = 1024
PARSED_BYTES = 16 << 20

USELESS_NAME = (
    "the file name is no {rule} of a machine (a firmware placeholder, or not one at all): "
    "it never matches"
)


def rule_of(source: str) -> Rule:
    """
    The rule under which a file, named relative to the answers directory, is chosen.
    """
    folder = source.partition("/")[0] if "/" in source else None
    for rule, name in FOLDERS.items():
        if folder == name:
            return rule
    return Rule.MAC if folder is not None else Rule.DEFAULT


def choose_source(
    listing: AnswerListing, macs: Sequence[MacAddress], identity: Identity | None = None
) -> HostFile | IdentityFile | str | None:
    """
    The answer for a machine with C{macs}: the host file of the first MAC, in the order
    given, that has one; otherwise the file of its system UUID, of its serial number,
    then of its model; otherwise C{default.toml} if present; otherwise L{None}. Files
    are never merged.
    """
    for mac in macs:
        files = listing.files_for(mac)
        if files:
            return files[0]
    if identity is not None:
        for rule, key in (
            (Rule.UUID, identity.uuid),
            (Rule.SERIAL, identity.serial),
            (Rule.MODEL, identity.model),
        ):
            found = listing.identity_files_for(rule, key) if key else ()
            if found:
                return found[0]
    if listing.default_present:
        return DEFAULT_NAME
    return DEFAULT_TEMPLATE if listing.default_template_present else None


@define
class AnswerService:
    """
    Finds and reads answer files.

    A file changed less than C{settle} seconds ago may be half-written: it is read again
    once it has been still that long (waiting at most C{max_wait} seconds in all), so an
    edit in progress is never served. Every request sees the directory and the files
    as they are: each file is read again, and only what follows from its bytes alone
    (its parsed TOML) is remembered, by those bytes, so that a rack of installers
    asking for the same files parses each once.

    @ivar files: The answers directory.
    @ivar clock: Time, for the settling wait.
    """

    files: IAnswerFiles
    clock: IReactorTime
    settle: float = 1.0
    max_wait: float = 5.0
    _reported_conflicts: frozenset[str] = field(default=frozenset(), init=False)
    _last_listing: AnswerListing | None = field(default=None, init=False)
    _parsed: Recent[bytes, ParsedAnswer | AnswerProblem] = field(
        factory=lambda: Recent(PARSED_FILES, PARSED_BYTES, len), init=False
    )

    def read_settled(self, source: str, now: float) -> ParsedAnswer | AnswerProblem | None:
        """
        An answer file as C{POST /answer} would read it at C{now}, for a menu to decide
        on; L{None} while it may be half-written (the route waits for it) or when it
        is a template (only the route knows the machine's inventory host to render it
        for, and checks the rendered file).
        """
        if source.endswith(TEMPLATE_SUFFIX):
            return None
        try:
            contents = self.files.read(source)
        except AnswerFileTooLarge:
            return AnswerProblem("larger than any answer file can be")
        except (AnswerFileChanging, AnswersUnavailable, FileNotFoundError):
            return None
        if 0 <= now - contents.mtime < self.settle:
            return None
        # Parsed once for the menu and the answer request that follows it.
        return self._parsed.get(contents.data, read_answer)

    def listing(self) -> AnswerListing:
        """
        The directory now; conflicts that appeared since the last look are logged.

        @raise AnswersUnavailable: when the directory cannot be read.
        """
        listing = self.files.listing()
        if listing is self._last_listing:
            # The same listing as last time, kept by the directory: its conflicts are
            # those already reported.
            return listing
        self._last_listing = listing
        conflicts: list[tuple[HostFile | IdentityFile, ...]] = [
            *listing.conflicts().values(),
            *listing.identity_conflicts().values(),
        ]
        described = frozenset(", ".join(f.name for f in files) for files in conflicts)
        for names in sorted(described - self._reported_conflicts):
            log.warn(
                "answers: {names} name the same machine; only {used} is used",
                names=names,
                used=names.split(", ")[0],
            )
        self._reported_conflicts = described
        return listing

    async def resolve(
        self, macs: Sequence[MacAddress], identity: Identity | None = None
    ) -> Resolution:
        """
        The answer for a machine with C{macs} and C{identity} (see L{choose_source}):
        a file is served only once it has been still for C{settle} seconds; one still
        changing when C{max_wait} runs out is L{Changing}, never served. A template is
        served as rendered for the machine.

        @raise AnswersUnavailable: when the directory cannot be read.
        """
        deadline = self.clock.seconds() + self.max_wait
        while True:
            chosen = choose_source(self.listing(), macs, identity)
            if chosen is None:
                return NoAnswer()
            source = chosen if isinstance(chosen, str) else chosen.name
            mac = chosen.mac if isinstance(chosen, HostFile) else None
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
                data, mtime = contents.data, contents.mtime
                rendered: bytes | AnswerProblem = data
                if source.endswith(TEMPLATE_SUFFIX):
                    rendered, mtime = self._render(data, mtime, macs, identity)
                age = now - mtime
                # A future modification time (clock skew, copied files) is no reason to wait.
                wait = self.settle - age if 0 <= age < self.settle else 0
                parsed = (
                    self._parsed.get(rendered, read_answer)
                    if isinstance(rendered, bytes)
                    else rendered
                )
                if wait > 0:
                    # Written less than the settle time ago: maybe half-written (an
                    # empty file is a truncate before the write), whatever it parses as.
                    outcome = self._changing(source)
                elif isinstance(parsed, ParsedAnswer):
                    assert isinstance(rendered, bytes)
                    outcome = Served(source, rendered, mac, parsed)
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

    def _render(
        self,
        template: bytes,
        mtime: float,
        macs: Sequence[MacAddress],
        identity: Identity | None,
    ) -> tuple[bytes | AnswerProblem, float]:
        """
        A template rendered for the machine's inventory host (or why it cannot be), and
        the later of the two files' modification times: an inventory being written is
        waited for as the template is.

        @raise AnswerFileChanging: when the inventory kept changing while read.
        @raise AnswersUnavailable: when the inventory cannot be read.
        """
        try:
            inventory = self.files.read(INVENTORY_NAME)
        except FileNotFoundError:
            return AnswerProblem(f"a template needs {INVENTORY_NAME}, and there is none"), mtime
        except AnswerFileTooLarge:
            return AnswerProblem(f"{INVENTORY_NAME} is too large"), mtime
        mtime = max(mtime, inventory.mtime)
        try:
            hosts = parse_inventory(inventory.data)
            host = host_for(hosts, macs, identity)
            if host is None:
                return AnswerProblem(f"{INVENTORY_NAME} has no [[host]] for this machine"), mtime
            return render(template.decode("utf-8"), host).encode("utf-8"), mtime
        except UnicodeDecodeError:
            return AnswerProblem("the template is not UTF-8"), mtime
        except TemplateError as e:
            return AnswerProblem(str(e), e.line), mtime

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
        identities = []
        for identity_file in listing.identity_files:
            if identity_file.key is None:
                continue
            same = listing.identity_files_for(identity_file.rule, identity_file.key)
            identities.append(
                {
                    "rule": identity_file.rule.value,
                    "key": identity_file.key,
                    "file": identity_file.name,
                    **self._validity(identity_file.name, versions),
                    "used": same[0] == identity_file,
                    "conflicts_with": [f.name for f in same if f != identity_file],
                }
            )
        default: dict[str, Any] = {"file": DEFAULT_NAME, "present": listing.default_present}
        if listing.default_present:
            default.update(self._validity(DEFAULT_NAME, versions))
        elif listing.default_template_present:
            default.update(
                {"file": DEFAULT_TEMPLATE, "present": True},
                **self._validity(DEFAULT_TEMPLATE, versions),
            )
        return {
            "default": default,
            "hosts": hosts,
            "identity_files": identities,
            "unrecognised_files": [
                {"file": name, "error": "the file name is not a MAC address"}
                for name in listing.unrecognised
            ]
            + [
                {"file": f.name, "error": USELESS_NAME.format(rule=f.rule.value)}
                for f in listing.useless_identity_files()
            ],
        }

    def _validity(self, name: str, versions: VersionRange | None) -> dict[str, Any]:
        if name.endswith(TEMPLATE_SUFFIX):
            return self._template_validity(name, versions)
        return self._checked(self._read_for_check(name), versions)

    def _template_validity(self, name: str, versions: VersionRange | None) -> dict[str, Any]:
        """
        A template is valid when it renders, as a valid answer, for every inventory
        host; its findings are those of every rendering, each naming its host.
        """
        template, inventory = self._read_for_check(name), self._read_for_check(INVENTORY_NAME)
        for data in (template, inventory):
            if isinstance(data, AnswerProblem):
                return {"valid": False, "error": data.as_json()}
        assert isinstance(template, bytes) and isinstance(inventory, bytes)
        try:
            rendered = renderings(template, inventory)
        except TemplateError as e:
            return {"valid": False, "error": AnswerProblem(str(e), e.line).as_json()}
        result: dict[str, Any] = {"valid": True, "error": None, "hosts": len(rendered)}
        findings: list[dict[str, Any]] = []
        for host, made in rendered:
            checked = self._checked(
                AnswerProblem(str(made), made.line) if isinstance(made, TemplateError) else made,
                versions,
            )
            if not checked["valid"]:
                error = checked["error"]
                error["message"] = f"for inventory host {host}: {error['message']}"
                return {"valid": False, "error": error}
            findings += [{**finding, "host": host} for finding in checked.get("findings", [])]
        if versions is not None:
            result["installer_version"] = str(versions)
            result["accepted"] = not any(f["severity"] == "error" for f in findings)
            result["findings"] = findings
        return result

    def _read_for_check(self, name: str) -> bytes | AnswerProblem:
        try:
            return self.files.read(name).data
        except FileNotFoundError:
            if name == INVENTORY_NAME:
                return AnswerProblem(f"a template needs {INVENTORY_NAME}, and there is none")
            return AnswerProblem("removed while being checked")
        except AnswerFileChanging:
            return AnswerProblem("kept changing while being read")
        except AnswerFileTooLarge:
            return AnswerProblem("larger than any answer file can be")
        except AnswersUnavailable as e:
            return AnswerProblem(str(e))

    def _checked(
        self, data: bytes | AnswerProblem, versions: VersionRange | None
    ) -> dict[str, Any]:
        parsed = data if isinstance(data, AnswerProblem) else read_answer(data)
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
