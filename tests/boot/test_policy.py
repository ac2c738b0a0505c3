"""
What a machine boots when nobody chooses: the global C{--menu-default}, a host's
C{hosts/<mac>.boot.toml}, and C{auto}'s choice from the answer files and the assets.
"""

from __future__ import annotations

import os

import pytest

from pxepilot.answers.files import AnswerListing, DirectoryAnswerFiles, HostFile
from pxepilot.answers.service import choose_source
from pxepilot.boot.catalogue import Asset, Initrd
from pxepilot.boot.ipxe import LOCAL, SHELL, Choice
from pxepilot.boot.policy import (
    AUTO,
    MAX_TIMEOUT,
    BootSettings,
    SidecarError,
    choose,
    host_settings,
    inspect_sidecars,
    parse_sidecar,
)
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir

MAC = MacAddress.parse("aa-bb-cc-dd-ee-01")
OTHER_MAC = MacAddress.parse("aa-bb-cc-dd-ee-02")
SIDECAR = f"hosts/{MAC.canonical}.boot.toml"


def asset(directory: str, product: str = "pve") -> Asset:
    """
    A version as the catalogue returns it; C{directory} is C{<product dir>/<version>}.
    """
    release, _, iso_release = directory.split("/")[1].partition("-")
    return Asset(
        directory=directory,
        product=product,
        product_name={"pve": "Proxmox VE", "pbs": "Proxmox Backup Server"}.get(product, product),
        release=release,
        iso_release=iso_release,
        layout="combined",
        kernel="vmlinuz",
        initrds=(Initrd("initrd"),),
        kernel_cmdline="quiet",
        mtime=0.0,
    )


# As the catalogue orders them: products in directory name order, newest first.
PBS = [asset("proxmox-backup-server/4.0-1", "pbs"), asset("proxmox-backup-server/3.4-1", "pbs")]
PMG = [asset("proxmox-mail-gateway/9.0-1", "pmg")]
PVE = [asset("proxmox-ve/9.1-1"), asset("proxmox-ve/8.4-1")]
ALL = [*PBS, *PMG, *PVE]

GLOBAL_AUTO = BootSettings()


def test_auto_with_answer_installs_newest_proxmox_ve() -> None:
    """
    With an answer, C{auto} takes the newest Proxmox VE, even when another product
    comes first in the catalogue.
    """
    choice = choose(ALL, True, None, GLOBAL_AUTO, 10)
    assert choice.default == "proxmox-ve/9.1-1"
    assert choice.timeout == 10
    assert choice.reason == "answer file present: newest Proxmox VE, proxmox-ve/9.1-1"


def test_auto_takes_newest_proxmox_ve_across_directories() -> None:
    """
    Proxmox VE published under two directories: C{auto} takes the newest of all, not
    the newest of the first directory.
    """
    assets = [asset("pve-lab/8.4-1"), *PVE, asset("pve-test/9.2-1")]
    assert choose(assets, True, None, GLOBAL_AUTO, 10).default == "pve-test/9.2-1"


def test_auto_with_answer_only_product() -> None:
    """
    Without Proxmox VE, C{auto} takes the newest version of the only product present.
    """
    choice = choose(PBS, True, None, GLOBAL_AUTO, 10)
    assert choice == Choice(
        "proxmox-backup-server/4.0-1",
        10,
        "answer file present: the only product, proxmox-backup-server/4.0-1",
    )


def test_auto_with_answer_several_products_without_proxmox_ve() -> None:
    """
    Several products and none of them Proxmox VE: C{auto} cannot guess and boots the
    local disk.
    """
    choice = choose([*PBS, *PMG], True, None, GLOBAL_AUTO, 10)
    assert choice == Choice(LOCAL, 10, "several products and no Proxmox VE: choose one per host")


def test_auto_with_answer_no_assets() -> None:
    """
    With an answer but nothing to install, C{auto} boots the local disk.
    """
    assert choose([], True, None, GLOBAL_AUTO, 10) == Choice(
        LOCAL, 10, "no boot assets: local disk"
    )


@pytest.mark.parametrize("assets", [ALL, PVE, []])
def test_auto_without_answer_boots_local_disk(assets: list[Asset]) -> None:
    """
    A machine without an answer is never installed by default.
    """
    assert choose(assets, False, None, GLOBAL_AUTO, 10) == Choice(
        LOCAL, 10, "no answer file for this machine: local disk"
    )


