"""
The boot chain's HTTP routes, in memory: C{/boot.ipxe} sends iPXE on to the menu by an
absolute URL, C{/menu.ipxe} offers the published versions with the right default for
the machine that asks, and C{/hosts} reports the per-host boot settings.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.web.resource import IResource, Resource

from builder.publish import KERNEL_CMDLINE, make_staging
from pxepilot import Config, PxePilot
from pxepilot.boot.ipxe import MENU_QUERY, MIN_MEMORY_MIB
from pxepilot.hosts.ledger import run_here
from tests.conftest import AnswersDir, clock_at_now, result_of

MAC = "b0:7b:25:c1:0a:10"
MENU_ARGS = f"menu.ipxe?{MENU_QUERY}"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def publish(
    assets: Path,
    version: str,
    product: str = "pve",
    directory: str = "proxmox-ve",
    product_name: str = "Proxmox VE",
) -> Path:
    """
    A version as the builder publishes it: its files and an C{asset.json} describing
    them.
    """
    release, _, iso_release = version.partition("-")
    target = assets / directory / version
    target.mkdir(parents=True)
    files = {"vmlinuz": f"kernel {version}".encode(), "initrd": f"initrd {version}".encode()}
    for name, data in files.items():
        (target / name).write_bytes(data)
    metadata = {
        "format": 1,
        "product": product,
        "product_name": product_name,
        "iso_name": directory,
        "release": release,
        "iso_release": iso_release,
        "version": version,
        "layout": "combined",
        "kernel": "vmlinuz",
        "initrds": [{"file": "initrd"}],
        "kernel_cmdline": KERNEL_CMDLINE,
        "files": {
            name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        },
    }
    (target / "asset.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return target


class Client:
    """
    An in-memory client of a resource tree holding pxe-pilot.
    """

    def __init__(self, resource: IResource) -> None:
        # StubTreq's methods are made at run time; mypy cannot see them.
        self.treq: Any = StubTreq(resource)

    def get(self, url: str, **headers: str) -> tuple[int, dict[str, str], str]:
        response = result_of(
            self.treq.get(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
        )
        self.treq.flush()
        body = result_of(self.treq.content(response))
        found = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        return response.code, found, body.decode()

    def script(self, url: str, **headers: str) -> str:
        code, found, body = self.get(url, **headers)
        assert code == 200
        assert found["content-type"] == "text/plain; charset=utf-8"
        assert found["cache-control"] == "no-store"
        assert body.startswith("#!ipxe\n")
        return body


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    return path


def pilot(answers: AnswersDir, assets: Path, **config: Any) -> PxePilot:
    state = config.pop("state_dir", assets.parent / "state")
    settings = Config(answers_dir=answers.root, assets_dir=assets, state_dir=state, **config)
    return PxePilot(settings, clock_at_now(), run_blocking=run_here)


def client(answers: AnswersDir, assets: Path, **config: Any) -> Client:
    return Client(pilot(answers, assets, **config).resource)


def chains(script: str) -> list[str]:
    """
    The URLs a script chains to.
    """
    return re.findall(r"^chain --autofree (\S+)", script, re.MULTILINE)


def default_entry(menu: str) -> str:
    found = re.search(r"^choose --default (\S+)", menu, re.MULTILINE)
    assert found is not None
    return found.group(1)


def entry(menu: str, label: str) -> list[str]:
    """
    The lines of a menu entry, from its label to the next blank line.
    """
    lines = menu.splitlines()
    start = lines.index(f":{label}")
    end = lines.index("", start)
    return lines[start + 1 : end]


# /boot.ipxe: on to the menu, by an absolute URL.


def test_boot_script_from_the_host_header(answers_dir: AnswersDir, assets: Path) -> None:
    """
    Without a public URL, the menu is fetched from the host and port the client used,
    saying which machine asks.
    """
    script = client(answers_dir, assets).script("http://pxe.test:8080/boot.ipxe")
    assert chains(script) == [f"http://pxe.test:8080/{MENU_ARGS}"]


def test_boot_script_from_the_public_url(answers_dir: AnswersDir, assets: Path) -> None:
    """
    A configured public URL wins over whatever the request says.
    """
    c = client(
        answers_dir,
        assets,
        public_url="https://boot.example.com/pxe/",
        trusted_proxies=LOOPBACK,
    )
    script = c.script(
        "http://pxe.test/boot.ipxe", X_Forwarded_Host="proxy.test", X_Forwarded_Proto="http"
    )
    assert chains(script) == [f"https://boot.example.com/pxe/{MENU_ARGS}"]


@pytest.mark.parametrize("host", ["[2001:db8::5]:8080", "10.1.2.3", "pxe-pilot.lab.example"])
def test_well_formed_hosts(answers_dir: AnswersDir, assets: Path, host: str) -> None:
    """
    Names, IPv4 and bracketed IPv6 addresses, with or without a port, are used as sent.
    """
    script = client(answers_dir, assets).script("http://pxe.test/boot.ipxe", Host=host)
    assert chains(script) == [f"http://{host}/{MENU_ARGS}"]


@pytest.mark.parametrize(
    "host",
    [
        "bad host",
        "pxe.test/evil",
        "x${ip}",
        "pxe.test:80 || shell",
        "-leading.dash",
        "pxe.test:port",
        "[not:an:address",
        "user@pxe.test",
        "pxe.test\\evil",
        ".".join(["a" * 60] * 5),  # longer than a DNS name can be
    ],
)
def test_malformed_host_is_not_pasted(answers_dir: AnswersDir, assets: Path, host: str) -> None:
    """
    A Host header that is not a host name or address never reaches the script: the
    address the connection came in on is used instead.
    """
    script = client(answers_dir, assets).script("http://pxe.test:8080/boot.ipxe", Host=host)
    assert host not in script
    [url] = chains(script)
    assert re.fullmatch(
        r"http://(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+/" + re.escape(MENU_ARGS), url
    )


def test_forwarded_headers_from_an_untrusted_peer(answers_dir: AnswersDir, assets: Path) -> None:
    """
    C{X-Forwarded-Host} and C{-Proto} from a peer that is not a trusted proxy are
    ignored.
    """
    script = client(answers_dir, assets).script(
        "http://pxe.test/boot.ipxe", X_Forwarded_Host="proxy.test", X_Forwarded_Proto="https"
    )
    assert chains(script) == [f"http://pxe.test/{MENU_ARGS}"]


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        ({"X_Forwarded_Host": "proxy.test", "X_Forwarded_Proto": "https"}, "https://proxy.test/"),
        ({"X_Forwarded_Proto": "https"}, "https://pxe.test/"),
        ({"X_Forwarded_Host": "proxy.test:8443"}, "http://proxy.test:8443/"),
        ({"X_Forwarded_Host": "spoofed.test, proxy.test"}, "http://proxy.test/"),
        ({"X_Forwarded_Proto": "gopher"}, "http://pxe.test/"),
    ],
)
def test_forwarded_headers_from_a_trusted_proxy(
    answers_dir: AnswersDir, assets: Path, headers: dict[str, str], base: str
) -> None:
    """
    A trusted proxy names the host and scheme the client used (the last value, the one
    it added itself); a scheme other than http or https is ignored.
    """
    c = client(answers_dir, assets, trusted_proxies=LOOPBACK)
    script = c.script("http://pxe.test/boot.ipxe", **headers)
    assert chains(script) == [f"{base}{MENU_ARGS}"]


def test_malformed_forwarded_host_from_a_trusted_proxy(
    answers_dir: AnswersDir, assets: Path
) -> None:
    """
    Even a trusted proxy cannot put a malformed host into the script.
    """
    c = client(answers_dir, assets, trusted_proxies=LOOPBACK)
    script = c.script("http://pxe.test/boot.ipxe", X_Forwarded_Host="evil ${x}")
    assert "evil" not in script


def embedded(answers: AnswersDir, assets: Path, **config: Any) -> Client:
    """
    pxe-pilot mounted under C{/provisioning/pxe/} of another site.
    """
    root = Resource()
    provisioning = Resource()
    provisioning.putChild(b"pxe", pilot(answers, assets, **config).resource)
    root.putChild(b"provisioning", provisioning)
    return Client(root)


def test_boot_script_under_a_prefix(answers_dir: AnswersDir, assets: Path) -> None:
    """
    Mounted under a prefix, the menu URL keeps the prefix.
    """
    script = embedded(answers_dir, assets).script("http://host.test/provisioning/pxe/boot.ipxe")
    assert chains(script) == [f"http://host.test/provisioning/pxe/{MENU_ARGS}"]


def test_menu_under_a_prefix(answers_dir: AnswersDir, assets: Path) -> None:
    """
    The menu's asset URLs and its own URL, to come back to, keep the prefix too; and
    the assets are there.
    """
    publish(assets, "9.1-1")
    answers_dir.write("default.toml")
    c = embedded(answers_dir, assets, trusted_proxies=LOOPBACK)
    menu = c.script(
        f"http://host.test/provisioning/pxe/menu.ipxe?mac={MAC}",
        X_Forwarded_Proto="https",
    )
    base = "https://host.test/provisioning/pxe/"
    assert f"kernel {base}assets/proxmox-ve/9.1-1/vmlinuz " in menu
    assert f"initrd {base}assets/proxmox-ve/9.1-1/initrd || goto failed" in menu
    assert chains(menu) == [f"{base}menu.ipxe?mac={MAC}"]
    code, _, kernel = c.get("http://host.test/provisioning/pxe/assets/proxmox-ve/9.1-1/vmlinuz")
    assert (code, kernel) == (200, "kernel 9.1-1")


# /menu.ipxe: the versions, and the right default for the machine.


@pytest.fixture
def versions(assets: Path) -> Path:
    """
    Three versions of Proxmox VE, one of Proxmox Backup Server, one build in progress.
    """
    for version in ("9.9-1", "9.10-1", "8.4-1"):
        publish(assets, version)
    publish(
        assets,
        "4.0-1",
        product="pbs",
        directory="proxmox-backup-server",
        product_name="Proxmox Backup Server",
    )
    staging = make_staging(assets)
    (staging / "asset.json").write_text("{}")
    return assets


def test_host_with_an_answer_installs_the_newest(answers_dir: AnswersDir, versions: Path) -> None:
    """
    A machine that has an answer file gets every version, newest first within each
    product, and installs the newest Proxmox VE unless someone chooses otherwise.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu = client(answers_dir, versions).script(
        f"http://pxe.test/menu.ipxe?mac={MAC}&platform=pcbios&memsize=16384"
    )
    items = re.findall(r"^item (install-\d+) Install (.*)$", menu, re.MULTILINE)
    assert items == [
        ("install-0", "Proxmox Backup Server 4.0-1"),
        ("install-1", "Proxmox VE 9.10-1"),
        ("install-2", "Proxmox VE 9.9-1"),
        ("install-3", "Proxmox VE 8.4-1"),
    ]
    assert default_entry(menu) == "install-1"
    assert entry(menu, "install-1") == [
        "echo Loading Proxmox VE 9.10-1 ...",
        f"kernel http://pxe.test/assets/proxmox-ve/9.10-1/vmlinuz {KERNEL_CMDLINE} || goto failed",
        "initrd http://pxe.test/assets/proxmox-ve/9.10-1/initrd || goto failed",
        "boot || goto failed",
    ]
    assert f"Machine {MAC}, 16384 MiB of memory" in menu
    assert "WARNING" not in menu
    assert ".build-" not in menu


