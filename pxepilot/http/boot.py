"""
The routes a booting machine's iPXE calls: the boot script, the menu and the assets.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from urllib.parse import quote

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from pxepilot.answers.identity import Identity
from pxepilot.answers.service import AnswerService
from pxepilot.boot.catalogue import scan
from pxepilot.boot.ipxe import (
    LOCAL,
    MIN_MEMORY_MIB,
    Machine,
    boot_script,
    menu_script,
    smbios_memory_mib,
)
from pxepilot.boot.policy import decide_menu
from pxepilot.boot.secure import SecureBootPieces, piece_path
from pxepilot.config import Config
from pxepilot.events import (
    BootScriptServed,
    DownloadEnded,
    DownloadStarted,
    IEvents,
    MenuServed,
)
from pxepilot.hosts.ledger import HostLedger
from pxepilot.http.files import AssetFiles
from pxepilot.http.forwarded import public_base
from pxepilot.http.ipxe_files import IpxeFiles
from pxepilot.http.responses import query, script_body
from pxepilot.http.sending import BodyEnded, Turns
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError

log = logger(__name__)


@define
class BootRoutes:
    """
    C{GET /boot.ipxe}, C{GET /menu.ipxe}, C{/assets/} and C{/ipxe/}.

    @ivar answers: Whether a machine would get an answer decides its menu's default.
    @ivar hosts: Install-once: an installed host's menu boots its disk.
    @ivar events: Told of every script, menu and asset download served.
    @ivar clock: Times downloads.
    @ivar client_of: The client's address, as far as the request's proxies are believed.
    @ivar turns: Shares the reactor among the asset downloads.
    """

    answers: AnswerService
    hosts: HostLedger
    events: IEvents
    config: Config
    clock: IReactorTime
    client_of: Callable[[IRequest], str]
    turns: Turns = field(factory=Turns)

    def _base(self, request: IRequest) -> str:
        return public_base(request, self.config.public_url, self.config.trusted_proxies)

    def boot_ipxe(self, request: IRequest) -> bytes:
        """
        The boot script: it fetches the menu, saying which machine asks.
        """
        self.events.publish(BootScriptServed(self.client_of(request)))
        return script_body(request, boot_script(f"{self._base(request)}menu.ipxe"))

    def menu_ipxe(self, request: IRequest) -> bytes:
        """
        The menu, made from the assets catalogue for the machine that asks.
        """
        base = self._base(request)
        machine = _machine(request)
        catalogue = scan(self.config.assets_dir)
        settings = self.config
        known = self.hosts.host(machine.mac) if machine.mac else None
        installed_at = known.installed_at if settings.install_once and known else None
        choice, refused = decide_menu(
            self.answers,
            catalogue.assets,
            machine.mac,
            _identity(request),
            installed_at,
            settings,
            self.clock.seconds(),
        )
        asset_url = settings.asset_url or f"{base}assets/"
        menu_url = f"{base}menu.ipxe?{_echo_query(machine, request)}"
        client = self.client_of(request)
        if machine.mac is not None:
            self.events.publish(
                MenuServed(
                    client,
                    machine.mac,
                    choice.default,
                    choice.reason,
                    choice.default == LOCAL,
                    machine.platform,
                    machine.memory_mib,
                )
            )
        log.info(
            "menu for {mac} at {client} ({platform}, {memory} MiB): {reason}",
            mac=str(machine.mac) if machine.mac else "unknown MAC",
            client=client,
            platform=machine.platform or "unknown firmware",
            memory=machine.memory_mib or "?",
            reason=choice.reason,
            default=choice.default,
        )
        if machine.memory_mib is not None and machine.memory_mib < MIN_MEMORY_MIB:
            log.warn(
                "{mac} has {memory} MiB of memory; the installer needs {needed} MiB",
                mac=str(machine.mac) if machine.mac else "unknown MAC",
                memory=machine.memory_mib,
                needed=MIN_MEMORY_MIB,
            )
        return script_body(
            request,
            menu_script(
                catalogue.assets,
                asset_url,
                menu_url,
                machine,
                choice,
                settings.kernel_args,
                refused,
            ),
        )

    def assets(self, request: IRequest) -> AssetFiles:
        """
        The assets directory, as a static file server would serve it.
        """
        return AssetFiles(self.config.assets_dir, self.turns, self._download_started)

    def ipxe_files(self, request: IRequest) -> IpxeFiles:
        """
        The iPXE binaries of the TFTP root, for UEFI HTTP Boot firmware; iPXE asking for
        one of them gets the chain script to the boot script.
        """
        return IpxeFiles(
            self.config.tftp_root,
            lambda asking: f"{self._base(asking)}boot.ipxe",
            self.client_of,
            self.turns,
            self._download_started,
            lambda name: piece_path(
                SecureBootPieces(self.config.secure_boot_dir, self.config.assets_dir), name
            ),
        )

    def _download_started(self, request: IRequest, path: str, length: int) -> BodyEnded:
        began = self.clock.seconds()
        client = self.client_of(request)
        self.events.publish(DownloadStarted(client, path, length))

        def ended(sent: int, complete: bool) -> None:
            seconds = self.clock.seconds() - began
            self.events.publish(DownloadEnded(client, path, length, sent, complete, seconds))

        return ended


def _identity(request: IRequest) -> Identity:
    # iPXE knows them from SMBIOS (${uuid}, ${serial}, ${product}); a menu URL that
    # carries them lets the menu find the same file the installer will be served.
    return Identity.of(
        query(request, b"uuid", 128),
        query(request, b"serial", 128),
        query(request, b"product", 128),
    )


def _machine(request: IRequest) -> Machine:
    mac = None
    text = query(request, b"mac")
    if text:
        with contextlib.suppress(MacAddressError):
            mac = MacAddress.parse(text)
    platform = query(request, b"platform")
    memory = query(request, b"memsize")
    if memory and re.fullmatch("[0-9]{1,8}", memory):
        memory_mib: int | None = int(memory)
    else:
        memory_mib = smbios_memory_mib(query(request, b"memdevs", 4096) or "")
    return Machine(
        mac=mac,
        platform=platform if platform in ("efi", "pcbios") else None,
        memory_mib=memory_mib,
    )


def _echo_query(machine: Machine, request: IRequest) -> str:
    """
    The menu's own query, rebuilt from what was understood, to come back to after a
    failure; the machine's identity as it came, escaped again.
    """
    parts = []
    if machine.mac:
        parts.append(f"mac={machine.mac}")
    if machine.platform:
        parts.append(f"platform={machine.platform}")
    if machine.memory_mib:
        parts.append(f"memsize={machine.memory_mib}")
    for name in ("uuid", "serial", "product"):
        if value := query(request, name.encode(), 128):
            parts.append(f"{name}={quote(value, safe='')}")
    return "&".join(parts)
