"""
Publishing a build: everything is written into a hidden staging directory next to its
target and renamed into place at the end, so the server never lists a half-written
version and a crash leaves nothing it would list.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from builder.cdinfo import ProductInfo
from builder.pipeline import BuildError
from pxepilot._version import __version__

# The installer's own command line from the ISO's boot menu, plus the automatic
# installer's switch.
KERNEL_CMDLINE = "ramdisk_size=16777216 rw quiet splash=silent proxmox-start-auto-installer"

STAGING_PREFIX = ".build-"
REPLACED_PREFIX = ".replaced-"
METADATA = "asset.json"


def create_output(output: Path) -> list[Path]:
    """
    Create C{output} and whichever of its parents are missing.

    @return: The directories created, deepest first, for L{remove_created} to take back
        after a failure.
    @raise BuildError: when C{output} cannot be created.
    """
    missing = []
    for directory in (output, *output.parents):
        if directory.exists() or directory.is_symlink():
            break
        missing.append(directory)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_created(missing)
        raise BuildError(f"cannot create the output directory {output}: {e.strerror}") from None
    return missing


def remove_created(directories: list[Path]) -> None:
    """
    Remove the directories a failed build created, deepest first, as far as they are
    empty: anything another process put there meanwhile stays.
    """
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def make_staging(output: Path) -> Path:
    """
    A new, hidden staging directory in C{output} (created if need be). Staging
    directories of builds that are no longer running are removed first.

    @raise BuildError: when C{output} cannot be written.
    """
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create the output directory {output}: {e.strerror}") from None
    if not output.is_dir():
        raise BuildError(f"{output} is not a directory")
    remove_stale(output)
    staging = output / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(mode=0o755)
        probe = staging / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            staging.rmdir()
        raise BuildError(f"cannot write to the output directory {output}: {e.strerror}") from None
    return staging


def remove_stale(output: Path) -> None:
    """
    Remove staging directories left by builds that were killed.
    """
    for path in output.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def target_of(output: Path, product: str, version: str) -> Path:
    return output / product / version


def check_target(target: Path, force: bool) -> None:
    """
    @raise BuildError: when the version exists and may not be replaced.
    """
    if target.exists() and not force:
        raise BuildError(f"{target} already exists; use --force to replace it")


def asset_metadata(
    info: ProductInfo,
    layout: str,
    source: dict[str, Any],
    answer: dict[str, Any],
    files: dict[str, Any],
    built: datetime.datetime,
    secure_boot: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    The content of C{asset.json}, for a build as for an imported C{prepare-iso --pxe}
    directory: the product, the files of C{layout}, where the ISO came from
    (C{source}), the answer settings (C{answer}) and the signed boot pieces, if any
    (C{secure_boot}, see L{builder.secure_boot}). pxe-pilot serves it to anyone with
    the assets, so neither may hold a path of the build machine or a secret.
    """
    initrds: list[dict[str, str]]
    if layout == "combined":
        initrds = [{"file": "initrd"}]
    else:
        initrds = [{"file": "initrd.img"}, {"file": "proxmox.iso", "name": "proxmox.iso"}]
    metadata = {
        "format": 1,
        "product": info.product,
        "product_name": info.product_name,
        "iso_name": info.iso_name,
        "release": info.release,
        "iso_release": info.iso_release,
        "version": info.version,
        "layout": layout,
        "kernel": "vmlinuz",
        "initrds": initrds,
        "kernel_cmdline": KERNEL_CMDLINE,
        "source": source,
        "answer": answer,
        "files": dict(sorted(files.items())),
        "built_at": built.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "builder": f"pxe-pilot-builder {__version__}",
    }
    if secure_boot is not None:
        metadata["secure_boot"] = secure_boot
    return metadata


def write_metadata(staging: Path, metadata: dict[str, Any]) -> None:
    data = json.dumps(metadata, indent=2, sort_keys=False).encode() + b"\n"
    path = staging / METADATA
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publish(staging: Path, target: Path, force: bool) -> None:
    """
    Rename the staging directory to C{target}; with C{force}, the version it replaces
    is moved aside first and removed after.

    @raise BuildError: when the target exists and C{force} is not given.
    """
    check_target(target, force)
    created = [] if target.parent.exists() else [target.parent]
    target.parent.mkdir(parents=True, exist_ok=True)
    _fsync_dir(staging)
    replaced = None
    if target.exists():
        replaced = target.parent / f"{REPLACED_PREFIX}{target.name}-{secrets.token_hex(4)}"
        target.rename(replaced)
    try:
        staging.rename(target)
    except OSError as e:
        if replaced is not None:
            replaced.rename(target)
        remove_created(created)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise BuildError(f"{target} appeared during the build; use --force") from None
        raise
    _fsync_dir(target.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