@pytest.mark.parametrize(
    "spelling", ["B0-7B-25-C1-0A-10", "b07b25c10a10", "b07b.25c1.0a10", "B0:7B:25:C1:0A:10"]
)
def test_mac_in_any_spelling(answers_dir: AnswersDir, versions: Path, spelling: str) -> None:
    """
    iPXE writes the MAC with colons; any other spelling finds the same host.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?mac={spelling}")
    assert default_entry(menu) == "install-1"
    assert f"for {MAC}:" in menu


def test_unknown_machine_boots_locally(answers_dir: AnswersDir, versions: Path) -> None:
    """
    A machine with neither a host file nor a default answer would not install
    unattended: it boots from its disk unless someone chooses, and still sees the
    versions.
    """
    answers_dir.host("04-3f-72-a8-1e-20.toml")
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert default_entry(menu) == "local"
    assert "item install-1 Install Proxmox VE 9.10-1" in menu
    assert "no answer file for this machine" in menu


def test_unknown_machine_with_a_default_answer(answers_dir: AnswersDir, versions: Path) -> None:
    """
    With C{default.toml} every machine would get an answer, so every machine installs.
    """
    answers_dir.write("default.toml")
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert default_entry(menu) == "install-1"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "mac=",
        "mac=zz:zz:zz:zz:zz:zz",
        "mac=../../etc/passwd",
        "mac=${netX/mac}",
        "mac=%00%ff%fe",
        "mac=" + "b0:7b:25:c1:0a:10" * 100,
        "mac=b0:7b:25:c1:0a:10:ff:ee",
        "mac=1&mac=2",
        "platform=../x&memsize=-5&memdevs=zz",
        "memsize=" + "9" * 100,
        "memsize=%B2",  # a superscript two: a digit to str.isdigit, not to int()
        "memdevs=" + "ffff-." * 2000,
    ],
)
def test_garbage_query_is_an_unknown_machine(
    answers_dir: AnswersDir, versions: Path, query: str
) -> None:
    """
    A query that names no machine (a malformed MAC, absurd sizes) gets the menu of an
    unknown machine, never an error, and nothing of it is echoed into the script.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?{query}")
    assert "pxe-pilot menu for this machine:" in menu
    assert default_entry(menu) == "local"
    assert chains(menu) == ["http://pxe.test/menu.ipxe?"]
    for fragment in ("etc/passwd", "netX", "../x", "zz"):
        assert fragment not in menu


