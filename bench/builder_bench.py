"""
The builder benchmark: pxe-pilot-builder against a plain curl download of the same URL
(and the same download synced to disk, as the builder syncs its assets before
publishing them) and against the original approach (download, prepare the ISO with
xorriso, unpack the initrd, add the ISO, repack with zstd -19), in one run, from a
synthetic Proxmox-like ISO served by nginx on loopback. Prints wall times, CPU times,
peak memory and ratios.

    .venv/bin/python bench/builder_bench.py [--size-mb 1500] [--reps 3] [--skip-original]
        [--other-builder DIR] [--scratch DIR]

C{--scratch /dev/shm} writes every approach's output to memory instead of the disk:
the builder makes its assets durable before it publishes them (fsync), curl does not,
so on a disk slower than loopback HTTP the sync, not the builder, sets the ratio to
curl; in memory the ratio is the builder's own cost.

C{--other-builder} also times the builder of another source tree (e.g. one unpacked with
C{git archive}), run with this virtualenv's Python, for a before/after in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder import cpio  # noqa: E402
from builder.testing import proxmox_files  # noqa: E402

BUILDER = ROOT / ".venv" / "bin" / "pxe-pilot-builder"
WORK = Path(os.environ.get("BENCH_WORK", f"{tempfile.gettempdir()}/pxe-bench-{os.getuid()}"))


def initrd_archive(size: int) -> bytes:
    """
    A gzip-compressed newc initramfs with an /init and a blob, like a real one.
    """
    init = b"#!/bin/sh\necho init\n"
    blob = os.urandom(size)
    archive = b""
    for name, data in (("init", init), ("blob", blob)):
        archive += (
            cpio.header(name, len(data), mode=0o100755) + data + cpio.data_padding(len(data))
        )
    return gzip.compress(archive + cpio.trailer(), compresslevel=1)


def make_source(size_mb: int) -> Path:
    """
    A synthetic ISO laid out by xorriso, as Proxmox's are: the boot files first, the
    squashfs images after them.
    """
    directory = WORK / "builder"
    directory.mkdir(parents=True, exist_ok=True)
    iso = directory / "proxmox-ve_9.1-1.iso"
    stamp = directory / f"made-{size_mb}"
    if iso.exists() and stamp.exists():
        return directory
    print(f"making a {size_mb} MB synthetic ISO in {directory}", file=sys.stderr)
    tree = directory / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    for name, content in proxmox_files(initrd=initrd_archive(80 << 20)).items():
        path = tree / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with open(tree / "pve-base.squashfs", "wb") as f:
        for _ in range(size_mb - 100):
            f.write(os.urandom(1 << 20))
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "PVE",
            "-o",
            str(iso),
            str(tree),
        ],
        check=True,
    )
    shutil.rmtree(tree)
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    (directory / "SHA256SUMS").write_text(f"{digest}  {iso.name}\n")
    for old in directory.glob("made-*"):
        old.unlink()
    stamp.write_text("")
    return directory


def nginx(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    conf = directory / "nginx.conf"
    port = 18000 + os.getpid() % 1000
    conf.write_text(
        f"worker_processes auto; daemon off; pid {directory}/nginx.pid;\n"
        f"error_log {directory}/nginx-error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{port}; "
        f"root {directory}; }} }}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(conf)])
    time.sleep(0.5)
    return process, f"http://127.0.0.1:{port}/proxmox-ve_9.1-1.iso"


Run = tuple[float, float, int]


def timed(
    command: list[str],
    cwd: Path | None = None,
    shell: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    """
    Wall seconds, CPU seconds (user and system) and peak RSS (KB, from /usr/bin/time)
    of a command.
    """
    with tempfile.NamedTemporaryFile() as report:
        wrapped = ["/usr/bin/time", "-f", "%U %S %M", "-o", report.name]
        wrapped += ["bash", "-c", command[0]] if shell else command
        start = time.monotonic()
        subprocess.run(
            wrapped,
            check=True,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - start
        user, system, peak = re.findall(r"[\d.]+", Path(report.name).read_text())[-3:]
    return seconds, float(user) + float(system), int(peak)


def builder_command(iso: list[str], output: str, source: Path | None) -> list[str]:
    """
    A build from C{iso} (C{--iso-url URL} or C{--iso PATH}), with this tree's builder or
    the one in C{source}.
    """
    arguments = [*iso, "--answer-url", "http://192.0.2.10:8080/answer", "--output", output]
    if source is None:
        return [str(BUILDER), *arguments]
    run = "import sys; from builder.cli import main; sys.argv[0] = 'pxe-pilot-builder'; main()"
    return [sys.executable, "-c", run, *arguments]


def original(url: str, scratch: Path) -> str:
    return (
        f"set -e; cd {scratch}; curl -s -o src.iso {url}; cp src.iso prepared.iso; "
        'printf \'mode = "http"\\n[http]\\nurl = "http://192.0.2.10:8080/answer"\\n\' '
        "> mode.toml; "
        "xorriso -dev prepared.iso -boot_image any keep -map mode.toml "
        "/auto-installer-mode.toml >/dev/null 2>&1; "
        "xorriso -osirrox on -indev prepared.iso -extract /boot/linux26 vmlinuz "
        "-extract /boot/initrd.img initrd.img >/dev/null 2>&1; "
        "mkdir tree; cd tree; zcat ../initrd.img | cpio -idm 2>/dev/null; "
        "mv ../prepared.iso proxmox.iso; find . | cpio -o -H newc 2>/dev/null "
        "| zstd -19 -T0 -q > ../initrd"
    )


def main() -> int:
    options = argparse.ArgumentParser()
    options.add_argument("--size-mb", type=int, default=1500)
    options.add_argument("--reps", type=int, default=3)
    options.add_argument("--skip-original", action="store_true")
    options.add_argument("--other-builder", type=Path, metavar="DIR")
    options.add_argument(
        "--scratch", type=Path, metavar="DIR", help="where the outputs go (default: the disk)"
    )
    options.add_argument(
        "--local", action="store_true", help="also build from the ISO file, against cp"
    )
    args = options.parse_args()
    for tool in ["nginx", "curl", "xorriso", "zstd", "cpio"]:
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install nginx-light curl xorriso zstd cpio")
            return 1
    source = make_source(args.size_mb)
    server, url = nginx(source)
    other = f"builder ({args.other_builder})" if args.other_builder else None
    iso = source / "proxmox-ve_9.1-1.iso"
    environment = dict(os.environ, PYTHONPATH=str(args.other_builder))
    # Each approach: its name, its command, whether it is a shell line, its environment.
    approaches: list[tuple[str, list[str], bool, dict[str, str] | None]] = [
        ("curl", ["curl", "-s", "-o", "SCRATCH/x.iso", url], False, None),
        ("curl + sync", [f"curl -s -o SCRATCH/x.iso {url} && sync SCRATCH/x.iso"], True, None),
        ("builder", builder_command(["--iso-url", url], "SCRATCH", None), False, None),
    ]
    if other is not None:
        command = builder_command(["--iso-url", url], "SCRATCH", args.other_builder)
        approaches.append((other, command, False, environment))
    if args.local:
        approaches += [
            ("cp + sync", [f"cp {iso} SCRATCH/x.iso && sync SCRATCH/x.iso"], True, None),
            ("builder --iso", builder_command(["--iso", str(iso)], "SCRATCH", None), False, None),
        ]
        if other is not None:
            command = builder_command(["--iso", str(iso)], "SCRATCH", args.other_builder)
            approaches.append((f"{other} --iso", command, False, environment))

    rows: dict[str, list[Run]] = {name: [] for name, *_ in approaches}
    rows["original"] = []
    try:
        for rep in range(args.reps):
            # A different order in each round: on a shared machine (a virtual one
            # especially), whatever ran just before (its write-back, the page cache it
            # freed) weighs on the next run.
            order = list(approaches)
            random.Random(rep).shuffle(order)  # noqa: S311 (an order, not a secret)
            for name, command, shell, env in order:
                with tempfile.TemporaryDirectory(dir=args.scratch or WORK) as scratch:
                    line = [part.replace("SCRATCH", scratch) for part in command]
                    rows[name].append(timed(line, shell=shell, env=env))
                # Nothing of one run's write-back may slow the next.
                subprocess.run(["sync"], check=True)
        if not args.skip_original:
            with tempfile.TemporaryDirectory(dir=WORK) as scratch:
                rows["original"].append(timed([original(url, Path(scratch))], shell=True))
    finally:
        server.terminate()
        server.wait()
    written_to = args.scratch or WORK
    print(f"\n{args.size_mb} MB ISO over loopback HTTP, median of {args.reps}, to {written_to}:\n")
    print("| approach | wall s (median) | all runs | CPU s (median) | peak RSS MB |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, runs in rows.items():
        if not runs:
            continue
        medians[name] = statistics.median(r[0] for r in runs)
        print(
            f"| {name} | {medians[name]:.2f} | {' '.join(f'{r[0]:.2f}' for r in runs)} | "
            f"{statistics.median(r[1] for r in runs):.2f} | {max(r[2] for r in runs) / 1024:.0f} |"
        )
    builder_peak = max(r[2] for r in rows["builder"]) / 1024
    ratio = medians["builder"] / medians["curl"]
    print(f"\nbuilder / curl download: {ratio:.2f} (target at most 1.3)")
    print(f"builder / curl download and sync: {medians['builder'] / medians['curl + sync']:.2f}")
    if other is not None:
        print(f"{other} / curl download: {medians[other] / medians['curl']:.2f}")
        print(f"builder / {other}: {medians['builder'] / medians[other]:.2f}")
    if args.local:
        print(f"builder --iso / cp + sync: {medians['builder --iso'] / medians['cp + sync']:.2f}")
        if other is not None:
            ratio_local = medians["builder --iso"] / medians[f"{other} --iso"]
            print(f"builder --iso / {other} --iso: {ratio_local:.2f}")
    if "original" in medians:
        print(f"builder / original approach: {medians['builder'] / medians['original']:.3f}")
    print(f"builder peak memory: {builder_peak:.0f} MB (target under 150)")
    return 0 if ratio <= 1.3 and builder_peak < 150 else 1


if __name__ == "__main__":
    sys.exit(main())
