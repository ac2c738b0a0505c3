"""
Secure Boot: the signed chain firmware -> shim -> network GRUB -> signed kernel, served
by pxe-pilot next to the iPXE chain.

- The signed pieces, C{shimx64.efi} and C{grubx64.efi}, come from C{--secure-boot-dir}
  when it is set, else from the newest asset whose C{asset.json} lists them under
  C{secure-boot/}. Over TFTP both names are answered at the root and in any directory
  (shim asks for GRUB beside its own path); over HTTP under C{/ipxe/}.
- GRUB's configuration is made per machine (L{pxepilot.boot.grub}) with the iPXE
  menu's policy (L{pxepilot.boot.policy}); a menu served is published as a
  L{MenuServed} event, so the host's timeline shows it.
- The assets' kernels and initrds are served over TFTP under C{assets/}: only the
  files a published version boots, nothing else of the assets directory.
- Who is sent shim rather than iPXE by proxyDHCP (L{SecureBootChoice}): C{--secure-boot}
  and each host's C{secure-boot} boot setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from attrs import Factory, frozen
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pxepilot.answers.files import (
    AnswersUnavailable,
)
from pxepilot.answers.service import AnswerService
from pxepilot.boot import grub
from pxepilot.boot.catalogue import Asset, scan
from pxepilot.boot.ipxe import LOCAL, MIN_MEMORY_MIB, Choice, Refusal
from pxepilot.boot.policy import decide_menu, host_settings
from pxepilot.events import EventBus, IEvents, MenuServed
from pxepilot.logs import logger
from pxepilot.macs import MacAddress
from pxepilot.tftp.files import (
    BytesReader,
    FileNotFound,
    IReader,
    ITFTPFiles,
    RequestContext,
    TFTPRoot,
)

log = logger(__name__)

SHIM = "shimx64.efi"
GRUB = "grubx64.efi"
PIECES = (SHIM, GRUB)
AUTO = "auto"
ALWAYS = "always"
NEVER = "never"
PLATFORM = "efi"


@frozen
class SecureBootPieces:
    """
    Where the signed shim and GRUB are: C{directory} (C{--secure-boot-dir}) when set,
    whole, else the newest asset in C{assets_dir} that carries both.
    """

    directory: Path | None
    assets_dir: Path

    def locate(self, name: str) -> Path | None:
        """
        The file of C{name} (L{SHIM} or L{GRUB}), or L{None} when there is none.
        """
        if name not in PIECES:
            return None
        if self.directory is not None:
            path = self.directory / name
            return path if path.is_file() else None
        carrying = [a for a in scan(self.assets_dir).assets if a.secure_boot is not None]
        if not carrying:
            return None
        newest = max(carrying, key=Asset.sort_key)
        assert newest.secure_boot is not None
        shim, grub_file = newest.secure_boot
        path = self.assets_dir / newest.directory / (shim if name == SHIM else grub_file)
        return path if path.is_file() else None

    def available(self) -> bool:
        return all(self.locate(name) is not None for name in PIECES)


@frozen
class MenuSettings:
    """
    The settings GRUB's menu is decided with, as the iPXE menu's.

    @ivar asset_url: C{--asset-url}, or L{None} to use pxe-pilot's own.
    """

    menu_default: str = AUTO
    menu_timeout: int = 10
    kernel_args: str = ""
    answer_check: str = "refuse"
    install_once: bool = True
    asset_url: str | None = None


def _no_installation(mac: MacAddress) -> float | None:
    return None


@frozen
class GrubMenus:
    """
    GRUB's configurations and the files its menu loads over TFTP.

    @ivar base_url: pxe-pilot's HTTP base URL as seen from a TFTP request.
    @ivar installed_at: When a host's installation was reported, if it is installed.
    @ivar events: Told of every menu served.
    """

    answers: AnswerService
    assets_dir: Path
    settings: MenuSettings
    clock: IReactorTime
    base_url: Callable[[RequestContext], str]
    installed_at: Callable[[MacAddress], float | None] = _no_installation
    events: IEvents = Factory(EventBus)

    def configuration(self, name: str, context: RequestContext) -> bytes:
        """
        The configuration called C{name} under GRUB's prefix.

        @raise grub.NotAGrubConfig: when pxe-pilot makes none of that name.
        """
        request = grub.parse_name(name)
        if isinstance(request, grub.FirstStage):
            return grub.first_stage().encode()
        assets, choice, refused = self._decide(request.mac)
        self.events.publish(
            MenuServed(
                context.client,
                request.mac,
                choice.default,
                f"GRUB (Secure Boot chain): {choice.reason}",
                choice.default == LOCAL,
                PLATFORM,
                request.memory_mib,
            )
        )
        log.info(
            "GRUB menu for {mac} at {client} ({memory} MiB): {reason}",
            mac=str(request.mac),
            client=context.client,
            memory=request.memory_mib or "?",
            reason=choice.reason,
        )
        if request.memory_mib is not None and request.memory_mib < MIN_MEMORY_MIB:
            log.warn(
                "{mac} has {memory} MiB of memory; the installer needs {needed} MiB",
                mac=str(request.mac),
                memory=request.memory_mib,
                needed=MIN_MEMORY_MIB,
            )
        asset_url = self.settings.asset_url or f"{self.base_url(context)}assets/"
        text = grub.menu(assets, asset_url, request, choice, self.settings.kernel_args, refused)
        return text.encode()

    def _decide(self, mac: MacAddress) -> tuple[tuple[Asset, ...], Choice, dict[str, Refusal]]:
        catalogue = scan(self.assets_dir)
        installed_at = self.installed_at(mac) if self.settings.install_once else None
        choice, refused = decide_menu(
            self.answers,
            catalogue.assets,
            mac,
            None,
            installed_at,
            self.settings,
            self.clock.seconds(),
        )
        return catalogue.assets, choice, refused

    def asset_file(self, name: str, context: RequestContext) -> IReader:
        """
        A kernel or initrd of a published version, C{<version directory>/<file>}.

        @raise FileNotFound: for any other file of the assets directory.
        """
        directory, _, file = name.rpartition("/")
        asset = scan(self.assets_dir).find(directory)
        if asset is None or file not in {asset.kernel, *(i.file for i in asset.initrds)}:
            raise FileNotFound(f"{name} is no kernel or initrd of a published version")
        return TFTPRoot(self.assets_dir / asset.directory).open(file, context)


@implementer(ITFTPFiles)
@frozen
class SecureBootFiles:
    """
    The TFTP files of the Secure Boot chain in front of the others: shim and GRUB by
    name in any directory, GRUB's configurations under C{grub/}, the assets' kernels
    and initrds under C{assets/}; everything else from C{files}.
    """

    files: ITFTPFiles
    pieces: SecureBootPieces
    menus: GrubMenus

    def open(self, name: str, context: RequestContext) -> IReader:
        base = name.rpartition("/")[2]
        if base in PIECES:
            path = self.pieces.locate(base)
            if path is not None:
                return _open(path, context)
        first, _, rest = name.partition("/")
        if first == grub.PREFIX:
            try:
                return BytesReader(self.menus.configuration(rest, context))
            except grub.NotAGrubConfig as e:
                log.debug("TFTP {client}: {why}", client=context.client, why=str(e))
                raise FileNotFound(str(e)) from None
        if first == grub.TFTP_ASSETS:
            return self.menus.asset_file(rest, context)
        return self.files.open(name, context)


def _open(path: Path, context: RequestContext) -> IReader:
    # The piece's own name may be a link (an operator's copy of /usr/lib/shim): open it
    # as the TFTP root opens a file in its directory.
    return TFTPRoot(path.parent).open(path.name, context)


@frozen
class SecureBootChoice:
    """
    Whether proxyDHCP sends a UEFI machine shim rather than iPXE.

    C{never}: nobody, whatever the hosts' settings. C{auto} (the default): the hosts
    whose boot settings say C{secure-boot = "always"}, and those whose timeline says
    they need it (L{reason_of}: iPXE was loaded and never ran, or the host booted
    through the signed chain before). C{always}: every UEFI machine but those whose
    boot settings say C{never}. Shim is only sent while both signed pieces are there
    to serve.

    @ivar reason_of: Why a host should get shim, from what is known of it; L{None} when
        nothing says so.
    """

    setting: str
    answers: AnswerService
    pieces: SecureBootPieces
    reason_of: Callable[[MacAddress], str | None] = lambda mac: None

    def wanted(self, mac: MacAddress) -> bool:
        if self.setting == NEVER:
            return False
        host = None
        try:
            listing = self.answers.listing()
        except AnswersUnavailable:
            listing = None
        if listing is not None:
            settings, _problem = host_settings(self.answers.files, listing, mac)
            host = settings.secure_boot if settings is not None else None
        wanted = host if host in (ALWAYS, NEVER) else self.setting
        reason = None
        if wanted == AUTO:
            reason = self.reason_of(mac)
            if reason is not None:
                wanted = ALWAYS
        if wanted != ALWAYS:
            return False
        if not self.pieces.available():
            where = self.pieces.directory or f"{self.pieces.assets_dir} (no asset carries them)"
            log.warn(
                "{mac} should boot shim, but there is no {shim} and {grub} in {where}: iPXE",
                mac=str(mac),
                shim=SHIM,
                grub=GRUB,
                where=str(where),
            )
            return False
        if reason is not None:
            log.info("{mac} is sent shim: {reason}", mac=str(mac), reason=reason)
        return True


def piece_path(pieces: SecureBootPieces, name: str) -> str | None:
    """
    The path of a signed piece by its HTTP name, as text, or L{None}.
    """
    path = pieces.locate(name)
    return os.fspath(path) if path is not None else None