@pytest.mark.parametrize(
    ("query", "memory"),
    [
        ("memdevs=0004-.", 1024),
        ("memdevs=0004-.0004-.", 2048),
        ("memsize=4096", 4096),
        ("memdevs=ff7f-00400000.", None),  # 16 GiB in the extended size field
        ("memsize=16384&memdevs=0004-.", None),  # iPXE's own figure wins
        ("memdevs=0040-.", None),  # one 16 GiB module
    ],
)
def test_low_memory_warning(
    answers_dir: AnswersDir, versions: Path, query: str, memory: int | None
) -> None:
    """
    A machine with less memory than the installer needs is told so in the menu and
    again when an installer is chosen, whether iPXE reports the size or the boot
    script gathered the SMBIOS memory devices.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?mac={MAC}&{query}")
    warning = f"WARNING: the installer needs at least {MIN_MEMORY_MIB} MiB of memory"
    if memory is None:
        assert "WARNING" not in menu
    else:
        assert f"item --gap -- {warning}" in menu
        assert f"echo WARNING: {memory} MiB of memory;" in menu
        assert f"Machine {MAC}, {memory} MiB of memory" in menu


def test_menu_comes_back_to_itself(answers_dir: AnswersDir, versions: Path) -> None:
    """
    After a failed download the menu is fetched again with what was understood of the
    machine, and nothing else.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu = client(answers_dir, versions).script(
        "http://pxe.test/menu.ipxe?mac=B0-7B-25-C1-0A-10&platform=efi&buildarch=x86_64"
        "&memsize=&memdevs=0040-.&extra=${evil}"
    )
    assert chains(menu) == [f"http://pxe.test/menu.ipxe?mac={MAC}&platform=efi&memsize=16384"]
    assert "evil" not in menu