@pytest.mark.parametrize(
    ("default_present", "host_macs", "installs"),
    [
        (True, [], True),
        (False, [MAC], True),
        (True, [MAC], True),
        (False, [OTHER_MAC], False),
        (False, [], False),
    ],
)
def test_auto_answer_from_default_or_host_file(
    default_present: bool, host_macs: list[MacAddress], installs: bool
) -> None:
    """
    An answer from C{default.toml} or from the machine's host file both make C{auto}
    install; a host file for another machine does not.
    """
    listing = AnswerListing(
        default_present,
        tuple(HostFile(mac, f"hosts/{mac.canonical}.toml") for mac in host_macs),
        (),
    )
    has_answer = choose_source(listing, [MAC]) is not None
    choice = choose(PVE, has_answer, None, GLOBAL_AUTO, 10)
    assert choice.default == ("proxmox-ve/9.1-1" if installs else LOCAL)


@pytest.mark.parametrize("has_answer", [True, False])
@pytest.mark.parametrize("target", [LOCAL, SHELL])
def test_global_local_or_shell(has_answer: bool, target: str) -> None:
    """
    C{--menu-default local} or C{shell} applies whether or not there is an answer.
    """
    choice = choose(ALL, has_answer, None, BootSettings(target), 10)
    assert choice == Choice(target, 10, f"{target} from the --menu-default option")


@pytest.mark.parametrize("has_answer", [True, False])
def test_global_product(has_answer: bool) -> None:
    """
    A product directory name as the default takes that product's newest version,
    answer or not.
    """
    choice = choose(ALL, has_answer, None, BootSettings("proxmox-backup-server"), 10)
    assert choice == Choice(
        "proxmox-backup-server/4.0-1",
        10,
        "proxmox-backup-server/4.0-1 from the --menu-default option",
    )


def test_global_version() -> None:
    """
    A version as the default takes exactly that version, not the newest.
    """
    choice = choose(ALL, False, None, BootSettings("proxmox-ve/8.4-1"), 10)
    assert choice.default == "proxmox-ve/8.4-1"


@pytest.mark.parametrize(
    "wanted", ["proxmox-ve/9.9-1", "proxmox-datacenter-manager", "proxmox-ve/", "pve/9.1-1"]
)
def test_global_default_not_available(wanted: str) -> None:
    """
    A default naming a version or product that is not published boots the local
    disk, and the reason says what was missing.
    """
    choice = choose(ALL, True, None, BootSettings(wanted), 10)
    assert choice == Choice(
        LOCAL, 10, f"{wanted!r} from the --menu-default option is not available: local disk"
    )


def test_host_default_overrides_global() -> None:
    """
    A host's sidecar default wins over the global default.
    """
    choice = choose(ALL, True, BootSettings(SHELL), BootSettings(LOCAL), 10)
    assert choice == Choice(SHELL, 10, "shell from the host's boot settings")


def test_host_version() -> None:
    """
    A host's sidecar can name a version, installed even without an answer.
    """
    choice = choose(ALL, False, BootSettings("proxmox-ve/8.4-1"), GLOBAL_AUTO, 10)
    assert choice == Choice(
        "proxmox-ve/8.4-1", 10, "proxmox-ve/8.4-1 from the host's boot settings"
    )


@pytest.mark.parametrize("wanted", ["proxmox-ve/9.9-1", "proxmox-mail-gateway/8.0-1", "nope"])
def test_host_default_not_available(wanted: str) -> None:
    """
    A sidecar naming an absent version or product boots the local disk; it does not
    fall back to the global default.
    """
    choice = choose(ALL, True, BootSettings(wanted), BootSettings(SHELL), 10)
    assert choice == Choice(
        LOCAL, 10, f"{wanted!r} from the host's boot settings is not available: local disk"
    )


def test_host_timeout_only_keeps_global_default() -> None:
    """
    A sidecar that sets only the timeout leaves the global default in force.
    """
    choice = choose(ALL, True, BootSettings(None, 3), BootSettings(LOCAL), 10)
    assert choice == Choice(LOCAL, 3, "local from the --menu-default option")


def test_host_auto_overrides_global_default() -> None:
    """
    A sidecar that says C{auto} gets the automatic choice even where the global default
    is something else.
    """
    choice = choose(ALL, True, BootSettings(AUTO), BootSettings(LOCAL), 10)
    assert choice.default == "proxmox-ve/9.1-1"
    choice = choose(ALL, False, BootSettings(AUTO), BootSettings(SHELL), 10)
    assert choice == Choice(LOCAL, 10, "no answer file for this machine: local disk")


