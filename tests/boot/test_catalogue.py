"""
The assets catalogue: what the builder publishes is found, newest first; anything that
cannot be served safely is left out, and reported when it looks like a version.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.cdinfo import ProductInfo
from builder.cli import metadata
from builder.pipeline import BuildResult, OutputFile
from builder.publish import KERNEL_CMDLINE, make_staging, publish, write_metadata
from pxepilot.boot.catalogue import (
    MAX_METADATA_BYTES,
    METADATA,
    Catalogue,
    Initrd,
    scan,
)

Edit = Callable[[dict[str, Any]], None]

LAYOUT_FILES = {
    "combined": {"vmlinuz": b"MZ kernel " * 100, "initrd": b"\x1f\x8b initrd " * 300},
    "named": {
        "vmlinuz": b"MZ kernel " * 100,
        "initrd.img": b"\x1f\x8b initrd " * 200,
        "proxmox.iso": b"CD001 iso " * 400,
    },
}


def builder_metadata(
    files: dict[str, bytes],
    layout: str = "combined",
    product: str = "pve",
    product_name: str = "Proxmox VE",
    iso_name: str = "proxmox-ve",
    release: str = "9.1",
    iso_release: str = "1",
) -> dict[str, Any]:
    """
    The C{asset.json} content the builder writes for these files.
    """
    args = argparse.Namespace(
        iso_url="https://example.com/proxmox.iso",
        iso=None,
        answer_url="http://192.0.2.10:8080/answer",
        cert_fingerprint=None,
        answer_token=None,
    )
    result = BuildResult(
        source_size=1234,
        source_sha256="0" * 64,
        product=ProductInfo(product, product_name, iso_name, release, iso_release),
        files={
            name: OutputFile(name, len(data), hashlib.sha256(data).hexdigest())
            for name, data in files.items()
        },
        layout=layout,
    )
    built = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    return metadata(args, result, "skipped", built)


def write_version(
    directory: Path,
    layout: str = "combined",
    edit: Edit | None = None,
    **identity: str,
) -> Path:
    """
    Write a version as the builder leaves it in C{directory}: its files and its
    C{asset.json}, changed by C{edit} first if given.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = LAYOUT_FILES[layout]
    for name, data in files.items():
        (directory / name).write_bytes(data)
    document = builder_metadata(files, layout, **identity)
    if edit is not None:
        edit(document)
    write_metadata(directory, document)
    return directory


def version(root: Path, product_dir: str, release: str, iso_release: str, **kw: Any) -> Path:
    """
    A published version at C{<product_dir>/<release>-<iso_release>}.
    """
    return write_version(
        root / product_dir / f"{release}-{iso_release}",
        release=release,
        iso_release=iso_release,
        **kw,
    )


def keys(catalogue: Catalogue) -> list[str]:
    return [asset.key for asset in catalogue.assets]


def test_builder_output_combined(tmp_path: Path) -> None:
    """
    A version published by the builder (combined layout) is read back as it was
    described: identity, kernel, a single unnamed initrd and the command line.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1")
    catalogue = scan(tmp_path)
    assert catalogue.problems == ()
    [asset] = catalogue.assets
    assert asset.directory == "proxmox-ve/9.1-1"
    assert asset.key == "proxmox-ve/9.1-1"
    assert (asset.product, asset.product_name) == ("pve", "Proxmox VE")
    assert (asset.release, asset.iso_release, asset.version) == ("9.1", "1", "9.1-1")
    assert asset.layout == "combined"
    assert asset.kernel == "vmlinuz"
    assert asset.initrds == (Initrd("initrd"),)
    assert asset.kernel_cmdline == KERNEL_CMDLINE
    assert asset.mtime == (tmp_path / "proxmox-ve/9.1-1" / METADATA).stat().st_mtime


def test_builder_output_named(tmp_path: Path) -> None:
    """
    The named layout keeps its two initrds in order, the ISO under its iPXE name.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", layout="named")
    [asset] = scan(tmp_path).assets
    assert asset.layout == "named"
    assert asset.initrds == (Initrd("initrd.img"), Initrd("proxmox.iso", "proxmox.iso"))


def test_builder_publish_sequence(tmp_path: Path) -> None:
    """
    While the builder writes into its hidden staging directory nothing is listed or
    reported; once it renames the staging directory into place, the next scan finds
    the version.
    """
    target = tmp_path / "proxmox-ve" / "9.1-1"
    staging = make_staging(tmp_path)
    write_version(staging)
    assert scan(tmp_path) == Catalogue((), ())
    publish(staging, target, force=False)
    assert keys(scan(tmp_path)) == ["proxmox-ve/9.1-1"]


