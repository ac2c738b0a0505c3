"""
A PXE lab in a network namespace: a bridge, a tap device for QEMU, dnsmasq as a plain
DHCP server, pxe-pilot (twistd) serving TFTP and HTTP, and a synthetic Proxmox ISO
whose kernel is Debian's and whose initrd behaves like the Proxmox installer: it finds
/proxmox.iso, loop-mounts it, reads /auto-installer-mode.toml, posts its system
information with the NIC's real MAC to the URL in it, and prints the answer on the
serial console.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder import cpio
from builder.testing import make_iso, proxmox_files

# One namespace per test process: runs side by side (two checkouts, say) never meet.
NETNS = f"pxe-pilot-lab-{os.getpid()}"
BRIDGE_ADDRESS = "10.99.0.1"
# The bridge's address on the IPv6-only network (tests/e2e/test_ipv6.py).
IPV6_ADDRESS = "fd00:77::1"
CACHE = Path(os.environ.get("PXE_PILOT_E2E_CACHE", "/var/cache/pxe-pilot-e2e"))
ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
MODULES = ["e1000", "virtio_pci", "virtio_net", "loop", "isofs"]
ANSWER_BEGIN = "PXE-PILOT-ANSWER-BEGIN"
ANSWER_END = "PXE-PILOT-ANSWER-END"
# Less than the real installer needs, so the menu's memory warning shows.
GUEST_MEMORY_MIB = 1024


def require() -> None:
    """
    Skip unless this machine can run the lab (CI can, and fails on a skip).
    """
    if os.geteuid() != 0:
        pytest.skip("the PXE lab needs root (network namespaces, tap devices)")
    for tool in ["ip", "qemu-system-x86_64", "dnsmasq", "busybox"]:
        if shutil.which(tool) is None:
            pytest.skip(f"the PXE lab needs {tool} (.ci/run installs it)")
    if not _static(Path(shutil.which("busybox") or "/bin/busybox")):
        pytest.skip("the fake installer needs a static busybox (.ci/run installs busybox-static)")
    for path in [
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/lib/ipxe/qemu/pxe-e1000.rom",
        "/usr/lib/ipxe/undionly.kpxe",
        "/usr/lib/ipxe/ipxe.efi",
    ]:
        if not Path(path).exists():
            pytest.skip(f"the PXE lab needs {path} (.ci/run installs ovmf, ipxe, ipxe-qemu)")


def _static(executable: Path) -> bool:
    """
    Whether a 64-bit ELF executable needs no program interpreter (is statically linked).
    """
    data = executable.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    offset = int.from_bytes(data[32:40], "little")
    size = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    interpreter = 3
    return all(
        int.from_bytes(data[offset + i * size : offset + i * size + 4], "little") != interpreter
        for i in range(count)
    )


def kernel_tree() -> Path:
    """
    Debian's kernel package, unpacked (downloaded once into the cache).
    """
    unpacked = CACHE / "kernel"
    if (unpacked / "boot").exists():
        return unpacked
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = sorted(CACHE.glob("linux-image-*-amd64_*.deb"))
    if not debs:
        depends = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        package = re.search(r"Depends: (linux-image-\S+)", depends)
        assert package, depends
        shutil.chown(CACHE, "_apt")  # apt downloads as the _apt user
        subprocess.run(
            ["apt-get", "download", "-q", package.group(1)],
            cwd=CACHE,
            check=True,
            capture_output=True,
        )
        debs = sorted(CACHE.glob("linux-image-*-amd64_*.deb"))
    scratch = CACHE / "kernel.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(scratch)], check=True)
    scratch.rename(unpacked)
    return unpacked


def _module_order(modules_dir: Path, wanted: list[str]) -> list[str]:
    """
    The modules to load, dependencies first, as paths relative to C{modules_dir}. The
    package has no modules.dep (depmod writes it on installation): each module's own
    C{depends=} entry is read instead.
    """
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        path = files.get(name)
        if path is None:
            return  # built into the kernel
        found = re.search(rb"\x00depends=([^\x00]*)\x00", path.read_bytes())
        for dependency in found.group(1).decode().split(",") if found else []:
            if dependency:
                visit(dependency.replace("-", "_"))
        relative = str(path.relative_to(modules_dir))
        if relative not in order:
            order.append(relative)

    for name in wanted:
        visit(name)
    return order


INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
exec >/dev/ttyS0 2>&1
echo "fake installer: started"
for module in $(cat /modules.list); do insmod "/lib/modules/$module" 2>/dev/null; done
if [ ! -f /proxmox.iso ]; then echo "FAIL: no /proxmox.iso in the initramfs"; poweroff -f; fi
if ! mount -t iso9660 -o loop,ro /proxmox.iso /mnt; then
    echo "FAIL: cannot mount /proxmox.iso"
    poweroff -f
fi
url=$(sed -n 's/^url *= *"\(.*\)"/\1/p' /mnt/auto-installer-mode.toml)
pinned=$(sed -n 's/^cert_fingerprint *= *"\(.*\)"/\1/p' /mnt/auto-installer-mode.toml)
echo "fake installer: answer URL $url"
# post URL BODY OUT [FINGERPRINT]: POST BODY as JSON, the response's body into OUT.
# Over HTTPS, as the installer does with a fingerprint: only to the server whose
# certificate's SHA-256 is FINGERPRINT, checked before anything is sent.
post() {
    case "$1" in
    https://*)
        rest=${1#https://}
        hostport=${rest%%/*}
        path=/${rest#*/}
        [ "$rest" = "$hostport" ] && path=/
        seen=$(openssl s_client -connect "$hostport" </dev/null 2>/dev/null |
            openssl x509 -noout -fingerprint -sha256 | sed 's/^.*=//')
        echo "fake installer: $hostport presents SHA-256 $seen"
        if [ -n "$4" ] && [ "$seen" != "$4" ]; then
            echo "FAIL: the certificate is not the pinned $4"
            return 1
        fi
        request='POST %s HTTP/1.0\r\nHost: %s\r\n'
        request="$request"'Content-Type: application/json; charset=utf-8\r\n'
        request="$request"'Content-Length: %s\r\n\r\n%s'
        printf "$request" "$path" "$hostport" "${#2}" "$2" |
            openssl s_client -quiet -connect "$hostport" 2>/dev/null | tr -d '\r' >/tmp/response
        head -n 1 /tmp/response | grep -q ' 200 ' || return 1
        sed '1,/^$/d' /tmp/response >"$3"
        ;;
    *)
        wget -q -O "$3" --header "Content-Type: application/json; charset=utf-8" \
            --post-data "$2" "$1"
        ;;
    esac
}
iface=""
for attempt in $(seq 1 100); do
    for dev in /sys/class/net/*; do
        name=$(basename "$dev")
        [ "$name" = lo ] || iface="$name"
    done
    [ -n "$iface" ] && break
    sleep 0.1
done
ip link set "$iface" up
case "$url" in
*://\[*)
    # An IPv6 answer URL: the network has no IPv4. The kernel takes its address from the
    # router advertisement (SLAAC).
    for attempt in $(seq 1 100); do
        address=$(ip -6 -o addr show dev "$iface" scope global | grep -v tentative |
            sed -n 's/.* inet6 \([^ ]*\) .*/\1/p')
        [ -n "$address" ] && break
        sleep 0.2
    done
    echo "fake installer: IPv6 address ${address:-none}"
    echo "$address" >/tmp/address
    ;;
*) udhcpc -i "$iface" -n -q -t 20 -T 1 -s /udhcpc.sh ;;
esac
mac=$(cat "/sys/class/net/$iface/address")
body='{"$schema":{"version":"1.0"},'
body="$body"'"product":{"fullname":"Proxmox VE","product":"pve","enable_btrfs":true},'
body="$body"'"iso":{"release":"9.1","isorelease":"1"},"dmi":{"system":{"name":"QEMU"}},'
body="$body"'"network_interfaces":[{"link":"'"$iface"'","mac":"'"$mac"'"}]}'
post "$url" "$body" /tmp/answer "$pinned" || echo "FAIL: the answer request failed"
echo PXE-PILOT-ANSWER-BEGIN
cat /tmp/answer
echo PXE-PILOT-ANSWER-END
# As proxmox-post-hook does after a successful installation, when the answer asks for it.
hook=$(sed -n '/^\[post-installation-webhook\]/,/^\[/s/^url *= *"\(.*\)"/\1/p' /tmp/answer)
if [ -n "$hook" ]; then
    address=$(cat /tmp/address)
    mode=bios
    [ -d /sys/firmware/efi ] && mode=efi
    report='{"$schema":{"version":"1.2"},"debian-version":"13.1",'
    report="$report"'"product":{"fullname":"Proxmox VE","short":"pve","version":"9.1.1"},'
    report="$report"'"iso":{"release":"9.1","isorelease":"1"},"boot-info":{"mode":"'"$mode"'"},'
    fqdn=$(sed -n 's/^fqdn *= *"\(.*\)"/\1/p' /tmp/answer | head -n 1)
    report="$report"'"fqdn":"'"${fqdn:-unknown.invalid}"'","filesystem":"ext4",'
    report="$report"'"network-interfaces":[{"name":"'"$iface"'","mac":"'"$mac"'",'
    report="$report"'"address":"'"$address"'","is-management":true}]}'
    section='/^\[post-installation-webhook\]/,/^\['
    hook_pinned=$(sed -n "$section"'s/^cert-fingerprint *= *"\(.*\)"/\1/p' /tmp/answer)
    if post "$hook" "$report" /tmp/hook "$hook_pinned"; then
        echo "PXE-PILOT-WEBHOOK-SENT $(cat /tmp/hook | tr -d '\n ')"
    else
        echo "FAIL: the post-installation webhook failed"
    fi
fi
poweroff -f
"""