def test_efi_names_the_initrd(answers_dir: AnswersDir, versions: Path) -> None:
    """
    On UEFI the kernel is told the initrd's name (iPXE hands it to the EFI stub by
    name); on BIOS it is not.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    c = client(answers_dir, versions)
    efi = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}&platform=efi")
    bios = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}&platform=pcbios")
    assert f"{KERNEL_CMDLINE} initrd=initrd || goto failed" in entry(efi, "install-1")[1]
    assert "initrd=" not in entry(bios, "install-1")[1]


def test_configured_asset_url_and_kernel_arguments(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    Assets can come from another server, and every installer gets the extra kernel
    arguments.
    """
    c = client(
        answers_dir,
        versions,
        asset_url="http://mirror.test/pxe-assets/",
        kernel_args="console=ttyS0,115200",
    )
    menu = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert (
        "kernel http://mirror.test/pxe-assets/proxmox-ve/9.10-1/vmlinuz "
        f"{KERNEL_CMDLINE} console=ttyS0,115200 || goto failed"
    ) in menu


def test_new_versions_appear_at_once(answers_dir: AnswersDir, assets: Path) -> None:
    """
    A version published while pxe-pilot runs is in the next menu and becomes the
    default.
    """
    answers_dir.write("default.toml")
    c = client(answers_dir, assets)
    menu = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert "No boot assets found" in menu
    assert default_entry(menu) == "local"
    publish(assets, "9.1-1")
    menu = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert default_entry(menu) == "install-0"