def test_new_version_appears_on_next_scan(tmp_path: Path) -> None:
    """
    Nothing is cached: a version published after a scan is in the next one, in its
    place by version.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1")
    assert keys(scan(tmp_path)) == ["proxmox-ve/9.1-1"]
    version(tmp_path, "proxmox-ve", "9.2", "1")
    assert keys(scan(tmp_path)) == ["proxmox-ve/9.2-1", "proxmox-ve/9.1-1"]


def test_newest_first(tmp_path: Path) -> None:
    """
    Within a product, versions are ordered by release then ISO release, as numbers:
    9.10 is newer than 9.2, and ISO release 2 newer than 1.
    """
    for release, iso_release in [("9.2", "1"), ("8.4", "1"), ("9.10", "1"), ("9.2", "2")]:
        version(tmp_path, "proxmox-ve", release, iso_release)
    assert keys(scan(tmp_path)) == [
        "proxmox-ve/9.10-1",
        "proxmox-ve/9.2-2",
        "proxmox-ve/9.2-1",
        "proxmox-ve/8.4-1",
    ]


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        (("9.2", "1"), ("9.10", "1")),
        (("9.9", "1"), ("9.10", "1")),
        (("8.4", "1"), ("9.0", "1")),
        (("9.1", "1"), ("9.1.1", "1")),
        (("9.1", "2"), ("9.1", "10")),
        (("9.0", "BETA-1"), ("9.0", "1")),
        (("9.0-BETA", "1"), ("9.0", "1")),
        (("9.1-beta", "1"), ("9.1", "1")),
        (("9.1-rc1", "1"), ("9.1-rc2", "1")),
    ],
)
def test_version_order(tmp_path: Path, older: tuple[str, str], newer: tuple[str, str]) -> None:
    """
    Numbers compare as numbers, and a pre-release (C{-BETA}, C{-rc1}) comes before
    its release, whichever was written first.
    """
    for first, second in [(older, newer), (newer, older)]:
        root = tmp_path / f"{first[0]}-{first[1]}-first"
        version(root, "proxmox-ve", *first)
        version(root, "proxmox-ve", *second)
        assert keys(scan(root)) == [
            f"proxmox-ve/{newer[0]}-{newer[1]}",
            f"proxmox-ve/{older[0]}-{older[1]}",
        ]


def test_same_version_newest_build_first(tmp_path: Path) -> None:
    """
    Two builds of the same version (published under different directory names) are
    ordered by when their C{asset.json} was written, newest first.
    """
    older = write_version(tmp_path / "proxmox-ve" / "9.1-1-b")
    newer = write_version(tmp_path / "proxmox-ve" / "9.1-1-a")
    os.utime(older / METADATA, (1_000_000, 1_000_000))
    os.utime(newer / METADATA, (2_000_000, 2_000_000))
    assert keys(scan(tmp_path)) == ["proxmox-ve/9.1-1-a", "proxmox-ve/9.1-1-b"]
    os.utime(older / METADATA, (3_000_000, 3_000_000))
    assert keys(scan(tmp_path)) == ["proxmox-ve/9.1-1-b", "proxmox-ve/9.1-1-a"]


def test_products_grouped(tmp_path: Path) -> None:
    """
    Products come in directory name order, each with its versions together, newest
    first.
    """
    version(tmp_path, "proxmox-ve", "8.4", "1")
    version(tmp_path, "proxmox-backup-server", "4.0", "1", product="pbs")
    version(tmp_path, "proxmox-ve", "9.1", "1")
    version(tmp_path, "proxmox-backup-server", "3.4", "1", product="pbs")
    catalogue = scan(tmp_path)
    assert keys(catalogue) == [
        "proxmox-backup-server/4.0-1",
        "proxmox-backup-server/3.4-1",
        "proxmox-ve/9.1-1",
        "proxmox-ve/8.4-1",
    ]
    assert [a.product for a in catalogue.assets] == ["pbs", "pbs", "pve", "pve"]


def test_find(tmp_path: Path) -> None:
    """
    A version is found by its key; an unknown key finds nothing.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1")
    version(tmp_path, "proxmox-ve", "9.2", "1")
    catalogue = scan(tmp_path)
    found = catalogue.find("proxmox-ve/9.1-1")
    assert found is not None and found.release == "9.1"
    assert catalogue.find("proxmox-ve/9.3-1") is None
    assert catalogue.find("proxmox-ve") is None


