"""
C{pxe-pilot-builder --from-pxe-dir DIR}: what C{prepare-iso --pxe} wrote becomes a
version of the assets directory, checked first, published whole or not at all.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from builder.cli import main
from builder.testing import cd_info, make_iso, prepare_iso_pxe, proxmox_files
from pxepilot.boot.catalogue import Initrd, scan
from tests.builder.helpers import split_combined
from tests.builder.test_builder_cli import check_assets, leftovers

INITRD = gzip.compress(b"installer initramfs " * 2000)
ANSWER = "https://192.0.2.10:8443/answer"


@pytest.fixture
def pxe_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prepared"
    prepare_iso_pxe(directory, proxmox_files(initrd=INITRD), ANSWER)
    return directory


def run(*args: str | Path) -> int:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    return int(exited.value.code or 0)


def test_imported_as_a_combined_version(
    pxe_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    Published where a build of that ISO would be, in the combined layout that boots on
    BIOS and UEFI alike, described by asset.json with the answer URL the ISO carries.
    """
    output = tmp_path / "assets"
    assert run("--from-pxe-dir", pxe_dir, "--output", output) == 0
    target = output / "proxmox-ve" / "9.1-1"
    metadata = check_assets(target)
    assert leftovers(output) == []
    iso = next(pxe_dir.glob("*.iso"))
    head, member = split_combined((target / "initrd").read_bytes(), len(INITRD))
    assert (head, member) == (INITRD, iso.read_bytes())
    assert (target / "vmlinuz").read_bytes() == (pxe_dir / "vmlinuz").read_bytes()
    assert metadata["layout"] == "combined"
    assert metadata["answer"]["url"] == ANSWER
    assert metadata["source"]["file"] == iso.name
    assert metadata["source"]["sha256"] == hashlib.sha256(iso.read_bytes()).hexdigest()
    assert str(pxe_dir) not in (target / "asset.json").read_text()
    [asset] = scan(output).assets
    assert (asset.key, asset.initrds) == ("proxmox-ve/9.1-1", (Initrd("initrd"),))
    assert f"published Proxmox VE 9.1-1 in {target}" in capsys.readouterr().err


def test_named_layout(pxe_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "assets"
    assert run("--from-pxe-dir", pxe_dir, "--output", output, "--layout", "named") == 0
    target = output / "proxmox-ve" / "9.1-1"
    check_assets(target)
    iso = next(pxe_dir.glob("*.iso"))
    assert (target / "proxmox.iso").read_bytes() == iso.read_bytes()
    assert (target / "initrd.img").read_bytes() == INITRD
    [asset] = scan(output).assets
    assert asset.initrds == (Initrd("initrd.img"), Initrd("proxmox.iso", "proxmox.iso"))


def test_directory_names_and_force(pxe_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "assets"
    named = ("--product", "pve", "--version-dir", "9.1-test")
    assert run("--from-pxe-dir", pxe_dir, "--output", output, *named) == 0
    assert (output / "pve" / "9.1-test" / "asset.json").exists()
    assert run("--from-pxe-dir", pxe_dir, "--output", output, *named) == 1
    assert run("--from-pxe-dir", pxe_dir, "--output", output, *named, "--force") == 0
    assert leftovers(output) == []


def spoil_missing_initrd(directory: Path) -> None:
    (directory / "initrd.img").unlink()


def spoil_two_isos(directory: Path) -> None:
    (directory / "other.iso").write_bytes(b"x")


def spoil_not_prepared(directory: Path) -> None:
    iso = next(directory.glob("*.iso"))
    files = proxmox_files(initrd=INITRD)
    del files["/boot/linux26"], files["/boot/initrd.img"]
    make_iso(iso, files)


def spoil_not_proxmox(directory: Path) -> None:
    iso = next(directory.glob("*.iso"))
    make_iso(iso, {"/.cd-info": cd_info(product="debian")})


def spoil_not_an_iso(directory: Path) -> None:
    next(directory.glob("*.iso")).write_bytes(b"\0" * 50000)


def spoil_initrd(directory: Path) -> None:
    (directory / "initrd.img").write_bytes(b"plain text")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (spoil_missing_initrd, "no initrd.img"),
        (spoil_two_isos, "2 .iso files"),
        (spoil_not_prepared, "not prepared for automatic installation"),
        (spoil_not_proxmox, "not a Proxmox ISO"),
        (spoil_not_an_iso, "not an ISO 9660 image"),
        (spoil_initrd, "neither gzip nor zstd"),
    ],
)
def test_refused_before_anything_is_written(
    pxe_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spoil: object,
    message: str,
) -> None:
    spoil(pxe_dir)  # type: ignore[operator]
    output = tmp_path / "assets"
    assert run("--from-pxe-dir", pxe_dir, "--output", output) == 1
    err = capsys.readouterr().err
    assert err.startswith("pxe-pilot-builder: error: ") and message in err, err
    assert not output.exists()


@pytest.mark.parametrize(
    "option",
    [
        ("--answer-url", ANSWER),
        ("--cert-fingerprint", "AB" * 32),
        ("--answer-token", "a:b"),
        ("--no-cert-pin",),
        ("--skip-verify",),
    ],
)
def test_answer_settings_come_from_the_iso(
    pxe_dir: Path, tmp_path: Path, option: tuple[str, ...]
) -> None:
    assert run("--from-pxe-dir", pxe_dir, "--output", tmp_path / "a", *option) == 2


def test_the_other_sources_still_need_an_answer_url(tmp_path: Path) -> None:
    assert run("--iso", tmp_path / "x.iso") == 2
