"""
The boot storm: what a rack does at power-on, in one run on loopback. N simulated
machines, half BIOS and half UEFI, each from a loopback address of its own, all at
once: the iPXE binary over TFTP (C{undionly.kpxe} or C{ipxe.efi}, Debian's), then
C{/boot.ipxe}, the menu its chain line names, the kernel and initrd its default entry
loads (a 1 MiB kernel and a 64 MiB initrd), C{POST /answer} with an installer's request
for its MACs and, after a pause, C{POST /webhook} with its installation report.

The same TFTP and HTTP phases run against a peer stack: dnsmasq's TFTP server and nginx
serving static copies of the same scripts and the asset (the answer phases go to
pxe-pilot only). Prints, for each N, the time until all are answered, each phase's p50
and p99, the failures, pxe-pilot's peak memory and CPU, and the ratios pxe-pilot/peer.

    .venv/bin/python bench/boot_storm.py [--machines 20,100] [--asset-mib 64]
        [--pause 2] [--log-level info] [--no-peer] [--no-netns] [--keep]

As root it runs in a private network namespace (C{unshare --net}), where dnsmasq can
have TFTP's port 69, which it cannot be told to leave.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import pwd
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from asyncio.subprocess import PIPE
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, field, frozen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import VENV_BIN, Server, free_port, percentile  # noqa: E402
from bench.https_bench import cpu_seconds, machine_cpu_seconds, nginx_user  # noqa: E402

PHASES = ("tftp", "boot.ipxe", "menu.ipxe", "asset", "answer", "webhook")
FIXTURES = ROOT / "tests" / "fixtures"
ANSWER_FIXTURE = FIXTURES / "installer-post-9.2.json"
WEBHOOK_FIXTURE = FIXTURES / "post-install-webhook-9.1.json"
# Debian 12's ipxe package is 1.0.0+git-20190125; iPXE sends its version as User-Agent.
USER_AGENT = "iPXE/1.0.0+"
# What iPXE asks for, and what curl asks for too when told.
BLKSIZE = "1468"
VERSION = "9.2-1"
ASSET = f"proxmox-ve/{VERSION}"
KERNEL_BYTES = 1 << 20
# A transfer slower than this is a failure: a stalled one would otherwise hang the run.
TRANSFER_TIMEOUT = "600"
IN_NETNS = "PXE_PILOT_BOOT_STORM_NETNS"
# Two 16 GiB DIMMs as iPXE's boot script gathers them from SMBIOS (size word 0x4000,
# little-endian, and an empty extended size): Debian's iPXE has no ${memsize}.
MEMORY_DEVICES = "0040-00000000.0040-00000000."
WRITE_OUT = "%{http_code} %{size_download} %{time_total}\n"
DEFAULT_FQDN = 'fqdn = { source = "from-dhcp", domain = "example.com" }'
# A version as pxe-pilot-builder publishes it (builder/publish.py), but for its files.
ASSET_JSON = (
    '{"format": 1, "product": "pve", "product_name": "Proxmox VE", "iso_name": "proxmox-ve",'
    ' "release": "9.2", "iso_release": "1", "layout": "combined", "kernel": "vmlinuz",'
    ' "initrds": [{"file": "initrd"}], "kernel_cmdline": "ramdisk_size=16777216 rw quiet'
    ' splash=silent proxmox-start-auto-installer"}'
)
# The settings iPXE expands in the boot script's chain line.
_SETTING = re.compile(r"\$\{([^}:]+)(?::[a-z0-9]+)?\}")


@frozen
class Machine:
    """
    One simulated machine, from a loopback address of its own as each in a rack has:
    even ones boot BIOS, odd ones UEFI.
    """

    index: int
    mac: str
    address: str
    efi: bool
    fqdn: str
    serial: str
    uuid: str

    @property
    def boot_file(self) -> str:
        return "ipxe.efi" if self.efi else "undionly.kpxe"

    def settings(self) -> dict[str, str]:
        """
        What iPXE fills in for the boot script's menu URL on this machine.
        """
        platform, arch = ("efi", "x86_64") if self.efi else ("pcbios", "i386")
        return {
            **{"netX/mac": self.mac, "platform": platform, "buildarch": arch, "memsize": ""},
            **{"memdevs": MEMORY_DEVICES, "uuid": self.uuid, "serial": self.serial},
            "product": "PowerEdge%20R650",
        }

    def bodies(self) -> tuple[bytes, bytes]:
        """
        The 9.2 installer's request for an answer, and the installation report: its
        NICs' MACs (the first boots and is the management one), serial number and UUID.
        """
        request = json.loads(ANSWER_FIXTURE.read_bytes())
        report = json.loads(WEBHOOK_FIXTURE.read_bytes())
        report["fqdn"] = self.fqdn
        for body, nics in ((request, "network_interfaces"), (report, "network-interfaces")):
            for port, interface in enumerate(body[nics]):
                interface["mac"] = f"{self.mac[:-2]}{port:02x}"
            body["dmi"]["system"].update(serial=self.serial, uuid=self.uuid)
        return json.dumps(request).encode(), json.dumps(report).encode()


def machine(index: int) -> Machine:
    return Machine(
        index,
        mac=f"02:5b:{index >> 8:02x}:{index & 0xFF:02x}:00:00",
        address=f"127.1.{index // 250}.{1 + index % 250}",
        efi=index % 2 == 1,
        fqdn=f"node-{index:03d}.storm.example",
        serial=f"STORM{index:05d}",
        uuid=f"5b5b0000-0000-4000-8000-{index:012x}",
    )


@frozen
class Layout:
    """
    The answers, assets and TFTP root of a run, and what each download must hold.

    @ivar digests: The SHA-256 of each TFTP file, by name.
    @ivar sizes: The size of each asset file, by URL path.
    """

    work: Path
    answers: Path
    assets: Path
    tftp_root: Path
    digests: dict[str, str]
    sizes: dict[str, int]


def prepare(work: Path, machines: int, asset_mib: int, ipxe: Path) -> Layout:
    """
    The files of a run under C{work}: the example C{default.toml} and a host file for
    every machine (naming it), a published Proxmox VE 9.2 asset, and a TFTP root with
    Debian's iPXE binaries.
    """
    answers = work / "answers"
    (answers / "hosts").mkdir(parents=True)
    default = (ROOT / "examples" / "answers" / "default.toml").read_text()
    if DEFAULT_FQDN not in default:
        raise RuntimeError(f"the example default.toml has no line {DEFAULT_FQDN!r} to replace")
    (answers / "default.toml").write_text(default)
    bodies = work / "bodies"
    bodies.mkdir()
    for each in map(machine, range(machines)):
        own = default.replace(DEFAULT_FQDN, f'fqdn = "{each.fqdn}"')
        (answers / "hosts" / f"{each.mac.replace(':', '-')}.toml").write_text(own)
        for name, body in zip(("answer", "webhook"), each.bodies(), strict=True):
            (bodies / f"{name}-{each.index}.json").write_bytes(body)
    assets = work / "assets"
    (assets / ASSET).mkdir(parents=True)
    files = {"vmlinuz": KERNEL_BYTES, "initrd": asset_mib << 20}
    block = os.urandom(1 << 20)
    for name, size in files.items():
        with open(assets / ASSET / name, "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
    metadata = {**json.loads(ASSET_JSON), "files": {k: {"size": v} for k, v in files.items()}}
    (assets / ASSET / "asset.json").write_text(json.dumps(metadata, indent=2) + "\n")
    tftp_root = work / "tftp"
    tftp_root.mkdir()
    digests = {}
    for name in ("undionly.kpxe", "ipxe.efi"):
        data = (ipxe / name).read_bytes()
        (tftp_root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    sizes = {f"/assets/{ASSET}/{name}": size for name, size in files.items()}
    return Layout(work, answers, assets, tftp_root, digests, sizes)


@frozen
class Target:
    """
    A stack to storm: where its TFTP and HTTP servers listen, the processes to measure,
    and whether it answers installers.
    """

    name: str
    tftp_port: int
    base: str
    pids: tuple[int, ...]
    answers: bool


@define
class Storm:
    """
    What one storm found.

    @ivar latencies: Seconds per request of each phase, as curl timed them.
    @ivar booted: Seconds from the start (C{start}) until each machine had its asset.
    @ivar answered: Seconds from the start until each machine had its answer.
    @ivar failures: The messages of the failures, by kind (a phase, or a phase's check).
    @ivar checks: What to verify once the clock has stopped: the kind, the machine, the
        file saved or URL fetched, and the SHA-256 it must have (TFTP), the size fetched
        (assets) or the host name the answer must name.
    """

    target: str
    machines: int
    latencies: dict[str, list[float]] = field(factory=lambda: {p: [] for p in PHASES})
    booted: list[float] = field(factory=list)
    answered: list[float] = field(factory=list)
    finished: list[float] = field(factory=list)
    failures: dict[str, list[str]] = field(factory=dict)
    checks: list[tuple[str, Machine, str, Any]] = field(factory=list)
    server_cpu: float = 0.0
    server_peak_kb: int = 0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    wall: float = 0.0
    start: float = 0.0

    def fail(self, kind: str, message: str) -> None:
        self.failures.setdefault(kind, []).append(message)

    def failed(self) -> int:
        return sum(map(len, self.failures.values()))

    def boot_wall(self) -> float:
        return max(self.booted) if self.booted else math.nan

    def answer_wall(self) -> float:
        return max(self.answered) if self.answered else math.nan

    def quantile(self, phase: str, fraction: float) -> float:
        return percentile(self.latencies[phase], fraction) if self.latencies[phase] else math.nan


class PhaseFailed(Exception):
    """
    A phase went wrong (C{kind}, C{message}): the machine goes no further, as a real one
    would stop there.
    """


async def curl(storm: Storm, phase: str, machine: Machine, args: list[str]) -> list[list[str]]:
    """
    Run curl from the machine's address; the fields its C{-w} wrote, one list per URL,
    the last of them its time, which counts as the phase's.

    @raise PhaseFailed: when curl fails.
    """
    command = ["curl", "-sS", "--interface", machine.address, "--max-time", TRANSFER_TIMEOUT]
    process = await asyncio.create_subprocess_exec(*command, *args, stdout=PIPE, stderr=PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise PhaseFailed(phase, f"curl exit {process.returncode}: {err.decode().strip()}")
    written = [line.split() for line in out.decode().splitlines()]
    storm.latencies[phase].append(sum(float(fields[-1]) for fields in written))
    return written


async def http(
    storm: Storm, phase: str, machine: Machine, urls: list[str], options: list[str]
) -> list[int]:
    """
    Fetch C{urls} as iPXE does, with curl's C{options} (its C{-o}s first); the size of
    each, whose status must be 200.
    """
    args = ["-A", USER_AGENT, *options, "-w", WRITE_OUT, *urls]
    written = await curl(storm, phase, machine, args)
    for url, (code, _, _) in zip(urls, written, strict=True):
        if code != "200":
            raise PhaseFailed(phase, f"HTTP {code} for {url}")
    return [int(size) for _, size, _ in written]


def menu_url(script: str, machine: Machine) -> str:
    """
    The URL the boot script's chain line fetches, expanded as iPXE would on the machine.
    """
    found = re.search(r"^chain --autofree (\S+menu\.ipxe\S*) \|\|", script, re.MULTILINE)
    if not script.startswith("#!ipxe") or found is None:
        raise PhaseFailed("boot.ipxe", f"no chain to the menu in {script[:60]!r}")
    settings = machine.settings()
    unknown = [name for name in _SETTING.findall(found[1]) if name not in settings]
    if unknown:
        raise PhaseFailed("boot.ipxe", f"iPXE settings the storm does not know: {unknown}")
    return _SETTING.sub(lambda m: settings[m[1]], found[1])


def asset_urls(menu: str) -> list[str]:
    """
    The kernel and initrd URLs of the menu's default entry, which must install.
    """
    found = re.search(r"^choose --default (\S+)", menu, re.MULTILINE)
    if not menu.startswith("#!ipxe") or found is None:
        raise PhaseFailed("menu.ipxe", f"no choice in {menu[:60]!r}")
    label = found[1]
    if not label.startswith("install-"):
        reason = re.search(r"^# pxe-pilot menu for [^:]*: (.*)$", menu, re.MULTILINE)
        why = reason[1] if reason else label
        raise PhaseFailed("menu.ipxe", f"the default is {label}, not an installation: {why}")
    entry = menu.split(f"\n:{label}\n", 1)[-1].split("\n\n", 1)[0]
    urls = re.findall(r"^(?:kernel|initrd) (\S+)", entry, re.MULTILINE)
    if len(urls) < 2:
        raise PhaseFailed("menu.ipxe", f"entry {label} loads no kernel and initrd")
    return urls


async def boot(
    machine: Machine, target: Target, layout: Layout, storm: Storm, work: Path, pause: float
) -> None:
    """
    One machine's boot, phase after phase, until one fails; what it fetched is left to
    verify once the clock has stopped.
    """
    start = storm.start
    file = machine.boot_file
    saved, script, menu, answer = (
        work / f"{machine.index}-{name}" for name in (file, "boot.ipxe", "menu.ipxe", "answer")
    )
    url = f"tftp://127.0.0.1:{target.tftp_port}/{file}"
    options = ["--tftp-blksize", BLKSIZE, "-o", str(saved), "-w", "%{time_total}\n", url]
    await curl(storm, "tftp", machine, options)
    storm.checks.append(("tftp verify", machine, str(saved), layout.digests[file]))
    await http(storm, "boot.ipxe", machine, [f"{target.base}boot.ipxe"], ["-o", str(script)])
    url = menu_url(script.read_text(errors="replace"), machine)
    await http(storm, "menu.ipxe", machine, [url], ["-o", str(menu)])
    urls = asset_urls(menu.read_text(errors="replace"))
    sizes = await http(storm, "asset", machine, urls, ["-o", "/dev/null"] * len(urls))
    storm.checks += [("asset verify", machine, u, n) for u, n in zip(urls, sizes, strict=True)]
    storm.booted.append(time.monotonic() - start)
    if not target.answers:
        return
    for phase, output in (("answer", str(answer)), ("webhook", "/dev/null")):
        body = layout.work / "bodies" / f"{phase}-{machine.index}.json"
        sent = ["-H", "Content-Type: application/json", "--data-binary", f"@{body}"]
        await http(storm, phase, machine, [f"{target.base}{phase}"], ["-o", output, *sent])
        if phase == "answer":
            storm.answered.append(time.monotonic() - start)
            storm.checks.append(("answer verify", machine, str(answer), machine.fqdn))
            await asyncio.sleep(pause)
    storm.finished.append(time.monotonic() - start)


def verify(storm: Storm, layout: Layout) -> None:
    """
    Check every download the storm left to check: TFTP files by SHA-256, assets by size,
    answers by the machine's own host name.
    """
    for kind, machine, where, expected in storm.checks:
        problem = None
        if kind == "tftp verify":
            digest = hashlib.sha256(Path(where).read_bytes()).hexdigest()
            if digest != expected:
                name = Path(where).name.split("-", 1)[1]
                problem = f"{name}: SHA-256 {digest[:12]}, not {expected[:12]}"
        elif kind == "asset verify":
            path = "/" + where.split("/", 3)[-1]
            if layout.sizes.get(path) != expected:
                problem = f"{path}: {expected} bytes, not {layout.sizes.get(path)}"
        else:
            try:
                served = tomllib.loads(Path(where).read_text()).get("global", {}).get("fqdn")
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                served = f"not TOML: {e}"
            if served != expected:
                problem = f"served the answer for {served!r}, not {expected!r}"
        if problem is not None:
            storm.fail(kind, f"machine {machine.index}: {problem}")


def run_storm(target: Target, layout: Layout, machines: int, pause: float) -> Storm:
    """
    All C{machines} at once against C{target}; the downloads verified once the clock
    has stopped.
    """
    storm = Storm(target.name, machines)
    warm_up(target)
    work = Path(tempfile.mkdtemp(prefix="storm-", dir=layout.work))

    def cpu() -> tuple[float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = time.process_time() + children.ru_utime + children.ru_stime
        server = sum(cpu_seconds(pid) for pid in target.pids)
        return server, client, machine_cpu_seconds()

    async def one(each: Machine) -> None:
        try:
            await boot(each, target, layout, storm, work, pause)
        except PhaseFailed as e:
            storm.fail(e.args[0], f"machine {each.index}: {e.args[1]}")

    async def everyone() -> None:
        await asyncio.gather(*(one(machine(i)) for i in range(machines)))

    before, storm.start = cpu(), time.monotonic()
    asyncio.run(everyone())
    storm.wall = time.monotonic() - storm.start
    storm.server_cpu, storm.client_cpu, busy = (b - a for a, b in zip(before, cpu(), strict=True))
    storm.other_cpu = max(0.0, busy - storm.client_cpu - storm.server_cpu)
    storm.server_peak_kb = sum(peak_kb(pid) for pid in target.pids)
    verify(storm, layout)
    shutil.rmtree(work, ignore_errors=True)
    return storm


def warm_up(target: Target) -> None:
    """
    One download of each boot file and of the boot script before the clock starts, so
    that nothing is loaded for the first time during the storm.
    """
    tftp = f"tftp://127.0.0.1:{target.tftp_port}/"
    for url in (f"{target.base}boot.ipxe", f"{tftp}undionly.kpxe", f"{tftp}ipxe.efi"):
        command = ["curl", "-sSf", "--max-time", "20", "--tftp-blksize", BLKSIZE, "-o"]
        subprocess.run([*command, "/dev/null", url], check=True, timeout=60)


def peak_kb(pid: int) -> int:
    """
    The peak resident memory (VmHWM) of a process and of its children (nginx's workers).
    """
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    statuses = (Path(f"/proc/{each}/status").read_text() for each in [pid, *children])
    return sum(int(status.split("VmHWM:")[1].split()[0]) for status in statuses)


def start_pxe_pilot(layout: Layout, name: str, log_level: str) -> tuple[Server, Target]:
    """
    C{twistd pxe-pilot --boot} on 127.0.0.1 with a state directory of its own, and the
    target it makes. Every machine comes from an address of its own, so the per-address
    limits keep their defaults.
    """
    http_port = free_port()
    tftp_port = free_port()
    state = layout.work / f"state-{name}"
    command = [str(VENV_BIN / "twistd"), "--nodaemon", "--pidfile=", "pxe-pilot", "--boot"]
    command += (
        f"--interface 127.0.0.1 --port {http_port} --https-port 0 --tftp-port {tftp_port} "
        f"--tftp-root {layout.tftp_root} --answers {layout.answers} --assets {layout.assets} "
        f"--state {state} --log-level {log_level}"
    ).split()
    server = Server(name, command, f"http://127.0.0.1:{http_port}/boot.ipxe", layout.work)
    base = f"http://127.0.0.1:{http_port}/"
    return server, Target("pxe-pilot", tftp_port, base, (server.process.pid,), True)


def fetch_as(url: str, pilot: str, host: str) -> str:
    """
    A script from pxe-pilot at C{pilot} (its base URL) asked for as if it were at
    C{host}: its URLs then lead there.
    """
    address = url.replace(f"http://{host}/", pilot)
    request = urllib.request.Request(address, headers={"Host": host})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return str(response.read().decode())


def start_peers(layout: Layout, pilot: str, most: int) -> tuple[list[Server], Target]:
    """
    nginx serving static copies of pxe-pilot's boot script and menu (as pxe-pilot makes
    them for nginx's address) and the assets directory, and dnsmasq's TFTP server on
    port 69 with the same TFTP root.
    """
    root = layout.work / "nginx-root"
    root.mkdir()
    port = free_port()
    host = f"127.0.0.1:{port}"
    boot = fetch_as(f"http://{host}/boot.ipxe", pilot, host)
    (root / "boot.ipxe").write_text(boot)
    (root / "menu.ipxe").write_text(fetch_as(menu_url(boot, machine(0)), pilot, host))
    conf = layout.work / "nginx.conf"
    conf.write_text(
        nginx_user() + f"worker_processes auto; daemon off; pid {layout.work}/nginx.pid;\n"
        "events { worker_connections 4096; }\n"
        "http { access_log off; sendfile on; tcp_nopush on; default_type text/plain;\n"
        f"  server {{ listen {host}; root {root};\n"
        f"    location /assets/ {{ alias {layout.assets}/; }} }} }}\n"
    )
    url = f"http://{host}/boot.ipxe"
    nginx = Server("nginx", ["nginx", "-c", str(conf), "-e", "stderr"], url, layout.work)
    # Started as root it would become nobody, who cannot read the work directory.
    command = (
        "dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --enable-tftp "
        f"--tftp-root={layout.tftp_root} --listen-address=127.0.0.1 --bind-interfaces "
        f"--pid-file= --log-facility=- --quiet-tftp --tftp-max={most + 10} "
        f"--user={pwd.getpwuid(os.getuid()).pw_name}"
    )
    # Ready when nginx is; the first download (warm_up) waits for it to answer.
    dnsmasq = Server("dnsmasq", command.split(), url, layout.work)
    time.sleep(0.5)
    if dnsmasq.process.poll() is not None:
        nginx.stop()
        raise RuntimeError(f"dnsmasq exited: {dnsmasq.log.read_text().strip()}")
    pids = (dnsmasq.process.pid, nginx.process.pid)
    return [nginx, dnsmasq], Target("dnsmasq + nginx", 69, f"http://{host}/", pids, False)


# Each figure of the table: how it is found and how it is written.
FIGURES: list[tuple[str, Callable[[Storm], float], str]] = [
    ("TFTP + HTTP phases done, s", Storm.boot_wall, "{:.2f}"),
    ("all answered, s", Storm.answer_wall, "{:.2f}"),
    *(
        (f"{phase} {name}, ms", lambda st, p=phase, q=q: st.quantile(p, q) * 1000, "{:.0f}")
        for phase in PHASES
        for name, q in (("p50", 0.5), ("p99", 0.99))
    ),
    ("failures", Storm.failed, "{:.0f}"),
    ("server peak RSS, MB", lambda storm: storm.server_peak_kb / 1024, "{:.0f}"),
    ("server CPU, s", lambda storm: storm.server_cpu, "{:.1f}"),
    ("client CPU (curl and driver), s", lambda storm: storm.client_cpu, "{:.1f}"),
    ("other processes' CPU, s", lambda storm: storm.other_cpu, "{:.1f}"),
]


def describe(storm: Storm) -> str:
    n = storm.machines
    return (
        f"{n} machines, {storm.target}: {len(storm.booted)}/{n} booted, "
        + (f"{len(storm.answered)}/{n} answered, " if storm.target == "pxe-pilot" else "")
        + f"done in {storm.wall:.2f} s; failures: {storm.failed()}"
        + "".join(
            f"\n  {kind}: {len(all)}, first {all[0]}" for kind, all in storm.failures.items()
        )
    )


def table(results: list[tuple[Storm, Storm | None]]) -> str:
    """
    The figures of every storm side by side, with pxe-pilot's ÷ the peer stack's.
    """
    head = ["figure"]
    for ours, peer in results:
        head += [f"{ours.machines} machines, pxe-pilot"]
        head += [peer.target, "pxe-pilot ÷ peer"] if peer else []
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, figure, form in FIGURES:
        cells = [label]
        for ours, peer in results:
            mine = figure(ours)
            cells.append("-" if math.isnan(mine) else form.format(mine))
            if peer is not None:
                theirs = figure(peer)
                cells.append("-" if math.isnan(theirs) else form.format(theirs))
                ratio = mine / theirs if label != "failures" and theirs else math.nan
                cells.append("" if math.isnan(ratio) else f"{ratio:.2f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets(results: list[tuple[Storm, Storm | None]]) -> dict[str, bool]:
    met = {}
    for ours, peer in results:
        n = ours.machines
        met[f"{n} machines: no failure"] = ours.failed() + (peer.failed() if peer else 0) == 0
        if peer is not None:
            goal = f"{n} machines: TFTP + HTTP phases <= 1.0 x the peer stack's time"
            met[goal] = ours.boot_wall() <= peer.boot_wall()
    return met


def bounded(kind: type[int] | type[float], low: float, high: float, what: str) -> Any:
    """
    An option's parser: a number of C{kind} from C{low} to C{high}.
    """

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def machine_counts(text: str) -> list[int]:
    count = bounded(int, 1, 1000, "a number of machines (1 to 1000)")
    return [count(part) for part in text.split(",")]


def options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=machine_counts, default=[20, 100])
    parser.add_argument(
        "--asset-mib",
        type=bounded(int, 1, 4096, "a size in MiB (1 to 4096)"),
        default=64,
        help="the initrd's size",
    )
    parser.add_argument(
        "--pause",
        type=bounded(float, 0, 3600, "a number of seconds (0 to 3600)"),
        default=2.0,
        help="seconds between answer and webhook",
    )
    parser.add_argument("--log-level", default="info", help="pxe-pilot's (info by default)")
    parser.add_argument("--ipxe", type=Path, default=Path("/usr/lib/ipxe"))
    for flag, meaning in (
        ("--no-peer", "storm pxe-pilot only"),
        ("--no-netns", "stay in this network namespace"),
        ("--keep", "keep the work directory"),
    ):
        parser.add_argument(flag, action="store_true", help=meaning)
    return parser


def private_network(argv: list[str]) -> None:
    """
    As root, run again in a network namespace of its own whose loopback is up.
    """
    if os.geteuid() != 0 or os.environ.get(IN_NETNS) or shutil.which("unshare") is None:
        return
    if subprocess.run(["unshare", "--net", "true"], check=False).returncode != 0:
        print("no private network namespace: running on the host's loopback", file=sys.stderr)
        return
    os.environ[IN_NETNS] = "1"
    script = str(Path(__file__).resolve())
    shell = 'ip link set lo up && exec "$0" "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", shell, sys.executable, script, *argv]
    os.execvp(command[0], command)  # noqa: S606


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = options().parse_args(argv)
    if not args.no_netns:
        private_network(argv)
    needed = ["curl"] if args.no_peer else ["curl", "nginx", "dnsmasq"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        print(f"{', '.join(missing)} needed: apt-get install curl nginx-light dnsmasq")
        return 1
    if not args.no_peer and os.geteuid() != 0:
        print("the peer stack needs root (dnsmasq's TFTP port is 69); or use --no-peer")
        return 1
    work = Path(tempfile.mkdtemp(prefix="boot-storm-"))
    servers: list[Server] = []
    results: list[tuple[Storm, Storm | None]] = []
    keep = args.keep
    try:
        layout = prepare(work, max(args.machines), args.asset_mib, args.ipxe)
        # The asset in the page cache, as after the first machine in any case.
        (layout.assets / ASSET / "initrd").read_bytes()
        peer = None
        if not args.no_peer:
            setup, target = start_pxe_pilot(layout, "pxe-pilot-setup", "warn")
            try:
                servers, peer = start_peers(layout, target.base, max(args.machines))
            finally:
                setup.stop()
        for position, machines in enumerate(args.machines):
            pilot, ours = start_pxe_pilot(layout, f"pxe-pilot-{position}", args.log_level)
            # Each goes first in turn: neither always meets the other's aftermath.
            stacks = [ours, peer][:: 1 - 2 * (position % 2)]
            try:
                found = {t.name: run_storm(t, layout, machines, args.pause) for t in stacks if t}
            finally:
                pilot.stop()
            results.append((found.pop("pxe-pilot"), found.popitem()[1] if found else None))
            print(*(describe(storm) for storm in results[-1] if storm), sep="\n", flush=True)
    except BaseException:
        keep = True  # with the servers' logs, to see why
        raise
    finally:
        for server in servers:
            server.stop()
        if keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{table(results)}\n")
    met = targets(results)
    for goal, ok in met.items():
        print(f"{'met   ' if ok else 'MISSED'} {goal}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