@pytest.mark.parametrize("root", ["missing", "a-file"])
def test_no_assets_directory(tmp_path: Path, root: str) -> None:
    """
    A missing assets directory, or a file in its place, is an empty catalogue.
    """
    (tmp_path / "a-file").write_bytes(b"")
    assert scan(tmp_path / root) == Catalogue((), ())


@pytest.mark.parametrize(
    "hidden",
    [
        "proxmox-ve/.build-1234-abcd",
        "proxmox-ve/.replaced-9.1-1-abcd",
        ".build-1234-abcd",
        ".build-1234-abcd/9.1-1",
        "proxmox-ve/.9.1-1",
    ],
)
def test_hidden_directories_ignored(tmp_path: Path, hidden: str) -> None:
    """
    Hidden directories (the builder's staging and replaced versions) are neither
    listed nor reported, even with a complete C{asset.json}.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1")
    write_version(tmp_path / hidden)
    catalogue = scan(tmp_path)
    assert keys(catalogue) == ["proxmox-ve/9.1-1"]
    assert catalogue.problems == ()


@pytest.mark.parametrize(
    "name", ["with space", "dollar$", "brace{", "quote'", "new\nline", "-dash", "é"]
)
def test_unsafe_directory_names_ignored(tmp_path: Path, name: str) -> None:
    """
    Product and version directories whose names could not go into a URL as they are
    never appear.
    """
    write_version(tmp_path / name / "9.1-1")
    write_version(tmp_path / "proxmox-ve" / name)
    catalogue = scan(tmp_path)
    assert catalogue.assets == ()
    assert catalogue.problems == ()


def test_files_beside_directories_ignored(tmp_path: Path) -> None:
    """
    Plain files where products or versions are expected are skipped.
    """
    (tmp_path / "README").write_bytes(b"notes")
    version(tmp_path, "proxmox-ve", "9.1", "1")
    (tmp_path / "proxmox-ve" / "9.2-1").write_bytes(b"not a directory")
    catalogue = scan(tmp_path)
    assert keys(catalogue) == ["proxmox-ve/9.1-1"]
    assert catalogue.problems == ()


def problem_of(tmp_path: Path) -> str:
    """
    The single problem the catalogue reports for C{proxmox-ve/9.1-1}, which must not
    be listed, while a good version beside it still is.
    """
    version(tmp_path, "proxmox-ve", "8.4", "1")
    catalogue = scan(tmp_path)
    assert keys(catalogue) == ["proxmox-ve/8.4-1"]
    [(where, why)] = catalogue.problems
    assert where == "proxmox-ve/9.1-1"
    return why


def test_missing_metadata(tmp_path: Path) -> None:
    """
    A version directory without C{asset.json} is reported, not listed.
    """
    directory = version(tmp_path, "proxmox-ve", "9.1", "1")
    (directory / METADATA).unlink()
    assert problem_of(tmp_path).startswith(f"no readable {METADATA}")


def test_partial_metadata(tmp_path: Path) -> None:
    """
    A half-written C{asset.json} is reported, not listed.
    """
    path = version(tmp_path, "proxmox-ve", "9.1", "1") / METADATA
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert problem_of(tmp_path).startswith(f"{METADATA} is not JSON")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is not JSON"),
        (b"{", "is not JSON"),
        (b"\xc3(", "is not JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "is too large"),
        (b"[" * 30_000 + b"]" * 30_000, "is not JSON"),
        (b"[]", "is not format 1"),
        (b'"format"', "is not format 1"),
        (b"null", "is not format 1"),
        (b'{"format": 2}', "is not format 1"),
        (b'{"format": "1"}', "is not format 1"),
    ],
)
def test_invalid_metadata(tmp_path: Path, content: bytes, why: str) -> None:
    """
    An C{asset.json} that is not a format 1 JSON object, too large or nested too
    deeply to parse, is reported, not listed.
    """
    directory = version(tmp_path, "proxmox-ve", "9.1", "1")
    (directory / METADATA).write_bytes(content)
    assert why in problem_of(tmp_path)


def test_metadata_size_limit(tmp_path: Path) -> None:
    """
    An C{asset.json} padded just past the limit is refused; one just under it is read.
    """
    directory = version(tmp_path / "under", "proxmox-ve", "9.1", "1")
    path = directory / METADATA
    data = path.read_bytes().rstrip()
    path.write_bytes(data + b" " * (MAX_METADATA_BYTES - len(data)))
    assert keys(scan(tmp_path / "under")) == ["proxmox-ve/9.1-1"]
    directory = version(tmp_path / "over", "proxmox-ve", "9.1", "1")
    (directory / METADATA).write_bytes(data + b" " * (MAX_METADATA_BYTES + 1 - len(data)))
    assert scan(tmp_path / "over").problems == (("proxmox-ve/9.1-1", f"{METADATA} is too large"),)


def set_key(key: str, value: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document[key] = value

    return edit


def drop_key(key: str) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        del document[key]

    return edit


WRONG_TYPES: list[tuple[str, Edit]] = [
    ("format text", set_key("format", "1")),
    ("format true", set_key("format", True)),
    ("no product", drop_key("product")),
    ("product number", set_key("product", 5)),
    ("product_name number", set_key("product_name", 5)),
    ("product_name blank", set_key("product_name", " \n\t ")),
    ("no product_name", drop_key("product_name")),
    ("release number", set_key("release", 9.1)),
    ("iso_release null", set_key("iso_release", None)),
    ("no layout", drop_key("layout")),
    ("kernel number", set_key("kernel", 5)),
    ("no kernel", drop_key("kernel")),
    ("files list", set_key("files", ["vmlinuz", "initrd"])),
    ("no files", drop_key("files")),
    ("files entry text", set_key("files", {"vmlinuz": "x", "initrd": "y"})),
    ("initrds text", set_key("initrds", "initrd")),
    ("initrds number", set_key("initrds", 5)),
    ("initrds true", set_key("initrds", True)),
    ("initrds object", set_key("initrds", {"file": "initrd"})),
    ("initrds empty", set_key("initrds", [])),
    ("no initrds", drop_key("initrds")),
    ("initrd entry text", set_key("initrds", ["initrd"])),
    ("initrd file number", set_key("initrds", [{"file": 5}])),
    ("initrd without file", set_key("initrds", [{"name": "initrd"}])),
    ("initrd name number", set_key("initrds", [{"file": "initrd", "name": 5}])),
    ("kernel_cmdline number", set_key("kernel_cmdline", 5)),
    ("kernel_cmdline list", set_key("kernel_cmdline", ["quiet"])),
]


@pytest.mark.parametrize("edit", [e for _, e in WRONG_TYPES], ids=[i for i, _ in WRONG_TYPES])
def test_wrong_types(tmp_path: Path, edit: Edit) -> None:
    """
    A key missing or of the wrong type makes the version invalid: reported, not
    listed, and the scan goes on.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", edit=edit)
    assert problem_of(tmp_path).startswith(METADATA)


