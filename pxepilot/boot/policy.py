"""
What a machine boots when nobody is there to choose: the menu's default and timeout.

Globally from the options; per host from a sidecar file next to its answer,
C{hosts/<mac>.boot.toml}, never from keys in the answer itself (the installer rejects
unknown keys):

    default = "proxmox-ve/9.1-1"   # or "auto", "local", "shell", or a product: "proxmox-ve"
    timeout = 5                    # seconds; 0 waits for a person
    secure-boot = "always"         # or "never", "auto": what proxyDHCP sends (secure.py)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import frozen

from pxepilot.answers.check import AnswerProblem, ParsedAnswer
from pxepilot.answers.decision import utc
from pxepilot.answers.files import (
    AnswerFileChanging,
    AnswerFileTooLarge,
    AnswerListing,
    AnswersUnavailable,
    IAnswerFiles,
)
from pxepilot.answers.identity import Identity
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.request import InstallerRequest
from pxepilot.answers.service import AnswerService, choose_source
from pxepilot.answers.versions import (
    NEWEST,
    OLDEST,
    Gates,
    VersionRange,
    installer_of_release,
    installer_versions,
)
from pxepilot.boot.catalogue import Asset
from pxepilot.boot.ipxe import LOCAL, SHELL, Choice, Refusal
from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)


class MenuDefaults(Protocol):
    """
    The global settings a menu is decided with (L{pxepilot.config.Config} has them).
    """

    @property
    def menu_default(self) -> str: ...

    @property
    def menu_timeout(self) -> int: ...

    @property
    def answer_check(self) -> str: ...


AUTO = "auto"
MAX_TIMEOUT = 3600
PROXMOX_VE = "pve"


class SidecarError(ValueError):
    """
    A sidecar file that cannot be used; the message says why.
    """


@frozen
class BootSettings:
    """
    @ivar default: C{auto}, C{local}, C{shell}, a product (C{proxmox-ve}) or a version
        (C{proxmox-ve/9.1-1}); L{None} when not set (a sidecar with only a timeout).
    @ivar timeout: Seconds before the default is taken; 0 waits; L{None} when not set.
    @ivar secure_boot: C{always}, C{never} or C{auto}; L{None} when not set.
    """

    default: str | None = AUTO
    timeout: int | None = None
    secure_boot: str | None = None


def parse_sidecar(data: bytes) -> BootSettings:
    """
    @raise SidecarError: for anything but C{default} (text) and C{timeout} (0-3600).
    """
    try:
        document: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        # Besides TOMLDecodeError and UnicodeDecodeError (both ValueErrors), the parser
        # fails with a plain ValueError on integers too long to convert and with a
        # RecursionError on deeply nested arrays or tables.
        raise SidecarError(f"not valid TOML: {e}") from None
    unknown = sorted(set(document) - {"default", "timeout", "secure-boot"})
    if unknown:
        raise SidecarError(f"unknown key {unknown[0]!r} (known: default, timeout, secure-boot)")
    secure_boot = document.get("secure-boot")
    if secure_boot is not None and secure_boot not in ("auto", "always", "never"):
        raise SidecarError("secure-boot must be auto, always or never")
    default = document.get("default")
    if default is not None and (not isinstance(default, str) or not default.strip()):
        raise SidecarError("default must be a non-empty string")
    timeout = document.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not 0 <= timeout <= MAX_TIMEOUT
    ):
        raise SidecarError(f"timeout must be a whole number of seconds, 0-{MAX_TIMEOUT}")
    return BootSettings(default.strip() if default is not None else None, timeout, secure_boot)


def _resolve(target: str, assets: Sequence[Asset]) -> Asset | str | None:
    if target in (LOCAL, SHELL):
        return target
    exact = next((a for a in assets if a.key == target), None)
    if exact is not None:
        return exact
    # A product directory name: its newest version (assets are newest first).
    return next((a for a in assets if a.key.split("/")[0] == target), None)


def choose(
    assets: Sequence[Asset],
    has_answer: bool,
    host: BootSettings | None,
    default: BootSettings,
    timeout: int,
    installed: str | None = None,
    refused: Mapping[str, Refusal] | None = None,
) -> Choice:
    """
    The default entry: the host's sidecar, else the global setting; C{auto} installs the
    newest Proxmox VE (or the only product present) when the machine would get an
    answer, and boots from the local disk when it would not. A host already installed
    (C{installed} says since when) boots from its disk whatever its settings say, until
    it is re-armed: a network-first boot order must not reinstall it on every reboot.

    A version whose installer would not get its answer (C{refused}, by key; see
    L{answer_refusals}) is never the default, whoever named it: the machine boots from
    its disk rather than download an installer that stops at its first request.
    """
    refused = refused or {}
    wait = timeout
    for settings in (default, host):
        if settings is not None and settings.timeout is not None:
            wait = settings.timeout
    if installed is not None:
        return Choice(LOCAL, wait, f"{installed}: local disk until re-armed")
    if host is not None and host.default is not None:
        wanted, source = host.default, "the host's boot settings"
    else:
        wanted, source = default.default or AUTO, "the --menu-default option"
    if wanted != AUTO:
        resolved = _resolve(wanted, assets)
        if isinstance(resolved, Asset):
            if resolved.key in refused:
                why = refused[resolved.key].reason
                return Choice(
                    LOCAL, wait, f"{why}: local disk rather than {resolved.key} from {source}"
                )
            return Choice(resolved.key, wait, f"{resolved.key} from {source}")
        if resolved is not None:
            return Choice(resolved, wait, f"{resolved} from {source}")
        return Choice(LOCAL, wait, f"{wanted!r} from {source} is not available: local disk")
    if not has_answer:
        return Choice(LOCAL, wait, "no answer file for this machine: local disk")
    pve = [a for a in assets if a.product == PROXMOX_VE]
    products = {a.product for a in assets}
    if pve or len(products) == 1:
        # Newest across directories: Proxmox VE may be published under more than one.
        newest = max(pve or assets, key=Asset.sort_key)
        which = "newest Proxmox VE" if pve else "the only product"
        if newest.key in refused:
            why = refused[newest.key].reason
            return Choice(LOCAL, wait, f"{why}: local disk rather than {which}, {newest.key}")
        return Choice(newest.key, wait, f"answer file present: {which}, {newest.key}")
    if not assets:
        return Choice(LOCAL, wait, "no boot assets: local disk")
    return Choice(LOCAL, wait, "several products and no Proxmox VE: choose one per host")


def installers_of(asset: Asset) -> VersionRange:
    """
    The installer versions C{POST /answer} takes a request from C{asset}'s installer to
    come from: its product and release, in the shape that installer sends. Every
    version for a product whose releases do not say which installer they carry: then
    only what all of them reject counts.
    """
    carried = installer_of_release(asset.product, asset.release)
    if carried is None:
        return VersionRange(OLDEST, NEWEST)
    request = InstallerRequest(
        (),
        product=asset.product,
        release=asset.release,
        schema_version=None if carried < Gates.REQUEST_SCHEMA else "1.0",
        upper_case_macs=carried >= Gates.JSON_REQUEST,
    )
    return installer_versions(request)


def answer_refusals(
    assets: Sequence[Asset],
    source: str | None,
    answer: ParsedAnswer | AnswerProblem | None,
    answer_check: str,
) -> dict[str, Refusal]:
    """
    The versions whose installer would not be served this machine's answer, decided as
    C{POST /answer} decides: no answer file (404); a file that is no answer file at
    all (422); under C{--answer-check refuse}, a file that installer rejects (422).

    @param source: The machine's answer file (C{hosts/<file>} or C{default.toml});
        L{None} when it has none.
    @param answer: That file, read; L{None} when it could not be looked at (being
        written, say), which refuses nothing.
    """
    keys = [asset.key for asset in assets]
    if source is None:
        return dict.fromkeys(
            keys,
            # The installer also lists the machine's other NICs, and one of those may
            # have a host file; the menu knows only the one it boots from.
            Refusal(
                "no answer file for the MAC address it boots from (no host file for it, no "
                "default.toml)",
                "no answer file for the MAC address it boots from",
            ),
        )
    if isinstance(answer, AnswerProblem):
        return dict.fromkeys(
            keys,
            Refusal(
                f"its answer file cannot be served: {answer.describe(source)}",
                f"{source} cannot be served: see pxe-pilot check",
            ),
        )
    if answer is None or answer_check != "refuse":
        return {}
    refused = {}
    for asset in assets:
        versions = installers_of(asset)
        rejected = errors(lint_range(answer, versions, asset.product))
        if rejected:
            count = f"{len(rejected)} error{'s' if len(rejected) > 1 else ''}"
            refused[asset.key] = Refusal(
                f"answer file {source} has {count} for installer {versions} (see "
                f"{_check_command(versions)})",
                f"{source} has {count}: see pxe-pilot check",
            )
    return refused


def _check_command(versions: VersionRange) -> str:
    low, high = versions.low, versions.high
    if (low.major, low.minor) == (high.major, high.minor):
        return f"pxe-pilot check --installer-version {low.major}.{low.minor}"
    return "pxe-pilot check"


def _read(files: IAnswerFiles, name: str) -> tuple[BootSettings | None, str | None]:
    try:
        return parse_sidecar(files.read(name).data), None
    except (
        SidecarError,
        AnswersUnavailable,
        AnswerFileChanging,
        AnswerFileTooLarge,
        FileNotFoundError,
    ) as e:
        return None, f"{name}: {e}"


def host_settings(
    files: IAnswerFiles, listing: AnswerListing, mac: MacAddress
) -> tuple[BootSettings | None, str | None]:
    """
    The boot settings file of a host, read and checked: (settings, problem).
    """
    sidecar = listing.sidecar_for(mac)
    if sidecar is None:
        return None, None
    return _read(files, sidecar.name)


def inspect_sidecars(files: IAnswerFiles, listing: AnswerListing) -> list[dict[str, Any]]:
    """
    Every boot settings file, whether it is valid and whether it is the one used, for
    C{/hosts}.
    """
    report = []
    for sidecar in listing.sidecars:
        settings, problem = _read(files, sidecar.name)
        report.append(
            {
                "mac": str(sidecar.mac),
                "file": sidecar.name,
                "valid": settings is not None,
                "error": problem,
                "used": listing.sidecar_for(sidecar.mac) == sidecar,
                "default": settings.default if settings else None,
                "timeout": settings.timeout if settings else None,
                "secure_boot": settings.secure_boot if settings else None,
            }
        )
    return report


def decide_menu(
    answers: AnswerService,
    assets: Sequence[Asset],
    mac: MacAddress | None,
    identity: Identity | None,
    installed_at: float | None,
    defaults: MenuDefaults,
    now: float,
) -> tuple[Choice, dict[str, Refusal]]:
    """
    A machine's menu decision, the same for iPXE's menu and GRUB's: the answer file
    C{POST /answer} would choose for it (by C{mac}, else C{identity}, else the
    default), the versions whose installer would refuse that file, its boot settings,
    and C{installed_at} (when its installation was reported and install once holds).

    @return: The default entry and why, and the refused versions.
    """
    try:
        listing = answers.listing()
    except AnswersUnavailable:
        listing = None
    host = None
    has_answer = False
    refused: dict[str, Refusal] = {}
    if listing is not None:
        chosen = choose_source(listing, [mac] if mac else [], identity)
        source = chosen if isinstance(chosen, str) or chosen is None else chosen.name
        has_answer = source is not None
        answer = answers.read_settled(source, now) if source is not None else None
        refused = answer_refusals(assets, source, answer, defaults.answer_check)
        if mac is not None:
            host, problem = host_settings(answers.files, listing, mac)
            if problem:
                log.warn("boot settings ignored: {problem}", problem=problem)
    choice = choose(
        assets,
        has_answer,
        host,
        BootSettings(defaults.menu_default),
        defaults.menu_timeout,
        installed=f"installed on {utc(installed_at)}" if installed_at is not None else None,
        refused=refused,
    )
    return choice, refused