@pytest.mark.parametrize(
    ("host", "default", "timeout"),
    [
        (None, BootSettings(), 10),
        (BootSettings(), BootSettings(), 10),
        (None, BootSettings(AUTO, 20), 20),
        (BootSettings(AUTO, 5), BootSettings(AUTO, 20), 5),
        (BootSettings(AUTO, 0), BootSettings(), 0),
        (BootSettings(LOCAL), BootSettings(AUTO, 0), 0),
    ],
)
def test_timeout_precedence(
    host: BootSettings | None, default: BootSettings, timeout: int
) -> None:
    """
    The wait is the host's timeout if it sets one, else the global settings', else
    the option's; 0 (wait for a person) counts as set.
    """
    assert choose(PVE, True, host, default, 10).timeout == timeout


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        (b"", BootSettings(None, None)),
        (b'default = "auto"\n', BootSettings(AUTO, None)),
        (b'default = "local"\n', BootSettings(LOCAL, None)),
        (b"timeout = 0\n", BootSettings(None, 0)),
        (b'default = "  proxmox-ve/9.1-1 "\ntimeout = 5\n', BootSettings("proxmox-ve/9.1-1", 5)),
        (f"timeout = {MAX_TIMEOUT}".encode(), BootSettings(None, MAX_TIMEOUT)),
        (b'# a comment\ndefault = "shell" # why\n', BootSettings(SHELL, None)),
    ],
)
def test_parse_sidecar(text: bytes, settings: BootSettings) -> None:
    """
    A sidecar holds an optional C{default} (text, trimmed) and C{timeout} (seconds);
    what it leaves out is not set.
    """
    assert parse_sidecar(text) == settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"default = ", "not valid TOML"),
        (b'default = "a"\ndefault = "b"\n', "not valid TOML"),
        (b"\xff\xfe", "not valid TOML"),
        (b"timeout = " + b"[" * 5000 + b"]" * 5000, "not valid TOML"),
        (b"timeout = " + b"9" * 5000, "not valid TOML"),
        (b'menu = "local"\n', "unknown key 'menu' (known: default, timeout, secure-boot)"),
        (b'[default]\nvalue = "local"\n', "default must be a non-empty string"),
        (b"[boot]\ntimeout = 5\n", "unknown key 'boot'"),
        (b'default = ""\n', "default must be a non-empty string"),
        (b'default = "  "\n', "default must be a non-empty string"),
        (b"default = 5\n", "default must be a non-empty string"),
        (b'default = ["local"]\n', "default must be a non-empty string"),
        (b"timeout = -1\n", "timeout must be a whole number of seconds"),
        (f"timeout = {MAX_TIMEOUT + 1}\n".encode(), "timeout must be a whole number"),
        (b"timeout = 1.5\n", "timeout must be a whole number of seconds"),
        (b'timeout = "5"\n', "timeout must be a whole number of seconds"),
        (b"timeout = true\n", "timeout must be a whole number of seconds"),
    ],
)
def test_parse_sidecar_refuses(text: bytes, message: str) -> None:
    """
    Anything but a valid C{default} and C{timeout} is refused with a message saying
    why, including TOML that Python's parser fails on in other ways (nesting too
    deep, integers too long to convert).
    """
    with pytest.raises(SidecarError) as caught:
        parse_sidecar(text)
    assert message in str(caught.value)


def files_and_listing(answers: AnswersDir) -> tuple[DirectoryAnswerFiles, AnswerListing]:
    files = DirectoryAnswerFiles(answers.root)
    return files, files.listing()


def test_host_settings_without_sidecar(answers_dir: AnswersDir) -> None:
    """
    A machine without a sidecar has no host settings and no problem; another
    machine's sidecar is not its own.
    """
    answers_dir.write(f"hosts/{OTHER_MAC.canonical}.boot.toml", b'default = "shell"\n')
    files, listing = files_and_listing(answers_dir)
    assert host_settings(files, listing, MAC) == (None, None)


def test_host_settings_read(answers_dir: AnswersDir) -> None:
    """
    A machine's sidecar is read and checked.
    """
    answers_dir.write(SIDECAR, b'default = "shell"\ntimeout = 0\n')
    files, listing = files_and_listing(answers_dir)
    assert host_settings(files, listing, MAC) == (BootSettings(SHELL, 0), None)


def test_host_settings_beside_default_answer(answers_dir: AnswersDir) -> None:
    """
    A sidecar applies when the machine's answer comes from C{default.toml}, with no
    host file of its own.
    """
    answers_dir.write("default.toml")
    answers_dir.write(SIDECAR, b"timeout = 3\n")
    files, listing = files_and_listing(answers_dir)
    assert listing.files_for(MAC) == ()
    settings, problem = host_settings(files, listing, MAC)
    assert (settings, problem) == (BootSettings(None, 3), None)
    choice = choose(PVE, choose_source(listing, [MAC]) is not None, settings, GLOBAL_AUTO, 10)
    assert choice == Choice(
        "proxmox-ve/9.1-1", 3, "answer file present: newest Proxmox VE, proxmox-ve/9.1-1"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"default = 'local", "not valid TOML"),
        (b'default = "local"\nmenu = 1\n', "unknown key 'menu'"),
        (b"timeout = 99999\n", "timeout must be a whole number of seconds"),
        (b"timeout = " + b"[" * 5000 + b"]" * 5000, "not valid TOML"),
    ],
)
def test_malformed_sidecar_ignored(answers_dir: AnswersDir, content: bytes, message: str) -> None:
    """
    A malformed sidecar is ignored with a problem naming the file and saying why;
    the global settings then apply.
    """
    answers_dir.write(SIDECAR, content)
    files, listing = files_and_listing(answers_dir)
    settings, problem = host_settings(files, listing, MAC)
    assert settings is None
    assert problem is not None
    assert problem.startswith(f"{SIDECAR}: ")
    assert message in problem
    assert choose(PVE, True, settings, BootSettings(SHELL), 7) == Choice(
        SHELL, 7, "shell from the --menu-default option"
    )


