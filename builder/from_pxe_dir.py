"""
C{pxe-pilot-builder --from-pxe-dir DIR}: import what C{proxmox-auto-install-assistant
prepare-iso --pxe} wrote (C{vmlinuz}, C{initrd.img}, the prepared ISO) as a version of
the assets directory. Checked first (a Proxmox ISO prepared for automatic installation,
its product and version read from its C{/.cd-info}), then written in a staging
directory, hashed, described in C{asset.json} and renamed into place, as a build is.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from builder import cpio
from builder.cdinfo import NotProxmox, ProductInfo, product_info
from builder.iso9660 import IsoError
from builder.isofile import root_file
from builder.pipeline import BuildError
from builder.publish import (
    asset_metadata,
    check_target,
    create_output,
    make_staging,
    publish,
    remove_created,
    target_of,
    write_metadata,
)
from builder.secure_boot import add_to_asset, pieces_from_iso_file, pieces_from_sources

KERNEL = "vmlinuz"
INITRD = "initrd.img"
ISO_MEMBER = "proxmox.iso"
CHUNK = 1 << 20

Step = Callable[[str], None]


@frozen
class PxeDirectory:
    """
    A checked C{prepare-iso --pxe} directory.

    @ivar iso: The prepared ISO's file name.
    @ivar mode: The ISO's C{/auto-installer-mode.toml}, parsed.
    """

    path: Path
    iso: str
    info: ProductInfo
    mode: dict[str, Any]


def check(directory: Path) -> PxeDirectory:
    """
    @raise BuildError: when C{directory} is not what C{prepare-iso --pxe} writes for
        an automatic installation over HTTP.
    """
    try:
        names = {e.name for e in os.scandir(directory) if e.is_file()}
    except OSError as e:
        raise BuildError(f"cannot read {directory}: {e.strerror}") from None
    missing = [n for n in (KERNEL, INITRD) if n not in names]
    isos = sorted(n for n in names if n.endswith(".iso") and not n.startswith("."))
    if missing or len(isos) != 1:
        found = f"{len(isos)} .iso files" if isos else "no .iso file"
        lacking = f", no {' or '.join(missing)}" if missing else ""
        raise BuildError(
            f"{directory} is not a directory made by prepare-iso --pxe (vmlinuz, initrd.img "
            f"and one prepared ISO): {found}{lacking}"
        )
    iso = isos[0]
    try:
        cd_info = root_file(directory / iso, ".cd-info")
        if cd_info is None:
            raise BuildError(f"{iso} has no /.cd-info: not a Proxmox ISO")
        info = product_info(cd_info)
        mode_file = root_file(directory / iso, "auto-installer-mode.toml")
    except (IsoError, NotProxmox) as e:
        raise BuildError(f"{iso}: {e}") from None
    except OSError as e:
        raise BuildError(f"cannot read {directory / iso}: {e.strerror}") from None
    if mode_file is None:
        raise BuildError(
            f"{iso} is not prepared for automatic installation (no /auto-installer-mode.toml): "
            "run prepare-iso with --fetch-from http"
        )
    try:
        mode = tomllib.loads(mode_file.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise BuildError(f"{iso}: /auto-installer-mode.toml is not valid TOML: {e}") from None
    http = mode.get("http")
    if mode.get("mode") != "http" or not isinstance(http, dict) or "url" not in http:
        raise BuildError(
            f"{iso} fetches its answer from {mode.get('mode')!r}, not from an answer URL: "
            "pxe-pilot serves answers over HTTP (prepare-iso --fetch-from http)"
        )
    with open(directory / INITRD, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"\x1f\x8b" and magic != b"\x28\xb5\x2f\xfd":
        raise BuildError(f"{INITRD} is neither gzip nor zstd: not an installer initrd")
    return PxeDirectory(directory, iso, info, mode)


class _Hashed:
    """
    An output file written in pieces, hashed on the way.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def copy(self, source: Path, also: Iterable[Any] = ()) -> None:
        with open(source, "rb") as f:
            while chunk := f.read(CHUNK):
                self.write(chunk)
                for other in also:
                    other.update(chunk)

    def finish(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"size": self.size, "sha256": self._hash.hexdigest()}


