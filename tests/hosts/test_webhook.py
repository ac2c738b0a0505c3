"""
Reading the installer's post-installation webhook, from every schema version, and
refusing bodies that are not installation reports with a message that says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest

from pxepilot.answers.request import MAX_INTERFACES
from pxepilot.hosts.webhook import (
    MAX_DISKS,
    MAX_HOST_KEYS,
    MAX_WEBHOOK_BYTES,
    BadWebhook,
    parse_webhook,
    ssh_fingerprint,
)
from pxepilot.macs import MacAddress
from tests.conftest import fixture_bytes
from tests.mac_counting import counted_comparisons, counted_parses

MANAGEMENT = MacAddress.parse("b0:7b:25:c1:0a:10")
OTHER = MacAddress.parse("b0:7b:25:c1:0a:11")

# Made with ssh-keygen (OpenSSH 9.2); the fingerprints are what `ssh-keygen -lf` printed.
ED25519_LINE = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAwkHzjKwjUspcMAqKq/WS8T1Fy659dpGOrg0Bm4DmW0 root@pve01"
)
ED25519_FINGERPRINT = "SHA256:sYp9TMX9tAFO0JMkFDBEc6Az6vZnyXImxqhdiKDeivg"
ECDSA_LINE = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBK4T6Dq5pfQrQVyJZM8I"
    "Bkx5ZpzorDY/QS+yJ23ItxzDiittDAlfZlyxJAKPZTfoChdTJ600Tv0GV3ik3GPA3FM= root@pve02"
)
ECDSA_FINGERPRINT = "SHA256:1+nmRONdpMZgyl0BU4zZHPrft112lOJ7ZozZqhUIiXM"


def fixture() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(fixture_bytes("post-install-webhook-9.1.json"))
    return document


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def schema_1_0() -> dict[str, Any]:
    """
    What an 8.3 installer sends: schema 1.0, interfaces without C{name} or
    C{is-pinned}, no C{reboot-mode}; here the management NIC is not listed first.
    """
    document = fixture()
    document["$schema"] = {"version": "1.0"}
    document["product"] = {"fullname": "Proxmox VE", "short": "pve", "version": "8.3.0"}
    del document["reboot-mode"]
    document["network-interfaces"] = [
        {"mac": "b0:7b:25:c1:0a:11", "udev-properties": {"INTERFACE": "eno8403"}},
        {
            "mac": "b0:7b:25:c1:0a:10",
            "address": "192.0.2.21/24",
            "is-management": True,
            "udev-properties": {"INTERFACE": "eno8303"},
        },
    ]
    return document


def test_the_9_1_fixture() -> None:
    """
    Everything pxe-pilot keeps of a 9.1 report: the management NIC first, its address,
    the installed product, disks, file system and host keys, and the machine's identity.
    """
    report = parse_webhook(fixture_bytes("post-install-webhook-9.1.json"))
    assert report.macs == (MANAGEMENT, OTHER)
    assert (report.serial, report.uuid) == ("7XK2LM3", "4c4c4544-0058-4b10-8032-b7c04f4c4d33")
    installation = report.installation
    assert installation.macs == ("b0:7b:25:c1:0a:10", "b0:7b:25:c1:0a:11")
    assert installation.address == "192.0.2.21/24"
    assert installation.fqdn == "pve01.example.com"
    assert (installation.product, installation.version) == ("pve", "9.1.1")
    assert installation.boot_mode == "efi"
    assert installation.filesystem == "zfs (RAID1)"
    assert installation.machine_id == "0f9e3c1b2a4d4e5f8a7b6c5d4e3f2a1b"
    assert installation.disks == (
        {
            "device": "/dev/sda",
            "serial": "SAMSUNG_MZ7KM480_S2HSNX0H5",
            "size": 480103981056,
            "boot": True,
        },
        {
            "device": "/dev/sdb",
            "serial": "SAMSUNG_MZ7KM480_S2HSNX0H6",
            "size": 480103981056,
            "boot": True,
        },
    )
    keys = installation.ssh_host_keys
    assert [key["type"] for key in keys] == ["ecdsa", "ed25519", "rsa"]
    ed25519 = fixture()["ssh-public-host-keys"]["ed25519"]
    # The fixture's keys are shortened: two are not even whole base64.
    assert [key["fingerprint"] for key in keys] == [
        "unreadable key",
        ssh_fingerprint(ed25519),
        "unreadable key",
    ]


def test_schema_1_0() -> None:
    """
    An 8.3 report (schema 1.0) reads alike; the management NIC comes first wherever it
    is listed, and its address is the one kept.
    """
    report = parse_webhook(body(schema_1_0()))
    assert report.macs == (MANAGEMENT, OTHER)
    assert report.installation.address == "192.0.2.21/24"
    assert report.installation.version == "8.3.0"
    assert report.installation.macs == ("b0:7b:25:c1:0a:10", "b0:7b:25:c1:0a:11")


def test_unknown_keys_and_a_token_are_tolerated() -> None:
    """
    A 9.2 report with its C{token}, and keys nobody knows yet, at the top and inside the
    tables pxe-pilot reads, gives the same report as without them, but for the token.
    """
    document = fixture()
    expected = parse_webhook(body(document))
    document["token"] = "srv01:8f2c0a9d"
    document["$schema"] = {"version": "1.3"}
    document["power-budget"] = {"watts": 750}
    document["product"]["codename"] = "trixie"
    document["network-interfaces"][0]["speed"] = 25000
    document["disks"][0]["wear"] = [1, 2]
    report = parse_webhook(body(document))
    assert report.token == "srv01:8f2c0a9d"
    assert attrs.evolve(report, token=None) == expected


def test_the_token_is_read_whole() -> None:
    """
    A 9.2 body's C{token} is read exactly as sent: not stripped, cut short or escaped as
    descriptive fields are, since it must match byte for byte.
    """
    document = fixture()
    token = " tok\u00e9n\n" + "x" * 500
    document["token"] = token
    assert parse_webhook(body(document)).token == token


def test_no_token() -> None:
    """
    A report without C{token} (every installer before 9.2, or an answer without
    C{auth-token}) has none.
    """
    assert "token" not in fixture()
    assert parse_webhook(body(fixture())).token is None


@pytest.mark.parametrize("value", [None, 42, True, ["tok"], {"value": "tok"}])
def test_a_token_that_is_not_a_string_is_absent(value: object) -> None:
    """
    A C{token} that is not a string reads as no token rather than refusing the body:
    whether a report must carry one is decided with the host's tokens, which refuse it
    there as they would a missing one.
    """
    document = fixture()
    document["token"] = value
    report = parse_webhook(body(document))
    assert report.token is None
    assert report.macs == (MANAGEMENT, OTHER)


def test_the_token_is_kept_out_of_what_is_shown_and_stored() -> None:
    """
    The token appears neither in the report's C{repr} (logs, tracebacks) nor in the
    installation that is stored and shown.
    """
    document = fixture()
    document["token"] = "s3cret-t0ken"
    report = parse_webhook(body(document))
    assert report.token == "s3cret-t0ken"
    assert "s3cret-t0ken" not in repr(report)
    assert "s3cret-t0ken" not in json.dumps(report.installation.as_json())
    assert "s3cret-t0ken" not in repr(report.installation)


def test_keys_with_hostile_values_are_absent() -> None:
    """
    Descriptive fields of the wrong type read as absent; long ones are cut short;
    disks that are not objects are skipped, and a size must be a whole number.
    """
    document = fixture()
    document["fqdn"] = 42
    document["product"] = ["pve"]
    document["filesystem"] = "x" * 1000
    document["ssh-public-host-keys"] = {"ed25519": ED25519_LINE, "rsa": None}
    document["disks"] = [
        "sda",
        {"size": True, "udev-properties": {"DEVNAME": "/dev/sdc"}},
        {"size": 1.5},
    ]
    installation = parse_webhook(body(document)).installation
    assert (installation.fqdn, installation.product, installation.version) == (None, None, None)
    assert installation.filesystem == "x" * 128
    assert installation.ssh_host_keys == ({"type": "ed25519", "fingerprint": ED25519_FINGERPRINT},)
    assert installation.disks == (
        {"device": "/dev/sdc", "serial": None, "size": None, "boot": False},
        {"device": None, "serial": None, "size": None, "boot": False},
    )


def test_a_nic_listed_twice_is_named_once() -> None:
    """
    A MAC address listed twice (bonded or aliased NICs) appears once, the management
    NIC's first, wherever it is listed.
    """
    document = fixture()
    management, other = document["network-interfaces"]
    document["network-interfaces"] = [
        {"mac": "B0:7B:25:C1:0A:10"},
        other,
        management,
        {"mac": "b0-7b-25-c1-0a-11"},
    ]
    report = parse_webhook(body(document))
    assert report.macs == (MANAGEMENT, OTHER)
    assert report.installation.macs == ("b0:7b:25:c1:0a:10", "b0:7b:25:c1:0a:11")
    assert report.installation.address == "192.0.2.21/24"


def test_the_largest_body_accepted() -> None:
    """
    A body of exactly L{MAX_WEBHOOK_BYTES} is read; a UTF-8 byte order mark is allowed.
    """
    data = b"\xef\xbb\xbf" + fixture_bytes("post-install-webhook-9.1.json")
    data += b" " * (MAX_WEBHOOK_BYTES - len(data))
    assert parse_webhook(data).macs == (MANAGEMENT, OTHER)


def big_server_report(nics: int = 64, disks: int = 48) -> dict[str, Any]:
    """
    The 9.1 fixture as a big server would send it: C{nics} ConnectX ports and C{disks}
    SATA SSDs, each with the udev properties a real one has (about 1 and 2 KB of them).
    """
    document = fixture()
    document["cpu-info"]["flags"] = " ".join(f"flag{n:03}" for n in range(160))
    interfaces = []
    for index in range(nics):
        mac = f"0c:42:a1:{index >> 8:02x}:{index & 255:02x}:{(index * 7) & 255:02x}"
        name = f"ens{index // 4 + 1}f{index % 4}np{index % 4}"
        pci = f"0000:{0x10 + index // 4:02x}:00.{index % 4}"
        interfaces.append(
            {
                "name": name,
                "mac": mac,
                "is-pinned": False,
                "udev-properties": {
                    "DEVPATH": f"/devices/pci0000:a0/0000:a0:03.1/{pci}/net/{name}",
                    "SUBSYSTEM": "net",
                    "INTERFACE": name,
                    "IFINDEX": str(index + 2),
                    "USEC_INITIALIZED": "5243214",
                    "ID_NET_NAMING_SCHEME": "v257",
                    "ID_NET_NAME_MAC": "enx" + mac.replace(":", ""),
                    "ID_OUI_FROM_DATABASE": "Mellanox Technologies, Inc.",
                    "ID_NET_NAME_PATH": f"enp{0x10 + index // 4}s0f{index % 4}np{index % 4}",
                    "ID_NET_NAME_SLOT": name,
                    "ID_BUS": "pci",
                    "ID_VENDOR_ID": "0x15b3",
                    "ID_MODEL_ID": "0x101d",
                    "ID_PCI_CLASS_FROM_DATABASE": "Network controller",
                    "ID_PCI_SUBCLASS_FROM_DATABASE": "Ethernet controller",
                    "ID_VENDOR_FROM_DATABASE": "Mellanox Technologies",
                    "ID_MODEL_FROM_DATABASE": "MT2892 Family [ConnectX-6 Dx]",
                    "ID_PATH": f"pci-{pci}",
                    "ID_PATH_TAG": "pci-" + pci.replace(":", "_").replace(".", "_"),
                    "ID_NET_DRIVER": "mlx5_core",
                    "ID_NET_LINK_FILE": "/usr/lib/systemd/network/99-default.link",
                    "ID_NET_NAME": name,
                    "SYSTEMD_ALIAS": f"/sys/subsystem/net/devices/{name}",
                    "TAGS": ":systemd:",
                    "CURRENT_TAGS": ":systemd:",
                },
            }
        )
    interfaces[0]["is-management"] = True
    interfaces[0]["address"] = "192.0.2.21/24"
    document["network-interfaces"] = interfaces
    document["disks"] = [_big_server_disk(index) for index in range(disks)]
    return document


def _big_server_disk(index: int) -> dict[str, Any]:
    name = "sd" + (chr(97 + index) if index < 26 else chr(96 + index // 26) + chr(97 + index % 26))
    serial = f"S2HSNX0H5{index:05}"
    model = "SAMSUNG_MZ7KM480HMHQ-00005"
    wwn = f"0x5002538c4{index:07x}"
    path = f"pci-0000:18:00.0-sas-exp0x500056b3{index:08x}-phy{index}-lun-0"
    features = ["HPA", "PM", "SECURITY", "SMART", "APM", "PUIS", "AAM"]
    udev = {
        "DEVPATH": f"/devices/pci0000:17/0000:17:00.0/0000:18:00.0/host0/port-0:{index}/"
        f"end_device-0:{index}/target0:0:{index}/0:0:{index}:0/block/{name}",
        "DEVNAME": f"/dev/{name}",
        "DEVTYPE": "disk",
        "DISKSEQ": str(index + 9),
        "MAJOR": "8",
        "MINOR": str(index * 16),
        "SUBSYSTEM": "block",
        "USEC_INITIALIZED": "4123456",
        "ID_ATA": "1",
        "ID_TYPE": "disk",
        "ID_BUS": "ata",
        "ID_MODEL": model,
        "ID_MODEL_ENC": model.replace("_", "\\x20") + "\\x20" * 14,
        "ID_REVISION": "GXM5304Q",
        "ID_SERIAL": f"{model}_{serial}",
        "ID_SERIAL_SHORT": serial,
        "ID_WWN": wwn,
        "ID_WWN_WITH_EXTENSION": wwn,
        "ID_ATA_SATA": "1",
        "ID_ATA_SATA_SIGNAL_RATE_GEN1": "1",
        "ID_ATA_SATA_SIGNAL_RATE_GEN2": "1",
        "ID_ATA_ROTATION_RATE_RPM": "0",
        "ID_ATA_WRITE_CACHE": "1",
        "ID_ATA_WRITE_CACHE_ENABLED": "1",
        "ID_ATA_DOWNLOAD_MICROCODE": "1",
        **{f"ID_ATA_FEATURE_SET_{feature}": "1" for feature in features},
        **{f"ID_ATA_FEATURE_SET_{feature}_ENABLED": "1" for feature in features},
        "ID_ATA_FEATURE_SET_SECURITY_ERASE_UNIT_MIN": "2",
        "ID_ATA_FEATURE_SET_SECURITY_ENHANCED_ERASE_UNIT_MIN": "2",
        "ID_PATH": path,
        "ID_PATH_TAG": path.replace(":", "_").replace(".", "_"),
        "ID_PART_TABLE_UUID": f"5f0c7b4e-2a1d-4c8e-9b3f-6d2e1a{index:06x}",
        "ID_PART_TABLE_TYPE": "gpt",
        "DEVLINKS": " ".join(
            [
                f"/dev/disk/by-id/wwn-{wwn}",
                f"/dev/disk/by-path/{path}",
                f"/dev/disk/by-id/ata-{model}_{serial}",
                f"/dev/disk/by-diskseq/{index + 9}",
            ]
        ),
        "TAGS": ":systemd:",
        "CURRENT_TAGS": ":systemd:",
    }
    return {
        "size": 480103981056,
        "block-size": 512,
        "is-bootdisk": index < 2,
        "udev-properties": udev,
    }


def test_a_big_server_report_fits_with_room_to_spare() -> None:
    """
    A server with 64 NICs and 48 disks, each with its udev properties, reports about
    185 KiB: L{MAX_WEBHOOK_BYTES} holds four such reports, yet not eight, and the report
    is read whole.
    """
    data = json.dumps(big_server_report(), indent=1).encode()
    assert 4 * len(data) <= MAX_WEBHOOK_BYTES <= 8 * len(data)
    report = parse_webhook(data)
    assert (len(report.macs), len(report.installation.disks)) == (64, 48)
    assert report.installation.address == "192.0.2.21/24"


def test_more_nics_than_a_machine_has_are_refused_before_any_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    40,000 NICs in under 1 MiB (a body that took a minute of the reactor to read) are
    refused naming the limit, without one MAC address parsed.
    """
    nics = [{"mac": f"{0x0C42A1000000 + n:012x}"} for n in range(40_000)]
    data = json.dumps({**fixture(), "network-interfaces": nics}, separators=(",", ":")).encode()
    assert len(data) <= MAX_WEBHOOK_BYTES
    parsed = counted_parses(monkeypatch)
    with pytest.raises(BadWebhook, match=f"lists 40000 entries; at most {MAX_INTERFACES} are"):
        parse_webhook(data)
    assert parsed == []