def test_sidecar_gone_after_listing(answers_dir: AnswersDir) -> None:
    """
    A sidecar removed between the listing and the read is a problem, not a crash.
    """
    path = answers_dir.write(SIDECAR, b'default = "local"\n')
    files, listing = files_and_listing(answers_dir)
    path.unlink()
    settings, problem = host_settings(files, listing, MAC)
    assert settings is None
    assert problem is not None and problem.startswith(f"{SIDECAR}: ")


def test_sidecar_too_large(answers_dir: AnswersDir) -> None:
    """
    A sidecar larger than any answer file may be is a problem, not read.
    """
    answers_dir.write(SIDECAR, b"#" * (1 << 20) + b"\n")
    files, listing = files_and_listing(answers_dir)
    settings, problem = host_settings(files, listing, MAC)
    assert settings is None
    assert problem is not None and problem.startswith(f"{SIDECAR}: ")


def test_canonical_sidecar_preferred(answers_dir: AnswersDir) -> None:
    """
    With two spellings of the same MAC, the canonical file name is the one used.
    """
    answers_dir.write("hosts/AABBCCDDEE01.boot.toml", b'default = "local"\n')
    answers_dir.write(SIDECAR, b'default = "shell"\n')
    files, listing = files_and_listing(answers_dir)
    assert host_settings(files, listing, MAC) == (BootSettings(SHELL), None)


def test_inspect_sidecars(answers_dir: AnswersDir) -> None:
    """
    Every sidecar is reported in name order: its MAC, whether it is valid (and why
    not), whether it is the one used for that MAC, and its settings.
    """
    answers_dir.write("hosts/AABBCCDDEE01.boot.toml", b'default = "local"\n')
    answers_dir.write(
        SIDECAR, b'default = "proxmox-ve/9.1-1"\ntimeout = 0\nsecure-boot = "always"\n'
    )
    answers_dir.write(f"hosts/{OTHER_MAC.canonical}.boot.toml", b"colour = 'blue'\n")
    answers_dir.write(f"hosts/{OTHER_MAC.canonical}.toml")
    answers_dir.write("hosts/not-a-mac.boot.toml", b'default = "local"\n')
    files, listing = files_and_listing(answers_dir)
    assert inspect_sidecars(files, listing) == [
        {
            "mac": "aa:bb:cc:dd:ee:01",
            "file": "hosts/AABBCCDDEE01.boot.toml",
            "valid": True,
            "error": None,
            "used": False,
            "default": LOCAL,
            "timeout": None,
            "secure_boot": None,
        },
        {
            "mac": "aa:bb:cc:dd:ee:01",
            "file": SIDECAR,
            "valid": True,
            "error": None,
            "used": True,
            "default": "proxmox-ve/9.1-1",
            "timeout": 0,
            "secure_boot": "always",
        },
        {
            "mac": "aa:bb:cc:dd:ee:02",
            "file": "hosts/aa-bb-cc-dd-ee-02.boot.toml",
            "valid": False,
            "error": (
                "hosts/aa-bb-cc-dd-ee-02.boot.toml: unknown key 'colour'"
                " (known: default, timeout, secure-boot)"
            ),
            "used": True,
            "default": None,
            "timeout": None,
            "secure_boot": None,
        },
    ]


def test_inspect_sidecars_none(answers_dir: AnswersDir) -> None:
    """
    Without sidecars the report is empty.
    """
    answers_dir.write("default.toml")
    assert inspect_sidecars(*files_and_listing(answers_dir)) == []


def test_inspect_sidecar_gone(answers_dir: AnswersDir) -> None:
    """
    A sidecar that disappears before it is read is reported invalid, with why.
    """
    path = answers_dir.write(SIDECAR, b"timeout = 1\n")
    files, listing = files_and_listing(answers_dir)
    os.unlink(path)
    [entry] = inspect_sidecars(files, listing)
    assert entry["valid"] is False
    assert entry["error"].startswith(f"{SIDECAR}: ")
    assert (entry["used"], entry["default"], entry["timeout"]) == (True, None, None)