def write_assets(found: PxeDirectory, staging: Path, layout: str) -> tuple[dict[str, Any], Any]:
    """
    The kernel and the initrd(s) of C{layout} in C{staging}: their sizes and hashes,
    and the ISO's hash.
    """
    files = {}
    iso_hash = hashlib.sha256()
    kernel = _Hashed(staging / KERNEL)
    kernel.copy(found.path / KERNEL)
    files[KERNEL] = kernel.finish()
    iso_path = found.path / found.iso
    if layout == "combined":
        initrd = _Hashed(staging / "initrd")
        initrd.copy(found.path / INITRD)
        iso_size = iso_path.stat().st_size
        initrd.write(b"\0" * (cpio.align4(initrd.size) - initrd.size))
        initrd.write(cpio.header(ISO_MEMBER, iso_size, mode=0o100444))
        initrd.copy(iso_path, also=[iso_hash])
        initrd.write(cpio.data_padding(iso_size) + cpio.trailer())
        files["initrd"] = initrd.finish()
    else:
        copy = _Hashed(staging / INITRD)
        copy.copy(found.path / INITRD)
        files[INITRD] = copy.finish()
        image = _Hashed(staging / ISO_MEMBER)
        image.copy(iso_path, also=[iso_hash])
        files[ISO_MEMBER] = image.finish()
    return files, iso_hash


def metadata(
    found: PxeDirectory,
    layout: str,
    files: dict[str, Any],
    iso_sha256: str,
    built: datetime.datetime,
    secure_boot: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    The content of C{asset.json}: as a build's, the answer settings read from the ISO.
    """
    http = found.mode["http"]
    pinned = http.get("cert_fingerprint")
    source = {
        "url": None,
        "file": found.iso,
        "size": (found.path / found.iso).stat().st_size,
        "sha256": iso_sha256,
        "verification": "prepare-iso --pxe directory",
    }
    # The token stays out: this file is served to anyone with the assets.
    answer = {
        "url": http.get("url") if isinstance(http.get("url"), str) else None,
        "cert_fingerprint": pinned if isinstance(pinned, str) and pinned else None,
        "pinned_from": "iso" if isinstance(pinned, str) and pinned else None,
        "token": bool(http.get("token")),
    }
    return asset_metadata(found.info, layout, source, answer, files, built, secure_boot)


def import_pxe_dir(
    directory: Path,
    output: Path,
    layout: str,
    step: Step,
    product: str | None = None,
    version_dir: str | None = None,
    force: bool = False,
    now: datetime.datetime | None = None,
    secure_boot_from: Sequence[Path] = (),
) -> Path:
    """
    Import a C{prepare-iso --pxe} directory into C{output}; the version's directory.

    @raise BuildError: when it is not one, or cannot be published; nothing is left
        behind in C{output} then.
    """
    found = check(directory)
    info = found.info
    target = target_of(output, product or info.iso_name, version_dir or info.version)
    check_target(target, force)
    given = pieces_from_sources(secure_boot_from)
    step(f"{info.product_name} {info.version} prepared for {found.mode['http'].get('url')}")
    created = create_output(output)
    staging: Path | None = None
    try:
        staging = make_staging(output)
        step(f"copying {found.iso} ({layout} layout)")
        files, iso_hash = write_assets(found, staging, layout)
        iso_pieces = pieces_from_iso_file(found.path / found.iso)
        signed, signed_files = add_to_asset(staging, iso_pieces, given, step)
        files.update(signed_files)
        built = now or datetime.datetime.now(datetime.UTC)
        write_metadata(
            staging, metadata(found, layout, files, iso_hash.hexdigest(), built, signed)
        )
        publish(staging, target, force)
        staging = None
        created = []
    except OSError as e:
        raise BuildError(f"cannot write the assets: {e.strerror or e}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        remove_created(created)
    step(f"published {info.product_name} {info.version} in {target}")
    return target