UNSAFE_NAMES = [
    "../vmlinuz",
    "sub/../vmlinuz",
    "..",
    "sub/vmlinuz",
    "vm linuz",
    'vm"linuz',
    "vm'linuz",
    "vm$linuz",
    "vm${x}",
    "vm{linuz}",
    "vm\nlinuz",
    "vmlinuz\n",
    "vm\\linuz",
    ".vmlinuz",
    "",
    "v" * 65,
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_kernel_name(tmp_path: Path, name: str) -> None:
    """
    A kernel name that could escape the version's directory or the script line it
    goes into is refused, even when such a file exists with the described size.
    """
    data = LAYOUT_FILES["combined"]["vmlinuz"]

    def edit(document: dict[str, Any]) -> None:
        document["kernel"] = name
        document["files"][name] = {"size": len(data)}

    directory = version(tmp_path, "proxmox-ve", "9.1", "1", edit=edit)
    if name == "../vmlinuz":
        (directory.parent / "vmlinuz").write_bytes(data)
    assert problem_of(tmp_path).startswith(METADATA)


def test_absolute_kernel_name(tmp_path: Path) -> None:
    """
    An absolute kernel path is refused even though the file it names exists with
    the described size.
    """
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")

    def edit(document: dict[str, Any]) -> None:
        document["kernel"] = str(outside)
        document["files"][str(outside)] = {"size": 6}

    version(tmp_path / "assets", "proxmox-ve", "9.1", "1", edit=edit)
    catalogue = scan(tmp_path / "assets")
    assert catalogue.assets == ()
    assert catalogue.problems == (("proxmox-ve/9.1-1", f"{METADATA} has no valid 'kernel'"),)


@pytest.mark.parametrize("name", [*UNSAFE_NAMES, "/etc/passwd"])
def test_unsafe_initrd_file(tmp_path: Path, name: str) -> None:
    """
    An initrd file name that is not a plain, safe name is refused.
    """

    def edit(document: dict[str, Any]) -> None:
        document["initrds"] = [{"file": name}]
        document["files"][name] = {"size": 1}

    version(tmp_path, "proxmox-ve", "9.1", "1", edit=edit)
    assert problem_of(tmp_path).startswith(METADATA)


@pytest.mark.parametrize("name", [*UNSAFE_NAMES, "/etc/passwd"])
def test_unsafe_initrd_name(tmp_path: Path, name: str) -> None:
    """
    The name an initrd gets inside the initramfs goes on a script line: it must be
    safe too.
    """
    version(
        tmp_path,
        "proxmox-ve",
        "9.1",
        "1",
        layout="named",
        edit=set_key("initrds", [{"file": "initrd.img"}, {"file": "proxmox.iso", "name": name}]),
    )
    assert problem_of(tmp_path) == f"{METADATA} has an invalid initrd name"


@pytest.mark.parametrize("field", ["product", "release", "iso_release", "layout"])
@pytest.mark.parametrize("value", ["9.1 1", "9.1/1", "${x}", "a\nb", "", ".hidden", "a'b"])
def test_unsafe_identity(tmp_path: Path, field: str, value: str) -> None:
    """
    Identity fields that end up in names and menu text must be safe names.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", edit=set_key(field, value))
    assert problem_of(tmp_path) == f"{METADATA} has no valid {field!r}"


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet ${root-password}",
        "quiet\nshell",
        "quiet ; shell",
        "quiet || shell",
        'quiet "x"',
        "quiet  splash",
        " quiet",
        "quiet ",
        "quiet\\",
    ],
)
def test_unsafe_kernel_cmdline(tmp_path: Path, cmdline: str) -> None:
    """
    A kernel command line with anything iPXE would expand or split on is refused.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", edit=set_key("kernel_cmdline", cmdline))
    assert problem_of(tmp_path) == f"{METADATA} has an unsafe kernel command line"


def test_no_kernel_cmdline(tmp_path: Path) -> None:
    """
    A version without a kernel command line is served with an empty one.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", edit=drop_key("kernel_cmdline"))
    [asset] = scan(tmp_path).assets
    assert asset.kernel_cmdline == ""


@pytest.mark.parametrize("missing", ["vmlinuz", "initrd"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    """
    A version whose kernel or initrd is not on disk is reported, not listed.
    """
    directory = version(tmp_path, "proxmox-ve", "9.1", "1")
    (directory / missing).unlink()
    assert problem_of(tmp_path) == f"{missing} is missing"


def test_undescribed_file(tmp_path: Path) -> None:
    """
    A file that C{asset.json} names but does not describe under C{files} is refused.
    """

    def edit(document: dict[str, Any]) -> None:
        del document["files"]["initrd"]

    version(tmp_path, "proxmox-ve", "9.1", "1", edit=edit)
    assert problem_of(tmp_path) == f"{METADATA} does not describe initrd"


def test_wrong_size(tmp_path: Path) -> None:
    """
    A file whose size differs from the described one (still being written, or
    replaced) is refused.
    """
    directory = version(tmp_path, "proxmox-ve", "9.1", "1")
    size = (directory / "initrd").stat().st_size
    with open(directory / "initrd", "ab") as f:
        f.write(b"more")
    assert problem_of(tmp_path) == f"initrd is {size + 4} bytes, {METADATA} says {size}"


def test_dangling_version_link(tmp_path: Path) -> None:
    """
    A version "directory" that is a dangling link is skipped like any non-directory.
    """
    version(tmp_path, "proxmox-ve", "8.4", "1")
    os.symlink(tmp_path / "nowhere", tmp_path / "proxmox-ve" / "9.1-1")
    catalogue = scan(tmp_path)
    assert keys(catalogue) == ["proxmox-ve/8.4-1"]
    assert catalogue.problems == ()


def test_product_name_normalised(tmp_path: Path) -> None:
    """
    The long name is free text: its white space is collapsed and it is cut to 80
    characters (menus make it safe to show).
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", product_name="  Proxmox\n\tVirtual   Environment ")
    version(tmp_path, "proxmox-ve", "9.2", "1", product_name="P" * 200)
    assert [a.product_name for a in scan(tmp_path).assets] == [
        "P" * 80,
        "Proxmox Virtual Environment",
    ]


def test_problems_in_order(tmp_path: Path) -> None:
    """
    Every invalid version is reported once, with its directory, in name order.
    """
    version(tmp_path, "proxmox-ve", "9.1", "1", edit=drop_key("kernel"))
    version(tmp_path, "proxmox-ve", "9.0", "1", edit=set_key("format", 2))
    version(tmp_path, "pbs", "4.0", "1", edit=drop_key("files"))
    assert scan(tmp_path).problems == (
        ("pbs/4.0-1", f"{METADATA} lists no files"),
        ("proxmox-ve/9.0-1", f"{METADATA} is not format 1"),
        ("proxmox-ve/9.1-1", f"{METADATA} has no valid 'kernel'"),
    )