def test_nics_at_the_limit_are_read_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    L{MAX_INTERFACES} NICs, the second half the first again in upper case and the
    management NIC listed last, are read: each MAC address once, the management one
    first, the rest in the order first listed, with at most one comparison per NIC.
    """
    half = [f"0c:42:a1:00:00:{n:02x}" for n in range(MAX_INTERFACES // 2)]
    nics: list[dict[str, Any]] = [{"mac": mac} for mac in half + [m.upper() for m in half]]
    nics[-1]["is-management"] = True
    compared = counted_comparisons(monkeypatch)
    report = parse_webhook(interfaces(nics))
    assert len(compared) <= MAX_INTERFACES
    assert [str(mac) for mac in report.macs] == [half[-1], *half[:-1]]


@pytest.mark.parametrize(
    ("key", "value", "limit"),
    [
        ("disks", [{}] * (MAX_DISKS + 1), MAX_DISKS),
        ("ssh-public-host-keys", {f"k{n}": "" for n in range(MAX_HOST_KEYS + 1)}, MAX_HOST_KEYS),
    ],
)
def test_more_disks_or_host_keys_than_a_machine_has_are_refused(
    key: str, value: object, limit: int
) -> None:
    """
    A report listing more disks or host keys than any machine has is refused naming the
    limit, rather than kept on the host's timeline.
    """
    document = fixture()
    document[key] = value
    with pytest.raises(BadWebhook, match=f"{key} lists {limit + 1} entries; at most {limit}"):
        parse_webhook(body(document))


def interfaces(value: object) -> bytes:
    document = fixture()
    document["network-interfaces"] = value
    return body(document)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b'{"fqdn": "pve\xff"}', r"not UTF-8 \(byte 13\)", id="not-utf-8"),
        pytest.param(b'{"network-interfaces": [', "not valid JSON", id="not-json"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[]", "must be a JSON object, not a list", id="a-list"),
        pytest.param(b"null", "must be a JSON object, not null", id="null"),
        pytest.param(b"{}", "no network-interfaces", id="no-interfaces"),
        pytest.param(
            interfaces({"mac": "b0:7b:25:c1:0a:10"}),
            "an object as network-interfaces, not a list",
            id="interfaces-not-a-list",
        ),
        pytest.param(
            interfaces([{"mac": "b0:7b:25:c1:0a:10"}, "b0:7b:25:c1:0a:11"]),
            r"network-interfaces\[1\] is a string",
            id="interface-not-an-object",
        ),
        pytest.param(
            interfaces([{"mac": "b0:7b:25:c1:0a"}]),
            r"network-interfaces\[0\]\.mac 'b0:7b:25:c1:0a' is not a MAC address",
            id="bad-mac",
        ),
        pytest.param(
            interfaces([{"name": "eno1"}]),
            r"network-interfaces\[0\]\.mac None is not a MAC address",
            id="no-mac",
        ),
        pytest.param(
            interfaces([{"mac": 12345}]),
            r"network-interfaces\[0\]\.mac 12345 is not a MAC address",
            id="mac-not-a-string",
        ),
        pytest.param(interfaces([]), "lists no NIC", id="empty-list"),
        pytest.param(
            b"{" + b" " * MAX_WEBHOOK_BYTES + b"}",
            f"larger than {MAX_WEBHOOK_BYTES} bytes",
            id="too-large",
        ),
    ],
)
def test_bad_bodies(data: bytes, message: str) -> None:
    """
    Each kind of bad body is refused with a message that says what is wrong with it.
    """
    with pytest.raises(BadWebhook, match=message):
        parse_webhook(data)


def test_known_fingerprints() -> None:
    """
    The fingerprint of a key line is the one C{ssh-keygen -lf} prints, comment or not,
    whatever white space separates the fields.
    """
    assert ssh_fingerprint(ED25519_LINE) == ED25519_FINGERPRINT
    assert ssh_fingerprint(ECDSA_LINE) == ECDSA_FINGERPRINT
    algorithm, key, _ = ED25519_LINE.split()
    assert ssh_fingerprint(f"{algorithm} {key}") == ED25519_FINGERPRINT
    assert ssh_fingerprint(f"  {algorithm}\t{key}  root@pve01\n") == ED25519_FINGERPRINT


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "ssh-ed25519",
        "ssh-ed25519 not*base64! root@pve01",
        # Cut short: not whole base64 any more.
        ED25519_LINE.split()[0] + " " + ED25519_LINE.split()[1][:-3],
    ],
)
def test_unreadable_key_lines(line: str) -> None:
    assert ssh_fingerprint(line) is None


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
@pytest.mark.parametrize(
    "options", [["-t", "ed25519"], ["-t", "ecdsa", "-b", "384"], ["-t", "rsa", "-b", "1024"]]
)
def test_fingerprints_agree_with_ssh_keygen(tmp_path: Path, options: list[str]) -> None:
    """
    For a freshly made key of each type, the fingerprint is the one ssh-keygen prints.
    """
    key = tmp_path / "key"
    subprocess.run(
        ["ssh-keygen", "-q", *options, "-N", "", "-C", "root@pve01", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    listed = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()
    line = key.with_suffix(".pub").read_text()
    assert ssh_fingerprint(line) == listed[1]
    assert listed[1].startswith("SHA256:")
