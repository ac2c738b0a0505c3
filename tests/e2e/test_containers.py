"""
The container images, built and run: C{scripts/build-images --local-base} makes both from
Debian's packages (no image registry), the builder turns a synthetic Proxmox ISO on a
read-only volume into boot assets, the server runs with host networking in the lab's
network namespace, and a QEMU machine installs from it. The podman commands are the ones
docs/containers.md shows, with the lab's paths and names in place of the page's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.docs_snippets import ROOT, snippets
from tests.e2e import lab

pytestmark = pytest.mark.e2e

DOCUMENT = ROOT / "docs" / "containers.md"
SERVER_IMAGE = "localhost/pxe-pilot-server:test"
BUILDER_IMAGE = "localhost/pxe-pilot-builder:test"
# The budget for each image, unpacked, as `podman image ls` counts it.
SIZE_LIMIT = 150_000_000
# The user both images create, and the one the server switches to after binding.
IMAGE_UID = 10069
# Another user, as someone running the builder as themselves would be.
CALLER = 4242
ISO_NAME = "proxmox-ve_9.1-1.iso"
# What the page's commands name, and what the lab uses in their place.
DOCUMENTED_ADDRESS = "192.0.2.10"
DOCUMENTED_CONTAINER = "pxe-pilot"
DOCUMENTED_VOLUME = "pxe-state"
HTTP = f"http://{lab.BRIDGE_ADDRESS}:8080"
# Podman's defaults fail on these machines: crun does not run with cgroups in hybrid
# mode, and the default open-file and process limits exceed what the host grants.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""
BOOT_TIMEOUT = 600


def require() -> None:
    """
    Skip unless this machine can build and run the images and the lab (CI can, and
    fails on a skip).
    """
    lab.require()
    for tool in ["podman", "runc", "mmdebstrap", "curl"]:
        if shutil.which(tool) is None:
            pytest.skip(f"the container tests need {tool} (.ci/run installs it)")


@attrs.frozen
class Guest:
    name: str
    mac: str

    @property
    def answer(self) -> str:
        # A whole 9.1 answer (pxe-pilot checks it before serving it) that asks the
        # installer to report its installation, so that pxe-pilot records it installed.
        return (
            f"# answer for {self.name} ({self.mac})\n"
            "[global]\n"
            'keyboard = "en-us"\n'
            'country = "us"\n'
            f'fqdn = "{self.name}.lab.test"\n'
            'mailto = "ops@lab.test"\n'
            'timezone = "UTC"\n'
            'root-password = "lab-password"\n'
            "\n[network]\n"
            'source = "from-dhcp"\n'
            "\n[disk-setup]\n"
            'filesystem = "ext4"\n'
            'disk-list = ["sda"]\n'
            f'\n[post-installation-webhook]\nurl = "{HTTP}/webhook"\n'
        )


# Boots in QEMU from the containerised server.
BOOTING = Guest("container-bios", "52:54:00:00:00:c1")
# Only asks for its answer over HTTP, as an installer does.
ASKING = Guest("container-asking", "52:54:00:00:00:c2")


def documented(start: str) -> list[str]:
    """
    The command that begins with C{start} in the blocks of docs/containers.md this test
    runs, continuation lines joined, as words.
    """
    for snippet in snippets((DOCUMENT,)):
        if "tests/e2e/test_containers.py" not in snippet.argument:
            continue
        for line in re.sub(r"\\\n\s*", " ", snippet.text).splitlines():
            if line.startswith(start):
                return shlex.split(line)
    raise AssertionError(f"docs/containers.md shows no command starting {start!r} for this test")


@attrs.frozen
class Names:
    """
    What the lab calls what the page calls /srv/pxe, pxe-pilot and pxe-state.
    """

    directory: Path
    container: str
    volume: str

    def localised(self, argv: list[str]) -> list[str]:
        """
        A documented command with the lab's paths, names and address.
        """
        words: list[str] = []
        # The first operand of these subcommands is the container (exec's second names
        # the command to run in it).
        names_first = len(argv) > 1 and argv[1] in ("exec", "stop", "rm", "logs", "healthcheck")
        for index, word in enumerate(argv):
            if word == DOCUMENTED_CONTAINER and (
                (index > 0 and argv[index - 1] == "--name")
                or (names_first and self.container not in words)
            ):
                word = self.container
            word = word.replace("/srv/pxe", str(self.directory))
            word = word.replace(f"{DOCUMENTED_VOLUME}:/", f"{self.volume}:/")
            if argv[1:3] == ["volume", "create"] and word == DOCUMENTED_VOLUME:
                word = self.volume
            word = word.replace("$PWD", str(self.directory))
            word = word.replace("$(id -u):$(id -g)", f"{CALLER}:{CALLER}")
            words.append(word.replace(DOCUMENTED_ADDRESS, lab.BRIDGE_ADDRESS))
        return words


@attrs.define
class Podman:
    """
    Podman with this machine's containers.conf, in or out of the lab's namespace.
    """

    conf: Path

    @property
    def environment(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(
        self, argv: list[str], in_lab: bool = False, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        if in_lab:
            # Into the lab's network namespace only: `ip netns exec` also mounts a sysfs
            # of the namespace over /sys, which hides the cgroup mounts runc needs.
            argv = ["nsenter", f"--net=/run/netns/{lab.NETNS}", *argv]
        done = subprocess.run(
            argv,
            env={**self.environment, **extra},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}\n{done.stderr}"
        return done

    def size(self, image: str) -> int:
        return int(self(["podman", "image", "inspect", "--format", "{{.Size}}", image]).stdout)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """
    Both images, built as the page says, with the time the build took printed.
    """
    require()
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    engine = Podman(conf)
    build = documented("scripts/build-images")
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / build[0]), *build[1:]],
        env=engine.environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    print(f"\n{shlex.join(build)}: {time.monotonic() - started:.0f} s")
    return engine


@attrs.frozen
class ContainerLab:
    names: Names
    podman: Podman
    token: str
    # The ISO's SHA-256 before the builder read it.
    iso_digest: str

    @property
    def directory(self) -> Path:
        return self.names.directory

    def start_server(self) -> None:
        """
        The server, run as the page says, in the lab's namespace (its host network);
        returns once TFTP and HTTP listen.
        """
        run = documented("podman run -d --name pxe-pilot")
        image = run.index(SERVER_IMAGE)
        # A short menu, so that the guest's boot does not wait for its default.
        run[image:image] = ["-e", "PXE_PILOT_MENU_TIMEOUT=2"]
        self.podman(self.names.localised(run), in_lab=True, PXE_PILOT_ADMIN_TOKEN=self.token)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lab.run(*lab.netns("curl", "-sf", f"{HTTP}/health"), check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(self.logs())

    def stop_server(self) -> None:
        for start in ("podman stop", "podman rm"):
            self.podman(self.names.localised(documented(start)))

    def logs(self) -> str:
        done = self.podman(["podman", "logs", self.names.container], check=False)
        return done.stdout + done.stderr

    def operator(self, *args: str) -> str:
        """
        The operator's pxe-pilot command, run in the container as the page says.
        """
        exec_argv = documented("podman exec pxe-pilot pxe-pilot")
        command = [*self.names.localised(exec_argv[:5]), *args]
        # In the lab's namespace: with host networking, podman exec runs a command on the
        # network of whoever calls it, and the command talks to 127.0.0.1.
        return self.podman(command, in_lab=True).stdout

    def process_status(self) -> str:
        """
        /proc/PID/status of the container's main process, as the host sees it.
        """
        pid = self.podman(
            ["podman", "inspect", "--format", "{{.State.Pid}}", self.names.container]
        ).stdout.strip()
        return Path(f"/proc/{pid}/status").read_text()


def own_iso(directory: Path) -> Path:
    """
    The synthetic Proxmox ISO, alone in a directory of its own (mounted read-only).
    """
    isos = directory / "isos"
    isos.mkdir()
    lab.synthetic_iso(isos / ISO_NAME)
    return isos / ISO_NAME


@pytest.fixture(scope="module")
def container_lab(
    podman: Podman, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerLab]:
    """
    The lab's network with dnsmasq, assets made by the builder image, and the server
    image running in the namespace with the answers of both guests.
    """
    directory = tmp_path_factory.mktemp("containers")
    names = Names(directory, f"pxe-pilot-test-{os.getpid()}", f"pxe-state-test-{os.getpid()}")
    iso = own_iso(directory)
    iso_digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    lab.host_answers(directory, {guest.mac: guest.answer for guest in (BOOTING, ASKING)})
    # The page's preparation: the assets directory belongs to the images' user.
    subprocess.run(names.localised(documented("install -d")), check=True)
    started = time.monotonic()
    podman(names.localised(documented("podman run --rm --network none")))
    print(f"\nthe builder image made the assets in {time.monotonic() - started:.0f} s")
    pxe_lab = ContainerLab(names, podman, token=os.urandom(12).hex(), iso_digest=iso_digest)
    try:
        podman(names.localised(documented("podman volume create")))
        with lab.network():
            dhcp = lab.dnsmasq(directory)
            try:
                pxe_lab.start_server()
                yield pxe_lab
            finally:
                dhcp.stop()
                (directory / "pxe-pilot.log").write_text(pxe_lab.logs())
                podman(["podman", "rm", "--force", "--time", "10", names.container], check=False)
    finally:
        podman(["podman", "volume", "rm", "--force", names.volume], check=False)


def test_images_are_small(podman: Podman) -> None:
    """
    Each image, unpacked, stays under 150 MB.
    """
    sizes = {image: podman.size(image) for image in (SERVER_IMAGE, BUILDER_IMAGE)}
    for image, size in sizes.items():
        print(f"\n{image}: {size / 1e6:.1f} MB")
    assert all(size < SIZE_LIMIT for size in sizes.values()), sizes


def test_builder_makes_assets_on_a_writable_volume(container_lab: ContainerLab) -> None:
    """
    From the ISO on a read-only volume, the builder image writes the assets to the
    writable one as the images' user (uid 10069), and the ISO stays as it was; run with
    C{--user}, as the caller, the files are the caller's.
    """
    assets = container_lab.directory / "assets"
    made = [p for p in assets.rglob("*") if p.is_file()]
    assert {p.name for p in made} == {"vmlinuz", "initrd", "asset.json"}, made
    assert {(p.stat().st_uid, p.stat().st_gid) for p in made} == {(IMAGE_UID, IMAGE_UID)}
    metadata = json.loads(next(assets.glob("*/*/asset.json")).read_text())
    assert metadata["answer"]["url"] == f"{HTTP}/answer"
    [iso] = (container_lab.directory / "isos").iterdir()
    assert hashlib.sha256(iso.read_bytes()).hexdigest() == container_lab.iso_digest

    mine = container_lab.directory / "assets-mine"
    mine.mkdir()
    os.chown(mine, CALLER, CALLER)
    command = container_lab.names.localised(
        documented('podman run --rm --user "$(id -u):$(id -g)"')
    )
    command = [w.replace(f"{container_lab.directory}/assets:", f"{mine}:") for w in command]
    container_lab.podman(command)
    made = [p for p in mine.rglob("*") if p.is_file()]
    assert made
    assert {(p.stat().st_uid, p.stat().st_gid) for p in made} == {(CALLER, CALLER)}


def installer_request(guest: Guest) -> str:
    # What the installer posts: its system information with the NIC's MAC.
    return json.dumps(
        {
            "$schema": {"version": "1.0"},
            "product": {"fullname": "Proxmox VE", "product": "pve", "enable_btrfs": True},
            "iso": {"release": "9.1", "isorelease": "1"},
            "dmi": {"system": {"name": "QEMU"}},
            "network_interfaces": [{"link": "ens18", "mac": guest.mac}],
        }
    )


def post_answer(guest: Guest) -> tuple[str, str]:
    """
    The status code and body of the answer pxe-pilot gives the guest's installer.
    """
    done = lab.run(
        *lab.netns(
            "curl",
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
            "--data",
            installer_request(guest),
            f"{HTTP}/answer",
        )
    )
    body, _, code = done.stdout.rpartition("\n")
    return code, body


def test_server_serves_http_and_tftp_as_an_unprivileged_user(
    container_lab: ContainerLab,
) -> None:
    """
    On the namespace's own network: /health answers, an installer gets its answer from
    the mounted answers directory, TFTP on port 69 serves the image's undionly.kpxe,
    and after binding the server runs as uid and gid 10069 with no capabilities.
    """
    health = lab.run(*lab.netns("curl", "-sf", f"{HTTP}/health"))
    assert json.loads(health.stdout)["status"] in ("ok", "degraded"), health.stdout
    assert post_answer(ASKING) == ("200", ASKING.answer)

    fetched = container_lab.directory / "undionly.kpxe"
    lab.run(
        *lab.netns("curl", "-sf", "-o", str(fetched), f"tftp://{lab.BRIDGE_ADDRESS}/undionly.kpxe")
    )
    # The same Debian 12 package as on this machine.
    assert fetched.read_bytes() == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()

    status = container_lab.process_status()
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert ids["Uid"] == [str(IMAGE_UID)] * 4, status
    assert ids["Gid"] == [str(IMAGE_UID)] * 4, status
    assert ids["CapEff"] == ["0000000000000000"], status
    assert f"set uid/gid {IMAGE_UID}/{IMAGE_UID}" in container_lab.logs()


def test_healthcheck_reports_healthy(container_lab: ContainerLab) -> None:
    """
    The image's health check, run by podman, finds the server healthy.
    """
    check = container_lab.names.localised(documented("podman healthcheck run"))
    done = container_lab.podman(check, in_lab=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unhealthy" not in done.stdout


def test_machine_installs_from_the_server_image(container_lab: ContainerLab) -> None:
    """
    A BIOS machine boots over the network from the containerised server: TFTP, the boot
    chain, the installer with the builder image's assets, its answer, and its report.
    """
    with lab.tap("tap-container") as tap:
        vm = lab.qemu(container_lab.directory, "vm-container", "bios", BOOTING.mac, tap)
        started = time.monotonic()
        try:
            vm.wait_for(lab.WEBHOOK_SENT, BOOT_TIMEOUT)
        finally:
            vm.stop()
    print(
        f"\nthe BIOS guest reached its answer and reported in {time.monotonic() - started:.0f} s"
    )
    assert lab.answer_of(vm.text) == BOOTING.answer
    assert f'{lab.WEBHOOK_SENT} {{"mac":"{BOOTING.mac}","state":"installed"}}' in vm.text
    assert container_lab.operator(BOOTING.mac).startswith(f"{BOOTING.mac}: installed")


def test_state_survives_a_new_container(container_lab: ContainerLab) -> None:
    """
    The state volume keeps what the server learnt: after the container is stopped,
    removed and started again from the image, the machine that installed is still
    installed, and its installer is refused an answer (install once).
    """
    assert container_lab.operator(BOOTING.mac).startswith(f"{BOOTING.mac}: installed")
    container_lab.stop_server()
    container_lab.start_server()
    assert container_lab.operator(BOOTING.mac).startswith(f"{BOOTING.mac}: installed")
    code, _ = post_answer(BOOTING)
    assert code != "200"