WEBHOOK_SENT = "PXE-PILOT-WEBHOOK-SENT"

UDHCPC = """#!/bin/sh
case "$1" in
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
        echo "$ip/${mask:-24}" > /tmp/address
        ;;
esac
"""


def _with_libraries(program: str, name: str) -> list[tuple[str, bytes, int]]:
    """
    C{program} as C{name} in the initramfs, with the shared libraries it loads at the
    paths it loads them from. The fake installer's TLS client: busybox's cannot pin a
    certificate (and speaks only what OpenSSL's default security level refuses).
    """
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
    members = [(name, Path(program).read_bytes(), 0o100755)]
    for line in listed.stdout.splitlines():
        found = re.search(r"(/\S+) \(0x", line)
        if found:
            library = Path(found[1])
            members.append((str(library).lstrip("/"), library.resolve().read_bytes(), 0o100755))
    return members


def installer_initrd(kernel: Path) -> bytes:
    """
    A gzip-compressed initramfs: busybox, the network, loop and iso9660 modules, and the
    fake installer's /init.
    """
    modules_dir = next((kernel / "lib" / "modules").iterdir())
    members: list[tuple[str, bytes, int]] = [
        ("init", INIT.encode(), 0o100755),
        ("udhcpc.sh", UDHCPC.encode(), 0o100755),
        ("bin/busybox", Path(shutil.which("busybox") or "/bin/busybox").read_bytes(), 0o100755),
        *_with_libraries("/usr/bin/openssl", "bin/openssl"),
    ]
    order = _module_order(modules_dir, MODULES)
    members.append(("modules.list", "\n".join(order).encode() + b"\n", 0o100644))
    for module in order:
        members.append((f"lib/modules/{module}", (modules_dir / module).read_bytes(), 0o100644))
    archive = b""
    directories: set[str] = set()
    for name, data, mode in members:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in directories:
                directories.add(directory)
                archive += cpio.header(directory, 0, mode=0o040755)
        archive += cpio.header(name, len(data), mode=mode) + data + cpio.data_padding(len(data))
    return gzip.compress(archive + cpio.trailer(), compresslevel=6)


