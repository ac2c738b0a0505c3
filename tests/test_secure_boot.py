"""
The Secure Boot chain's server side: shim and GRUB over TFTP and HTTP from
C{--secure-boot-dir} or the newest asset, GRUB's configuration per machine with the
menu's policy, the assets' kernels and initrds over TFTP, and nothing else; who
proxyDHCP sends shim; and the host's record of a boot through the signed chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pxepilot import Config, PxePilot
from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.service import AnswerService
from pxepilot.boot.catalogue import scan
from pxepilot.boot.secure import (
    GrubMenus,
    MenuSettings,
    SecureBootChoice,
    SecureBootFiles,
    SecureBootPieces,
)
from pxepilot.config import ConfigError, load_config
from pxepilot.dhcp.packet import decode
from pxepilot.dhcp.proxy import Outcome, ShimOffer, decide
from pxepilot.events import EventBus, IEventObserver, MenuServed, TransferFinished
from pxepilot.hosts.ledger import run_here
from pxepilot.hosts.model import Event, EventKind, Host, HostState, advance
from pxepilot.macs import MacAddress
from pxepilot.tftp.files import (
    FileNotFound,
    IReader,
    ITFTPFiles,
    RequestContext,
    TFTPRoot,
)
from tests.conftest import MINIMAL_ANSWER, AnswersDir, clock_at_now
from tests.dhcp.packets import MAC as DHCP_MAC
from tests.dhcp.packets import http_discover, uefi_discover
from tests.test_asset_files import exchange

MAC = MacAddress.parse("52:54:00:00:05:e1")
CONTEXT = RequestContext("10.99.0.60", "10.99.0.1")
SHIM_BYTES = b"MZ signed shim " * 100
GRUB_BYTES = b"MZ signed grub " * 100
KERNEL = b"MZ kernel " * 100
INITRD = b"\x1f\x8b initrd " * 300
SECRET = b"not for TFTP clients"


def publish(assets: Path, version: str, pieces: bool = True, network: bool = True) -> Path:
    """
    A published Proxmox VE version in C{assets}, with its signed pieces under
    C{secure-boot/} when C{pieces}, as the builder writes it.
    """
    directory = assets / "proxmox-ve" / version
    (directory / "secure-boot").mkdir(parents=True)
    files = {"vmlinuz": KERNEL, "initrd": INITRD, "notes.txt": SECRET}
    if pieces:
        files["secure-boot/shimx64.efi"] = SHIM_BYTES + version.encode()
        files["secure-boot/grubx64.efi"] = GRUB_BYTES + version.encode()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    release, _, iso_release = version.partition("-")
    document: dict[str, Any] = {
        "format": 1,
        "product": "pve",
        "product_name": "Proxmox VE",
        "release": release,
        "iso_release": iso_release,
        "layout": "combined",
        "kernel": "vmlinuz",
        "initrds": [{"file": "initrd"}],
        "kernel_cmdline": "ro quiet",
        "files": {name: {"size": len(data)} for name, data in files.items()},
    }
    if pieces:
        document["secure_boot"] = {
            "shim": {"file": "secure-boot/shimx64.efi", "signer": "CN=x", "vendor": None},
            "grub": {"file": "secure-boot/grubx64.efi", "signer": "CN=y", "network": network},
            "kernel": {"signer": None},
        }
    (directory / "asset.json").write_text(json.dumps(document))
    return directory


@implementer(IEventObserver)
class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def observe(self, event: object) -> None:
        self.events.append(event)


@implementer(ITFTPFiles)
class Root:
    """
    The TFTP root behind the Secure Boot files: every name it is asked for.
    """

    def __init__(self, root: Path) -> None:
        self.asked: list[str] = []
        self._root = TFTPRoot(root)

    def open(self, name: str, context: RequestContext) -> IReader:
        self.asked.append(name)
        return self._root.open(name, context)


class Chain:
    def __init__(self, tmp_path: Path, directory: Path | None = None, **settings: Any) -> None:
        self.answers = AnswersDir(tmp_path / "answers")
        self.assets = tmp_path / "assets"
        self.assets.mkdir(exist_ok=True)
        root = tmp_path / "tftp"
        root.mkdir(exist_ok=True)
        (root / "ipxe.efi").write_bytes(b"MZ iPXE")
        (tmp_path / "outside").write_bytes(SECRET)
        self.root = Root(root)
        self.events = Recorder()
        bus = EventBus()
        bus.subscribe(self.events)
        self.installed: dict[MacAddress, float] = {}
        self.pieces = SecureBootPieces(directory, self.assets)
        service = AnswerService(DirectoryAnswerFiles(self.answers.root), clock_at_now())
        self.service = service
        self.menus = GrubMenus(
            service,
            self.assets,
            MenuSettings(**settings),
            clock_at_now(),
            lambda context: f"http://{context.local}:8080/",
            self.installed.get,
            bus,
        )
        self.files = SecureBootFiles(self.root, self.pieces, self.menus)

    def read(self, name: str) -> bytes:
        reader = self.files.open(name, CONTEXT)
        try:
            assert reader.size is not None
            return reader.read(0, reader.size)
        finally:
            reader.close()


def test_the_files_are_tftp_files(tmp_path: Path) -> None:
    assert verifyObject(ITFTPFiles, Chain(tmp_path).files)


def test_pieces_from_the_newest_asset(tmp_path: Path) -> None:
    """
    Without C{--secure-boot-dir}, shim and GRUB are the newest version's that carries
    them, at the root and beside any path shim was loaded from.
    """
    chain = Chain(tmp_path)
    publish(chain.assets, "9.0-1")
    publish(chain.assets, "9.1-1")
    publish(chain.assets, "9.2-1", pieces=False)
    assert chain.read("shimx64.efi") == SHIM_BYTES + b"9.1-1"
    assert chain.read("grubx64.efi") == GRUB_BYTES + b"9.1-1"
    assert chain.read("efi/boot/grubx64.efi") == GRUB_BYTES + b"9.1-1"
    assert chain.root.asked == []


def test_pieces_without_network_support_are_not_served(tmp_path: Path) -> None:
    """
    A GRUB the builder found without network support would stop at its prompt: the
    version's pieces are passed over for an older version's.
    """
    chain = Chain(tmp_path)
    publish(chain.assets, "9.0-1")
    publish(chain.assets, "9.1-1", network=False)
    assert chain.read("grubx64.efi") == GRUB_BYTES + b"9.0-1"


def test_secure_boot_dir_wins(tmp_path: Path) -> None:
    """
    C{--secure-boot-dir} takes precedence over the assets' pieces, whole: a piece it
    lacks is looked for in the TFTP root, not in an asset.
    """
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    (pieces / "shimx64.efi").write_bytes(b"MZ operator's shim")
    chain = Chain(tmp_path, pieces)
    publish(chain.assets, "9.1-1")
    assert chain.read("shimx64.efi") == b"MZ operator's shim"
    with pytest.raises(FileNotFound):
        chain.read("grubx64.efi")
    assert chain.root.asked == ["grubx64.efi"]
    assert not chain.pieces.available()


def test_without_pieces_the_tftp_root_answers(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    with pytest.raises(FileNotFound):
        chain.read("shimx64.efi")
    assert chain.read("ipxe.efi") == b"MZ iPXE"
    assert chain.root.asked == ["shimx64.efi", "ipxe.efi"]


@pytest.mark.parametrize(
    "name",
    ["grub/grub.cfg", "grub/grub.cfg-01-52-54-00-00-05-e1", "grub/grub.cfg-0A63003C"],
)
def test_every_name_grub_tries_gets_the_first_stage(tmp_path: Path, name: str) -> None:
    chain = Chain(tmp_path)
    text = chain.read(name).decode()
    assert "configfile $prefix/menu-01-$net_default_mac-m$pxepilot_memory" in text
    assert chain.events.events == []


@pytest.mark.parametrize(
    "name",
    [
        "grub/grub.cfg-01-52-54-00-00-05",
        "grub/grub.cfg-01-52-54-00-00-05-zz",
        "grub/grub.cfg-10.99.0.60",
        "grub/grub.cfg-0A63003C0",
        "grub/menu-01-not-a-mac-m",
        "grub/menu-01-52:54:00:00:05:e1-m1024;x",
        "grub/x86_64-efi/normal.mod",
        "grub/fonts/unicode.pf2",
        "grub",
        "grub/grub/grub.cfg",
        "assets/proxmox-ve/9.1-1/notes.txt",
        "assets/proxmox-ve/9.1-1/asset.json",
        "assets/proxmox-ve/9.1-1/secure-boot/grub.cfg",
        "assets/proxmox-ve/9.9-1/vmlinuz",
        "assets/proxmox-ve/vmlinuz",
        "assets/vmlinuz",
        "assets",
    ],
)
def test_bad_names_are_not_found(tmp_path: Path, name: str) -> None:
    """
    A configuration name with a MAC or an IP address that does not parse, any other
    name under C{grub/}, and any file of the assets directory that is not a published
    version's kernel or initrd: file not found, and the TFTP root is never asked.
    """
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    with pytest.raises(FileNotFound):
        chain.read(name)
    assert chain.root.asked == []
    assert chain.events.events == []


def test_kernel_and_initrd_over_tftp(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    assert chain.read("assets/proxmox-ve/9.1-1/vmlinuz") == KERNEL
    assert chain.read("assets/proxmox-ve/9.1-1/initrd") == INITRD


def test_asset_file_replaced_by_a_link_outside_is_refused(tmp_path: Path) -> None:
    """
    A version's initrd whose directory leads outside the assets directory is not
    served: the TFTP root's own checks apply.
    """
    chain = Chain(tmp_path)
    directory = publish(chain.assets, "9.1-1")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "initrd").write_bytes(INITRD)
    (tmp_path / "elsewhere" / "vmlinuz").write_bytes(KERNEL)
    (tmp_path / "elsewhere" / "asset.json").write_bytes((directory / "asset.json").read_bytes())
    (chain.assets / "proxmox-ve" / "9.2-1").symlink_to(tmp_path / "elsewhere")
    # The catalogue lists it (a link to a version is the operator's choice), and the
    # TFTP side serves it the way the HTTP side does; nothing else around it.
    assert "proxmox-ve/9.2-1" in [a.key for a in scan(chain.assets).assets]
    with pytest.raises(FileNotFound):
        chain.read("assets/proxmox-ve/9.2-1/../../outside")


def menu_of(chain: Chain, memory: str = "8192-0.") -> str:
    return chain.read(f"grub/menu-01-{MAC}-m{memory}").decode()


def test_menu_installs_a_machine_with_an_answer(tmp_path: Path) -> None:
    """
    A machine with a host file gets the newest Proxmox VE by default after the
    timeout, and the menu served is published with the GRUB chain named.
    """
    chain = Chain(tmp_path, menu_timeout=7, kernel_args="console=ttyS0")
    publish(chain.assets, "9.0-1")
    publish(chain.assets, "9.1-1")
    chain.answers.write(f"hosts/{MAC.canonical}.toml", MINIMAL_ANSWER)
    text = menu_of(chain)
    assert "set default=install-0\nset timeout=7\n" in text
    assert "menuentry 'Install Proxmox VE 9.1-1' --id install-0" in text
    assert "/assets/proxmox-ve/9.1-1/vmlinuz ro quiet console=ttyS0" in text
    assert "(http,10.99.0.1:8080)/assets/proxmox-ve/9.1-1/vmlinuz" in text
    assert "WARNING" not in text
    [served] = chain.events.events
    assert isinstance(served, MenuServed)
    assert (served.client, served.mac, served.default, served.local) == (
        CONTEXT.client,
        MAC,
        "proxmox-ve/9.1-1",
        False,
    )
    assert served.reason.startswith("GRUB (Secure Boot chain): answer file present")
    assert (served.platform, served.memory_mib) == ("efi", 8192)


def test_menu_boots_the_disk_without_an_answer_or_once_installed(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    assert "set default=local\n" in menu_of(chain)
    chain.answers.write(f"hosts/{MAC.canonical}.toml", MINIMAL_ANSWER)
    assert "set default=install-0\n" in menu_of(chain)
    chain.installed[MAC] = 1_700_000_000.0
    text = menu_of(chain)
    assert "set default=local\n" in text
    assert "installed on 2023-11-14" in text


def test_menu_follows_the_host_boot_settings(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.0-1")
    publish(chain.assets, "9.1-1")
    chain.answers.write(f"hosts/{MAC.canonical}.toml", MINIMAL_ANSWER)
    chain.answers.write(
        f"hosts/{MAC.canonical}.boot.toml",
        b'default = "proxmox-ve/9.0-1"\ntimeout = 0\nsecure-boot = "always"\n',
    )
    text = menu_of(chain)
    assert "set default=install-1\nset timeout=-1\n" in text


def test_menu_warns_of_too_little_memory(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    text = menu_of(chain, "1024-0.")
    assert "WARNING: the installer needs at least 6000 MiB of memory" in text
    unknown = menu_of(chain, "")
    assert "WARNING" not in unknown


def test_menu_says_when_the_answer_would_be_refused(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    chain.answers.write(f"hosts/{MAC.canonical}.toml", b"not an answer [")
    text = menu_of(chain)
    assert "set default=local\n" in text
    assert "(answer would be refused: hosts/52-54-00-00-05-e1.toml cannot be served" in text


def choice(tmp_path: Path, setting: str, host: str | None, pieces: bool = True) -> bool:
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1", pieces=pieces)
    if host is not None:
        chain.answers.write(
            f"hosts/{MAC.canonical}.boot.toml", f'secure-boot = "{host}"\n'.encode()
        )
    return SecureBootChoice(setting, chain.service, chain.pieces).wanted(MAC)


@pytest.mark.parametrize(
    ("setting", "host", "shim"),
    [
        ("auto", None, False),
        ("auto", "auto", False),
        ("auto", "always", True),
        ("auto", "never", False),
        ("always", None, True),
        ("always", "auto", True),
        ("always", "never", False),
        ("never", "always", False),
        ("never", None, False),
    ],
)
def test_who_gets_shim(tmp_path: Path, setting: str, host: str | None, shim: bool) -> None:
    """
    C{never} sends nobody shim; C{auto} the hosts whose boot settings say C{always};
    C{always} everyone but the hosts whose boot settings say C{never}.
    """
    assert choice(tmp_path, setting, host) is shim


@pytest.mark.parametrize(
    ("setting", "host", "shim"),
    [
        ("auto", None, True),
        ("auto", "auto", True),
        ("auto", "never", False),
        ("never", None, False),
    ],
)
def test_auto_follows_what_the_timeline_says(
    tmp_path: Path, setting: str, host: str | None, shim: bool
) -> None:
    """
    Under C{auto}, a host whose timeline says it needs the signed chain (iPXE loaded and
    never run) is sent shim; a boot setting of C{never}, or C{--secure-boot never},
    still wins.
    """
    chain = Chain(tmp_path)
    publish(chain.assets, "9.1-1")
    if host is not None:
        chain.answers.write(
            f"hosts/{MAC.canonical}.boot.toml", f'secure-boot = "{host}"\n'.encode()
        )
    reasons = {MAC: "iPXE was loaded but never asked for its boot script"}
    wanted = SecureBootChoice(setting, chain.service, chain.pieces, reasons.get).wanted
    assert wanted(MAC) is shim
    assert wanted(MacAddress.parse("52:54:00:00:00:99")) is False


def test_no_shim_without_pieces(tmp_path: Path) -> None:
    assert choice(tmp_path, "always", None, pieces=False) is False


def test_invalid_boot_settings_change_nothing(tmp_path: Path) -> None:
    """
    A boot settings file whose C{secure-boot} is not a known word is ignored whole.
    """
    assert choice(tmp_path, "auto", "yes") is False
    assert choice(tmp_path / "2", "always", "yes") is True


def shim_for(wanted: bool) -> ShimOffer:
    return ShimOffer(lambda mac: wanted, lambda local: f"http://{local}:8080/ipxe/shimx64.efi")


def test_proxy_dhcp_offers_shim_to_the_chosen() -> None:
    decision = decide(
        decode(uefi_discover()),
        67,
        "192.0.2.10",
        lambda local: "boot.ipxe",
        ("0.0.0.0", 68),
        None,
        shim_for(True),
    )
    assert decision.outcome is Outcome.OFFERED
    assert decision.reply is not None
    assert decision.reply.packet.file == b"shimx64.efi"
    assert decision.detail == "UEFI x86-64, Secure Boot: shimx64.efi"
    other = decide(
        decode(uefi_discover()),
        67,
        "192.0.2.10",
        lambda local: "boot.ipxe",
        ("0.0.0.0", 68),
        None,
        shim_for(False),
    )
    assert other.reply is not None and other.reply.packet.file == b"ipxe.efi"


def test_proxy_dhcp_asks_about_the_requesting_mac() -> None:
    asked: list[MacAddress] = []

    def wanted(mac: MacAddress) -> bool:
        asked.append(mac)
        return False

    offer = ShimOffer(wanted, lambda local: "")
    decide(decode(uefi_discover()), 67, "192.0.2.10", str, ("0.0.0.0", 68), None, offer)
    assert asked == [MacAddress(DHCP_MAC)]


def test_http_boot_gets_the_url_of_shim() -> None:
    decision = decide(
        decode(http_discover()),
        67,
        "192.0.2.10",
        lambda local: "boot.ipxe",
        ("0.0.0.0", 68),
        lambda local: f"http://{local}:8080/ipxe/ipxe.efi",
        shim_for(True),
    )
    assert decision.reply is not None
    assert decision.reply.packet.file == b"http://192.0.2.10:8080/ipxe/shimx64.efi"
    assert decision.detail.startswith("UEFI x86-64 HTTP, Secure Boot")


def http_pilot(tmp_path: Path, **config: Any) -> PxePilot:
    (tmp_path / "answers").mkdir(exist_ok=True)
    (tmp_path / "tftp").mkdir(exist_ok=True)
    (tmp_path / "tftp" / "ipxe.efi").write_bytes(b"MZ iPXE")
    settings = Config(
        answers_dir=tmp_path / "answers",
        assets_dir=tmp_path / "assets",
        state_dir=tmp_path / "state",
        tftp_root=tmp_path / "tftp",
        **config,
    )
    return PxePilot(settings, clock_at_now(), run_blocking=run_here)


def test_pieces_over_http(tmp_path: Path) -> None:
    """
    UEFI HTTP Boot firmware loads shim from C{/ipxe/shimx64.efi}, and shim GRUB from
    beside it; other names are the TFTP root's, as before.
    """
    publish(tmp_path / "assets", "9.1-1")
    resource = http_pilot(tmp_path).resource
    shim = exchange(resource, b"/ipxe/shimx64.efi")
    assert (shim.code, shim.body) == (200, SHIM_BYTES + b"9.1-1")
    assert exchange(resource, b"/ipxe/grubx64.efi").body == GRUB_BYTES + b"9.1-1"
    assert exchange(resource, b"/ipxe/ipxe.efi").body == b"MZ iPXE"
    assert exchange(resource, b"/ipxe/mmx64.efi").code == 404


def test_pieces_over_http_from_the_secure_boot_dir(tmp_path: Path) -> None:
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    (pieces / "grubx64.efi").write_bytes(b"MZ operator's grub")
    publish(tmp_path / "assets", "9.1-1")
    resource = http_pilot(tmp_path, secure_boot_dir=pieces).resource
    assert exchange(resource, b"/ipxe/grubx64.efi").body == b"MZ operator's grub"
    assert exchange(resource, b"/ipxe/shimx64.efi").code == 404


def test_options(tmp_path: Path) -> None:
    """
    C{--secure-boot} takes auto, always or never; C{--secure-boot-dir} a directory.
    """
    for name in ("answers", "assets"):
        (tmp_path / name).mkdir()
    base = {"answers": str(tmp_path / "answers"), "assets": str(tmp_path / "assets")}
    config = load_config({**base, "secure-boot": "Always"}, {})
    assert (config.secure_boot, config.secure_boot_dir) == ("always", None)
    assert load_config(base, {"PXE_PILOT_SECURE_BOOT_DIR": str(tmp_path)}).secure_boot_dir == (
        tmp_path
    )
    with pytest.raises(ConfigError, match="--secure-boot: 'sometimes' is not auto"):
        load_config({**base, "secure-boot": "sometimes"}, {})
    with pytest.raises(ConfigError, match=r"--secure-boot-dir: .* does not exist"):
        load_config({**base, "secure-boot-dir": str(tmp_path / "missing")}, {})


def event(kind: EventKind, at: float, **detail: Any) -> Event:
    return Event(MAC, at, kind, "summary", detail)


def test_host_remembers_a_boot_through_the_signed_chain() -> None:
    """
    A complete transfer of shim (over TFTP in any directory, or over HTTP) marks the
    host as booting through the signed chain; an aborted one does not; iPXE's boot
    script means its latest boot went through iPXE.
    """
    host = advance(None, event(EventKind.TFTP, 1.0, file="shimx64.efi", outcome="probe"))
    assert host.secure_boot_at is None
    host = advance(host, event(EventKind.TFTP, 2.0, file="efi/shimx64.efi", outcome="complete"))
    assert host.secure_boot_at == 2.0
    host = advance(host, event(EventKind.TFTP, 3.0, file="grubx64.efi", outcome="complete"))
    assert host.secure_boot_at == 2.0
    assert Host.from_json(json.loads(json.dumps(host.as_json()))) == host
    host = advance(host, event(EventKind.SCRIPT, 4.0, script="boot.ipxe"))
    assert host.secure_boot_at is None
    host = advance(
        host, event(EventKind.DOWNLOAD_ENDED, 5.0, file="ipxe/shimx64.efi", complete=True)
    )
    assert (host.secure_boot_at, host.state) == (5.0, HostState.BOOTING)


def test_status_and_host_pages_show_the_signed_chain(tmp_path: Path) -> None:
    """
    The TFTP transfers of the chain, as the server publishes them, land on the host's
    timeline; C{/hosts/<mac>/status} gives C{secure_boot_at}, and the status page and
    the host's own page say Secure Boot.
    """
    pilot = http_pilot(tmp_path)
    client = "10.99.0.60"
    pilot.events.publish(MenuServed(client, MAC, "local", "why", True, "efi", None))
    pilot.events.publish(TransferFinished(client, "shimx64.efi", "complete", 1000, 0.1))
    pilot.events.publish(TransferFinished(client, "grub/grub.cfg", "complete", 500, 0.1))
    status = exchange(pilot.resource, f"/hosts/{MAC}/status".encode())
    report = json.loads(status.body)
    assert report["secure_boot_at"] is not None
    assert [e["detail"].get("file") for e in report["timeline"] if e["kind"] == "tftp"] == [
        "shimx64.efi",
        "grub/grub.cfg",
    ]
    listing = json.loads(exchange(pilot.resource, b"/hosts").body)
    assert [h["secure_boot_at"] for h in listing["known_hosts"]] == [report["secure_boot_at"]]
    assert "Secure Boot" in exchange(pilot.resource, b"/").body.decode()
    page = exchange(pilot.resource, f"/hosts/{MAC}/page".encode()).body.decode()
    assert "booted through the signed chain (shim, GRUB)" in page


def test_host_remembers_an_ipxe_that_never_ran() -> None:
    """
    A UEFI iPXE loaded completely (over TFTP in any directory, or under C{/ipxe/} over
    HTTP) that never asks for its boot script marks the host as needing the signed
    chain; iPXE's boot script, or shim, clears it; a BIOS iPXE or a probe does not set it.
    """
    host = advance(None, event(EventKind.TFTP, 1.0, file="undionly.kpxe", outcome="complete"))
    assert (host.ipxe_unchained_at, host.signed_chain_reason()) == (None, None)
    host = advance(host, event(EventKind.TFTP, 2.0, file="ipxe.efi", outcome="probe"))
    assert host.ipxe_unchained_at is None
    host = advance(host, event(EventKind.TFTP, 3.0, file="efi/ipxe.efi", outcome="complete"))
    assert host.ipxe_unchained_at == 3.0
    assert "never asked for its boot script" in (host.signed_chain_reason() or "")
    assert Host.from_json(json.loads(json.dumps(host.as_json()))) == host
    host = advance(host, event(EventKind.SCRIPT, 4.0, script="boot.ipxe"))
    assert (host.ipxe_unchained_at, host.signed_chain_reason()) == (None, None)
    host = advance(
        host, event(EventKind.DOWNLOAD_ENDED, 5.0, file="ipxe/snponly.efi", complete=True)
    )
    assert host.ipxe_unchained_at == 5.0
    host = advance(host, event(EventKind.TFTP, 6.0, file="shimx64.efi", outcome="complete"))
    assert (host.ipxe_unchained_at, host.secure_boot_at) == (None, 6.0)
    assert "signed chain before" in (host.signed_chain_reason() or "")


def test_the_host_page_says_ipxe_did_not_run(tmp_path: Path) -> None:
    """
    An iPXE the firmware loaded and never ran shows on the host's JSON and page, and
    proxyDHCP's choice under C{auto} follows it: the machine's next request gets shim.
    """
    pilot = http_pilot(tmp_path)
    client = "10.99.0.61"
    pilot.events.publish(MenuServed(client, MAC, "local", "why", True, "efi", None))
    assert pilot._signed_chain_reason(MAC) is None
    pilot.events.publish(TransferFinished(client, "ipxe.efi", "complete", 850528, 0.2))
    report = json.loads(exchange(pilot.resource, f"/hosts/{MAC}/status".encode()).body)
    assert report["ipxe_unchained_at"] is not None
    page = exchange(pilot.resource, f"/hosts/{MAC}/page".encode()).body.decode()
    assert "never asked for its boot script" in page
    assert "never asked for its boot script" in (pilot._signed_chain_reason(MAC) or "")
