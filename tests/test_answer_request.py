"""
Reading the installer's system information, and refusing everything else clearly.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.answers.request import (
    MAX_INTERFACES,
    MAX_REQUEST_BYTES,
    BadInstallerRequest,
    InstallerRequest,
    parse_installer_request,
)
from pxepilot.macs import MacAddress
from tests.conftest import fixture_bytes
from tests.mac_counting import counted_comparisons, counted_parses

R650 = (
    MacAddress.parse("b0:7b:25:c1:0a:10"),
    MacAddress.parse("b0:7b:25:c1:0a:11"),
    MacAddress.parse("04:3f:72:a8:1e:20"),
)


@pytest.mark.parametrize(
    ("fixture", "schema", "release", "upper_case"),
    [
        ("installer-post-8.2.json", None, "8.2-2", False),
        ("installer-post-8.3-to-9.1.json", "1.0", "9.1-1", False),
        ("installer-post-9.2.json", "1.0", "9.2-1", True),
    ],
)
def test_fixtures(fixture: str, schema: str | None, release: str, upper_case: bool) -> None:
    """
    Every installer generation's request yields its MACs in payload order and its
    product, release and DMI identity.
    """
    request = parse_installer_request(fixture_bytes(fixture))
    assert request == InstallerRequest(
        macs=R650,
        product="pve",
        product_name="Proxmox VE",
        release=release.split("-")[0],
        iso_release=release.split("-")[1],
        schema_version=schema,
        upper_case_macs=upper_case,
        serial="7XK2LM3",
        uuid="4c4c4544-0058-4b10-8032-b7c04f4c4d33",
        model="PowerEdge R650",
    )
    assert request.release_label == release


def test_backup_server_vm() -> None:
    """
    A Proxmox Backup Server in a VM: one NIC, empty serial treated as absent.
    """
    request = parse_installer_request(fixture_bytes("installer-post-pbs-vm-9.2.json"))
    assert request.macs == (MacAddress.parse("BC:24:11:5E:7A:01"),)
    assert (request.product, request.release_label, request.serial) == ("pbs", "4.1-1", None)


def body(**document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "must be a JSON object, not a list"),
        (b'"x"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b"42", "must be a JSON object, not a number"),
        (body(product={}), "has no network_interfaces"),
        (body(network_interfaces=None), "network_interfaces must be a list, not null"),
        (body(network_interfaces={"mac": "b0:7b:25:c1:0a:10"}), "must be a list, not an object"),
        (body(network_interfaces=[]), "lists no MAC address"),
        (body(network_interfaces=["b0:7b:25:c1:0a:10"]), "network_interfaces[0] must be an obj"),
        (body(network_interfaces=[{"link": "eth0"}]), "network_interfaces[0] has no mac"),
        (body(network_interfaces=[{"mac": 42}]), "network_interfaces[0] mac must be a string"),
        (
            body(network_interfaces=[{"mac": "b0:7b:25:c1:0a:10"}, {"mac": "../../etc"}]),
            "network_interfaces[1].mac '../../etc' is not a MAC address",
        ),
        (body(network_interfaces=[{"mac": "/etc/shadow"}]), "is not a MAC address"),
        (b"[" * 100_000 + b"]" * 100_000, "not acceptable JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "not acceptable JSON"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not acceptable JSON"),
    ],
)
def test_bad_bodies(payload: bytes, message: str) -> None:
    """
    Bodies that are not installer system information raise L{BadInstallerRequest} with
    a message that says what is wrong.
    """
    with pytest.raises(BadInstallerRequest) as raised:
        parse_installer_request(payload)
    assert message in str(raised.value)


def test_long_bad_mac_is_shortened_in_the_message() -> None:
    """
    An absurd MAC value is quoted only in part.
    """
    with pytest.raises(BadInstallerRequest) as raised:
        parse_installer_request(body(network_interfaces=[{"mac": "x" * 10_000}]))
    assert len(str(raised.value)) < 120


def test_oversized_body() -> None:
    """
    Bodies over 1 MiB are refused without being parsed.
    """
    with pytest.raises(BadInstallerRequest, match="larger than 1048576 bytes"):
        parse_installer_request(b" " * (1 << 20) + b"{}")


def compact(**document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@pytest.mark.parametrize("distinct", [True, False], ids=["distinct", "one-mac"])
def test_more_interfaces_than_a_machine_has_are_refused_before_any_is_read(
    monkeypatch: pytest.MonkeyPatch, distinct: bool
) -> None:
    """
    45,000 interfaces in under 1 MiB (distinct MACs took two minutes of the reactor to
    read; one MAC repeated was accepted) are refused naming the limit, without one MAC
    address parsed.
    """
    macs = [f"{0xB07B25000000 + (n if distinct else 0):012x}" for n in range(45_000)]
    payload = compact(network_interfaces=[{"mac": mac} for mac in macs])
    assert len(payload) <= MAX_REQUEST_BYTES
    parsed = counted_parses(monkeypatch)
    with pytest.raises(BadInstallerRequest) as raised:
        parse_installer_request(payload)
    assert str(raised.value) == (
        f"network_interfaces lists 45000 interfaces; at most {MAX_INTERFACES} are accepted"
    )
    assert parsed == []


def test_one_interface_over_the_limit_is_refused() -> None:
    """
    The limit is exact: one interface more than L{MAX_INTERFACES} is refused.
    """
    count = MAX_INTERFACES + 1
    interfaces = [{"mac": f"b0:7b:25:00:{n >> 8:02x}:{n & 255:02x}"} for n in range(count)]
    with pytest.raises(BadInstallerRequest, match=f"at most {MAX_INTERFACES} are accepted"):
        parse_installer_request(compact(network_interfaces=interfaces))


def test_interfaces_at_the_limit_are_read_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    L{MAX_INTERFACES} interfaces, the second half the first again, reversed and in
    another spelling, are read: each MAC address once, in the order first listed, with
    at most one comparison per interface.
    """
    half = [f"b0:7b:25:00:00:{n:02x}" for n in range(MAX_INTERFACES // 2)]
    again = [mac.upper().replace(":", "-") for mac in reversed(half)]
    payload = compact(network_interfaces=[{"mac": mac} for mac in half + again])
    compared = counted_comparisons(monkeypatch)
    request = parse_installer_request(payload)
    assert [str(mac) for mac in request.macs] == half
    assert len(compared) <= MAX_INTERFACES
    assert request.upper_case_macs


def test_skipped_interfaces_are_described_briefly() -> None:
    """
    A skipped interface is described by its name, cut short, and its address without
    the white space around it: a body cannot make one entry long.
    """
    infiniband = ":".join(["80"] + ["00"] * 19)
    request = parse_installer_request(
        body(
            network_interfaces=[
                {"link": "ib" * 50_000, "mac": f"{' ' * 50_000}{infiniband}\n"},
                {"mac": "b0:7b:25:c1:0a:10"},
            ]
        )
    )
    assert request.skipped == (f"{'ib' * 16} {infiniband}",)


def test_other_hardware_addresses_are_skipped() -> None:
    """
    An InfiniBand interface (20-octet address) is skipped, not a reason to refuse the
    machine; a request with nothing but such interfaces has no MAC.
    """
    infiniband = ":".join(["80"] + ["00"] * 19)
    request = parse_installer_request(
        body(
            network_interfaces=[
                {"link": "ib0", "mac": infiniband},
                {"link": "eno1", "mac": "B0:7B:25:C1:0A:10"},
            ]
        )
    )
    assert request.macs == (R650[0],)
    assert request.skipped == (f"ib0 {infiniband}",)
    with pytest.raises(BadInstallerRequest, match="no MAC address"):
        parse_installer_request(body(network_interfaces=[{"link": "ib0", "mac": infiniband}]))


def test_duplicates_and_spellings() -> None:
    """
    A MAC listed twice (in any spelling) counts once, at its first position.
    """
    request = parse_installer_request(
        body(
            network_interfaces=[
                {"mac": "b0:7b:25:c1:0a:11"},
                {"mac": "B0-7B-25-C1-0A-10"},
                {"mac": "b07b.25c1.0a11"},
            ]
        )
    )
    assert request.macs == (R650[1], R650[0])


def test_metadata_of_the_wrong_type_is_ignored() -> None:
    """
    Product and ISO fields are descriptive: odd values are left out, never an error,
    and control characters never reach the log.
    """
    request = parse_installer_request(
        body(
            product=["pve"],
            iso={"release": 9.1, "isorelease": "1\n[fake]"},
            dmi={"system": "x"},
            network_interfaces=[{"mac": "b0:7b:25:c1:0a:10"}],
        )
    )
    assert (request.product, request.release, request.serial) == (None, None, None)
    assert request.iso_release == "1\\n[fake]"


def test_utf8_with_byte_order_mark() -> None:
    """
    A UTF-8 byte-order mark does not make a valid body invalid.
    """
    payload = b"\xef\xbb\xbf" + fixture_bytes("installer-post-9.2.json")
    assert parse_installer_request(payload).macs == R650


@given(st.binary(max_size=300))
def test_arbitrary_bytes(payload: bytes) -> None:
    """
    Any body either parses or raises L{BadInstallerRequest}.
    """
    with contextlib.suppress(BadInstallerRequest):
        parse_installer_request(payload)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["network_interfaces", "mac", "link", "product", "iso", "dmi", "system"]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=30,
    )
)
def test_arbitrary_json(document: object) -> None:
    """
    Any JSON document either parses or raises L{BadInstallerRequest}.
    """
    with contextlib.suppress(BadInstallerRequest):
        parse_installer_request(json.dumps(document).encode())