def synthetic_iso(path: Path) -> None:
    """
    A Proxmox-like ISO with Debian's kernel as /boot/linux26 and the fake installer as
    /boot/initrd.img.
    """
    kernel = kernel_tree()
    vmlinuz = next((kernel / "boot").glob("vmlinuz-*")).read_bytes()
    make_iso(path, proxmox_files(kernel=vmlinuz, initrd=installer_initrd(kernel)))


ANSWER_URL = f"http://{BRIDGE_ADDRESS}:8080/answer"
HTTPS_ANSWER_URL = f"https://{BRIDGE_ADDRESS}:8443/answer"


def built_assets(iso: Path, assets: Path, answer_url: str = ANSWER_URL) -> Path:
    """
    Boot assets made from C{iso} by the project's pxe-pilot-builder, fetching answers
    from pxe-pilot in the lab. The builder runs in the lab's namespace, so that for an
    HTTPS URL it reaches the running pxe-pilot and pins its certificate by itself.
    """
    builder = [
        str(VENV_BIN / "pxe-pilot-builder"),
        "--iso",
        str(iso),
        "--answer-url",
        answer_url,
        "--output",
        str(assets),
    ]
    done = subprocess.run(
        netns(*builder) if answer_url.startswith("https:") else builder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return assets


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def netns(*args: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *args]


@contextmanager
def network(address: str = f"{BRIDGE_ADDRESS}/24") -> Iterator[None]:
    """
    The namespace with its bridge at C{address} (C{IPV6_ADDRESS}/64 for a network with
    no IPv4 at all); removed afterwards, whatever happens.
    """
    run("ip", "netns", "del", NETNS, check=False)
    run("ip", "netns", "add", NETNS)
    try:
        for command in (
            # No duplicate address detection: an address waiting for it cannot be bound
            # by pxe-pilot, nor send router advertisements, for the first second or two.
            ["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"],
            ["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"],
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"],
            ["ip", "addr", "add", address, "dev", "br0"],
            ["ip", "link", "set", "br0", "up"],
        ):
            run(*netns(*command))
        yield
    finally:
        run("ip", "netns", "del", NETNS, check=False)


@contextmanager
def tap(name: str) -> Iterator[str]:
    run(*netns("ip", "tuntap", "add", "dev", name, "mode", "tap"))
    run(*netns("ip", "link", "set", name, "master", "br0"))
    run(*netns("ip", "link", "set", name, "up"))
    try:
        yield name
    finally:
        run(*netns("ip", "link", "del", name), check=False)


class Process:
    """
    A background process in the lab, its output in a file.
    """

    def __init__(self, name: str, args: list[str], directory: Path) -> None:
        self.log = directory / f"{name}.log"
        self._file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        # QEMU misbehaves with stdin at end of file: give it a pipe that stays open.
        stdin, self._stdin = os.pipe()
        self.process = subprocess.Popen(
            args, stdout=self._file, stderr=subprocess.STDOUT, stdin=stdin, start_new_session=True
        )
        os.close(stdin)

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.process.poll() is not None:
                found = re.search(pattern, self.text)
                if found:
                    return found
                break
            time.sleep(0.5)
        raise AssertionError(f"{pattern!r} not seen in {self.log.name}:\n{self.text[-6000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1
        self._file.close()


def dnsmasq(directory: Path, snponly: tuple[str, ...] = ()) -> Process:
    """
    A plain DHCP server: an address, the next server (option 66) and a boot file
    (option 67) by client architecture: BIOS gets undionly.kpxe, x86-64 UEFI gets
    ipxe.efi, or snponly.efi for the MACs in C{snponly}. No user-class rules.
    """
    hosts = [f"--dhcp-host={mac},set:snp" for mac in snponly]
    return Process(
        "dnsmasq",
        netns(
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-range=10.99.0.50,10.99.0.90,1h",
            "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-match=set:efi64,option:client-arch,9",
            f"--dhcp-boot=tag:!efi64,undionly.kpxe,,{BRIDGE_ADDRESS}",
            *hosts,
            f"--dhcp-boot=tag:efi64,tag:!snp,ipxe.efi,,{BRIDGE_ADDRESS}",
            f"--dhcp-boot=tag:efi64,tag:snp,snponly.efi,,{BRIDGE_ADDRESS}",
            "--log-dhcp",
            "--pid-file=",
        ),
        directory,
    )


def pxe_pilot(directory: Path, answers: Path, assets: Path, *extra: str) -> Process:
    process = Process(
        "pxe-pilot",
        netns(
            str(VENV_BIN / "twistd"),
            "--nodaemon",
            "--pidfile=",
            "pxe-pilot",
            "--answers",
            str(answers),
            "--assets",
            str(assets),
            "--port",
            "8080",
            "--boot",
            "--tftp-port",
            "69",
            "--tftp-root",
            "/usr/lib/ipxe",
            "--menu-timeout",
            "2",
            "--kernel-args",
            "console=ttyS0,115200",
            "--state",
            str(directory / "state"),
            *extra,
        ),
        directory,
    )
    process.wait_for(r"TFTP listening on", 30)
    return process


def qemu(
    directory: Path,
    name: str,
    firmware: str,
    mac: str,
    tap_name: str,
    extra: Sequence[str] = (),
) -> Process:
    """
    A guest that boots from the network: SeaBIOS with QEMU's iPXE ROM on an e1000, or
    OVMF with its own UEFI PXE client on virtio-net (no option ROM). C{extra}: more
    QEMU arguments (firmware settings through C{-fw_cfg}, say).
    """
    args = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        str(GUEST_MEMORY_MIB),
        "-nographic",
        "-no-reboot",
        "-netdev",
        f"tap,id=n0,ifname={tap_name},script=no,downscript=no",
    ]
    if firmware == "bios":
        args += ["-device", f"e1000,netdev=n0,mac={mac}", "-boot", "n"]
    else:
        variables = directory / f"{name}-vars.fd"
        shutil.copy("/usr/share/OVMF/OVMF_VARS.fd", variables)
        args += [
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
            "-drive",
            f"if=pflash,format=raw,file={variables}",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
        ]
    return Process(name, netns(*args, *extra), directory)


DHCP_NETNS = f"{NETNS}-dhcp"
DHCP_SERVER_ADDRESS = "10.99.0.2"


@contextmanager
def other_dhcp_server(directory: Path, options: Sequence[str] = ()) -> Iterator[Process]:
    """
    The network's own DHCP server on another host (a namespace of its own, on the
    lab's bridge through a veth pair): addresses only, no boot information at all,
    unless C{options} (more dnsmasq arguments) give some.
    """
    run("ip", "netns", "del", DHCP_NETNS, check=False)
    run("ip", "netns", "add", DHCP_NETNS)
    try:
        run(*netns("ip", "link", "add", "veth-dhcp", "type", "veth", "peer", "name", "eth0"))
        run(*netns("ip", "link", "set", "eth0", "netns", DHCP_NETNS))
        run(*netns("ip", "link", "set", "veth-dhcp", "master", "br0"))
        run(*netns("ip", "link", "set", "veth-dhcp", "up"))
        inside = ["ip", "netns", "exec", DHCP_NETNS]
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "addr", "add", f"{DHCP_SERVER_ADDRESS}/24", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        server = Process(
            "dhcp-server",
            [
                *inside,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
                "--dhcp-range=10.99.0.150,10.99.0.190,1h",
                "--log-dhcp",
                "--pid-file=",
                *options,
            ],
            directory,
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        run("ip", "netns", "del", DHCP_NETNS, check=False)


KEA_NETNS = f"{NETNS}-kea"


@contextmanager
def kea_server(
    directory: Path, settings: Mapping[str, object], version: int = 6
) -> Iterator[Process]:
    """
    Kea as the network's DHCP server on another host (a namespace of its own, on the
    lab's bridge through a veth pair): C{kea-dhcp4} for the IPv4 lab (C{version} 4), or
    C{kea-dhcp6} for the IPv6-only one. C{settings} (C{Dhcp4}/C{Dhcp6} keys) are added to
    what the lab needs: its network with a pool, leases and server identity in memory.
    """
    inside = ["ip", "netns", "exec", KEA_NETNS]
    program = f"kea-dhcp{version}"
    config = directory / f"{program}.json"
    if version == 4:
        address = "10.99.0.3/24"
        subnet: dict[str, object] = {
            "subnet": "10.99.0.0/24",
            "pools": [{"pool": "10.99.0.150 - 10.99.0.190"}],
        }
        identity: dict[str, object] = {}
    else:
        address = "fd00:77::2/64"
        subnet = {"subnet": "fd00:77::/64", "pools": [{"pool": "fd00:77::100-fd00:77::1ff"}]}
        identity = {"server-id": {"type": "LLT", "persist": False}}
    lab_settings = {
        "interfaces-config": {"interfaces": ["eth0"]},
        "lease-database": {"type": "memfile", "persist": False},
        **identity,
        f"subnet{version}": [{"id": 1, "interface": "eth0", **subnet}],
        "loggers": [
            {"name": program, "severity": "INFO", "output_options": [{"output": "stdout"}]}
        ],
    }
    config.write_text(json.dumps({f"Dhcp{version}": {**lab_settings, **settings}}, indent=2))
    run("ip", "netns", "del", KEA_NETNS, check=False)
    run("ip", "netns", "add", KEA_NETNS)
    try:
        run(*netns("ip", "link", "add", "veth-kea", "type", "veth", "peer", "name", "eth0"))
        run(*netns("ip", "link", "set", "eth0", "netns", KEA_NETNS))
        run(*netns("ip", "link", "set", "veth-kea", "master", "br0"))
        run(*netns("ip", "link", "set", "veth-kea", "up"))
        # Kea listens on the link-local address, which is unusable until duplicate
        # address detection is done: none, as on the lab's bridge.
        for interface in ("all", "default", "eth0"):
            run(*inside, "sysctl", "-q", "-w", f"net.ipv6.conf.{interface}.accept_dad=0")
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "addr", "add", address, "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        # Kea's pid and lock files in the lab's directory, away from a system Kea's.
        files = [f"KEA_PIDFILE_DIR={directory}", f"KEA_LOCKFILE_DIR={directory}"]
        server = Process(program, [*inside, "env", *files, program, "-c", str(config)], directory)
        try:
            server.wait_for(f"DHCP{version}_STARTED", 30)
            assert "DHCPSRV_NO_SOCKETS_OPEN" not in server.text, server.text
            yield server
        finally:
            server.stop()
    finally:
        run("ip", "netns", "del", KEA_NETNS, check=False)


def host_answers(directory: Path, answers: Mapping[str, str]) -> Path:
    """
    C{directory}/answers with a host file for each MAC of C{answers} (the file's text by
    MAC address); the C{hosts} folder.
    """
    hosts = directory / "answers" / "hosts"
    hosts.mkdir(parents=True)
    for mac, answer in answers.items():
        (hosts / f"{mac.replace(':', '-')}.toml").write_text(answer)
    return hosts


def pxe_pilot_command(*args: str) -> subprocess.CompletedProcess[str]:
    """
    The operator's C{pxe-pilot} command, run in the lab against its pxe-pilot.
    """
    return subprocess.run(
        netns(str(VENV_BIN / "pxe-pilot"), "--url", f"http://{BRIDGE_ADDRESS}:8080/", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def answer_of(output: str) -> str:
    """
    The answer the fake installer printed between its markers.
    """
    found = re.search(rf"{ANSWER_BEGIN}\r?\n(.*?){ANSWER_END}", output, re.S)
    assert found, output[-6000:]
    return found.group(1).replace("\r\n", "\n")