# Per-host boot settings: hosts/<mac>.boot.toml.


def test_boot_settings_choose_the_default(answers_dir: AnswersDir, versions: Path) -> None:
    """
    A host's sidecar picks its default entry and timeout, over the global ones.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.write("hosts/b0-7b-25-c1-0a-10.boot.toml", b'default = "proxmox-ve/8.4-1"\n')
    c = client(answers_dir, versions, menu_timeout=30)
    menu = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert default_entry(menu) == "install-3"
    assert "--timeout 30000 target" in menu
    answers_dir.write("hosts/b0-7b-25-c1-0a-10.boot.toml", b'default = "local"\ntimeout = 0\n')
    menu = c.script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert "choose --default local target || goto local" in menu


def test_invalid_boot_settings_are_ignored(answers_dir: AnswersDir, versions: Path) -> None:
    """
    A sidecar that cannot be used does not break the menu: the machine gets the
    default it would have had without one.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.write("hosts/b0-7b-25-c1-0a-10.boot.toml", b'default = "local"\ncolour = 1\n')
    menu = client(answers_dir, versions).script(f"http://pxe.test/menu.ipxe?mac={MAC}")
    assert default_entry(menu) == "install-1"


def test_hosts_reports_boot_settings(answers_dir: AnswersDir, assets: Path) -> None:
    """
    C{/hosts} lists every sidecar: whether it is valid (and why not), what it sets, and
    whether it is the one used for its MAC.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.write(
        "hosts/b0-7b-25-c1-0a-10.boot.toml", b'default = "proxmox-ve"\ntimeout = 5\n'
    )
    answers_dir.write("hosts/B07B25C10A10.boot.toml", b'default = "shell"\n')
    answers_dir.write("hosts/04-3f-72-a8-1e-20.boot.toml", b"timeout = -1\n")
    code, found, body = client(answers_dir, assets).get("http://pxe.test/hosts")
    assert (code, found["content-type"]) == (200, "application/json")
    settings = json.loads(body)["boot_settings"]
    assert settings == [
        {
            "mac": "04:3f:72:a8:1e:20",
            "file": "hosts/04-3f-72-a8-1e-20.boot.toml",
            "valid": False,
            "error": "hosts/04-3f-72-a8-1e-20.boot.toml: timeout must be a whole number "
            "of seconds, 0-3600",
            "used": True,
            "default": None,
            "timeout": None,
            "secure_boot": None,
        },
        {
            "mac": MAC,
            "file": "hosts/B07B25C10A10.boot.toml",
            "valid": True,
            "error": None,
            "used": False,
            "default": "shell",
            "timeout": None,
            "secure_boot": None,
        },
        {
            "mac": MAC,
            "file": "hosts/b0-7b-25-c1-0a-10.boot.toml",
            "valid": True,
            "error": None,
            "used": True,
            "default": "proxmox-ve",
            "timeout": 5,
            "secure_boot": None,
        },
    ]
    sidecar_names = [h["file"] for h in json.loads(body)["hosts"]]
    assert not any(name.endswith(".boot.toml") for name in sidecar_names)
