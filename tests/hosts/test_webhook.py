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

from pxepilot.hosts.webhook import MAX_WEBHOOK_BYTES, BadWebhook, parse_webhook, ssh_fingerprint
from pxepilot.macs import MacAddress
from tests.conftest import fixture_bytes

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
