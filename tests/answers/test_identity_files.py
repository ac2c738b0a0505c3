"""
Answer files named after a machine's DMI identity: C{uuids/}, C{serials/} and
C{models/}, their precedence between the MAC files and the default, the placeholder
values that never match, and the path rules for values the request carries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.identity import (
    MAX_IDENTITY_LENGTH,
    Identity,
    Rule,
    model_key,
    serial_key,
    useless,
    uuid_key,
)
from pxepilot.answers.service import AnswerService, Changing, NoAnswer, Resolution, Served
from pxepilot.answers.versions import NEWEST, VersionRange
from pxepilot.check_command import check_files
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir, clock_at_now, fixture_bytes, marker, result_of
from tests.test_boot_routes import default_entry, publish
from tests.test_http import Client
from tests.test_simulate import as_json, simulate

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))
UUID = "4c4c4544-0058-4b10-8032-b7c04f4c4d33"
SERIAL = "7XK2LM3"
MODEL = "PowerEdge R650"
R650 = Identity.of(UUID, SERIAL, MODEL)

PLACEHOLDERS = [
    "",
    "   ",
    "To Be Filled By O.E.M.",
    "to be filled by o.e.m.",
    "Default string",
    "0123456789",
    "System Serial Number",
    "Not Specified",
    "None",
    "N/A",
    "00000000",
    "XXXXXXXXXX",
    "00000000-0000-0000-0000-000000000000",
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "ffffffffffffffffffffffffffffffff",
    "03000200-0400-0500-0006-000700080009",
]


def resolve(
    service: AnswerService, macs: Sequence[MacAddress], identity: Identity | None
) -> Deferred[Resolution]:
    return Deferred.fromCoroutine(service.resolve(macs, identity))


@pytest.fixture
def service(answers_dir: AnswersDir) -> AnswerService:
    return AnswerService(DirectoryAnswerFiles(answers_dir.root), clock_at_now())


def rack(answers_dir: AnswersDir) -> None:
    """
    One file at every step of the precedence.
    """
    for name in (
        "default.toml",
        f"hosts/{A.canonical}.toml",
        f"uuids/{UUID}.toml",
        f"serials/{SERIAL}.toml",
        "models/poweredge-r650.toml",
    ):
        answers_dir.write(name, marker(name))


@pytest.mark.parametrize(
    ("macs", "remove", "source", "rule"),
    [
        ([A], [], f"hosts/{A.canonical}.toml", Rule.MAC),
        ([B], [], f"uuids/{UUID}.toml", Rule.UUID),
        ([B], [f"uuids/{UUID}.toml"], f"serials/{SERIAL}.toml", Rule.SERIAL),
        (
            [B],
            [f"uuids/{UUID}.toml", f"serials/{SERIAL}.toml"],
            "models/poweredge-r650.toml",
            Rule.MODEL,
        ),
        (
            [B],
            [f"uuids/{UUID}.toml", f"serials/{SERIAL}.toml", "models/poweredge-r650.toml"],
            "default.toml",
            Rule.DEFAULT,
        ),
    ],
)
def test_precedence(
    answers_dir: AnswersDir,
    service: AnswerService,
    macs: list[MacAddress],
    remove: list[str],
    source: str,
    rule: Rule,
) -> None:
    """
    MAC file, then UUID, then serial, then model, then C{default.toml}: the first that
    exists is served whole, never merged.
    """
    rack(answers_dir)
    for name in remove:
        (answers_dir.root / name).unlink()
    resolution = result_of(resolve(service, macs, R650))
    assert isinstance(resolution, Served)
    assert (resolution.source, resolution.rule, resolution.data) == (source, rule, marker(source))


def test_nothing_at_all_is_no_answer(answers_dir: AnswersDir, service: AnswerService) -> None:
    """
    No file of any kind: no answer (404 at the route).
    """
    answers_dir.write(f"serials/{SERIAL}-other.toml")
    assert result_of(resolve(service, [B], R650)) == NoAnswer()


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholders_are_useless(value: str) -> None:
    """
    Firmware placeholders, blanks and one character repeated name no machine.
    """
    assert useless(value)
    assert uuid_key(value) is None
    assert serial_key(value) is None
    assert model_key(value) is None


@pytest.mark.parametrize(
    "value", ["To Be Filled By O.E.M.", "Default string", "0123456789", "Not Specified"]
)
def test_a_placeholder_never_matches_its_file(
    answers_dir: AnswersDir, service: AnswerService, value: str
) -> None:
    """
    A machine whose firmware left a placeholder gets the default, even when a file is
    named after that placeholder; the file is reported by C{/hosts} and C{check}.
    """
    answers_dir.write("default.toml")
    answers_dir.write(f"serials/{value}.toml")
    answers_dir.write(f"models/{value}.toml")
    resolution = result_of(resolve(service, [B], Identity.of(None, value, value)))
    assert isinstance(resolution, Served) and resolution.rule is Rule.DEFAULT
    report = service.inspect()
    reported = {item["file"] for item in report["unrecognised_files"]}
    assert {f"serials/{value}.toml", f"models/{value}.toml"} <= reported
    assert report["identity_files"] == []
    unrecognised, checked = check_files(answers_dir.root, VersionRange.exactly(NEWEST), None)
    assert f"serials/{value}.toml" in unrecognised
    assert [c.name for c in checked] == ["default.toml"]


@pytest.mark.parametrize(
    "uuid", [UUID, UUID.upper(), UUID.replace("-", ""), UUID.upper().replace("-", "")]
)
def test_uuids_in_any_case_with_or_without_dashes(
    answers_dir: AnswersDir, service: AnswerService, uuid: str
) -> None:
    """
    A UUID file matches whatever the case and dashes of the file name or the request.
    """
    answers_dir.write(f"uuids/{uuid}.toml", marker("uuid"))
    for asked in (UUID, UUID.upper().replace("-", "")):
        resolution = result_of(resolve(service, [B], Identity.of(asked, None, None)))
        assert isinstance(resolution, Served) and resolution.data == marker("uuid")


def test_model_slug() -> None:
    """
    Lower case, every run of other characters one dash.
    """
    assert model_key("PowerEdge R650") == "poweredge-r650"
    assert model_key("  ProLiant DL380 Gen10 Plus ") == "proliant-dl380-gen10-plus"
    assert model_key("Super/Server (X12)") == "super-server-x12"


def test_conflicting_spellings_are_flagged(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    """
    Two files for one UUID: the canonical one is used, and C{/hosts} says so.
    """
    answers_dir.write(f"uuids/{UUID}.toml", marker("canonical"))
    answers_dir.write(f"uuids/{UUID.upper().replace('-', '')}.toml", marker("other"))
    resolution = result_of(resolve(service, [B], R650))
    assert isinstance(resolution, Served) and resolution.data == marker("canonical")
    by_file = {item["file"]: item for item in service.inspect()["identity_files"]}
    canonical = by_file[f"uuids/{UUID}.toml"]
    assert canonical["used"] and canonical["rule"] == "uuid" and canonical["key"] == UUID
    other = by_file[f"uuids/{UUID.upper().replace('-', '')}.toml"]
    assert not other["used"]
    assert other["conflicts_with"] == [f"uuids/{UUID}.toml"]


@pytest.mark.parametrize(
    "serial",
    [
        "../default",
        "..",
        "a/b",
        "a\\b",
        ".hidden",
        "x" * (MAX_IDENTITY_LENGTH + 1),
        "bad\x00byte",
        "tab\there",
    ],
)
def test_unsafe_serials_never_match(serial: str) -> None:
    """
    A serial number is untrusted: one that could not be a plain file name never matches.
    """
    assert serial_key(serial) is None


@pytest.mark.parametrize("uuid", ["../" + UUID, UUID + "/x", UUID[:-1], "g" * 32])
def test_malformed_uuids_never_match(uuid: str) -> None:
    assert uuid_key(uuid) is None


def test_traversal_in_the_request_reaches_no_file(
    answers_dir: AnswersDir, service: AnswerService, tmp_path: Path
) -> None:
    """
    A serial naming a path outside C{serials/} matches nothing, even where that path
    exists.
    """
    answers_dir.write("default.toml")
    answers_dir.write("hosts/secret.toml", marker("secret"))
    identity = Identity.of("../hosts/secret", "../hosts/secret", None)
    resolution = result_of(resolve(service, [B], identity))
    assert isinstance(resolution, Served) and resolution.source == "default.toml"


def installer_body(
    *, serial: str | None = SERIAL, uuid: str | None = None, model: str | None = None
) -> bytes:
    document = json.loads(fixture_bytes("installer-post-8.3-to-9.1.json"))
    document["dmi"]["system"].update(
        {"serial": serial or "", "uuid": uuid or "", "name": model or ""}
    )
    return json.dumps(document).encode()


def test_a_serial_match_over_http(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    A request that matches only a serial file gets it; the headers and the host ledger
    say the serial rule chose it, and the ledger keeps the model.
    """
    answers_dir.write("default.toml")
    answers_dir.write(f"serials/{SERIAL}.toml", marker("serial"))
    client = Client(answers_dir, tmp_path / "assets")
    code, headers, body = client.answer(installer_body(model=MODEL))
    assert code == 200
    assert body == marker("serial")
    assert headers["x-pxe-pilot-source"] == f"serials/{SERIAL}.toml"
    assert headers["x-pxe-pilot-rule"] == "serial"
    mac = MacAddress.parse("b0:7b:25:c1:0a:10")
    host = client.pilot.ledger.host(mac)
    assert host is not None
    assert (host.rule, host.serial, host.model) == ("serial", SERIAL, MODEL)
    code, _, page = client.request("GET", "http://pxe-pilot.test/")
    assert code == 200
    for shown in (SERIAL, MODEL, f"serials/{SERIAL}.toml", "by serial"):
        assert shown.encode() in page


def test_an_8_2_request_without_dmi(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    A request without C{dmi} falls through the identity rules to the default.
    """
    answers_dir.write("default.toml")
    answers_dir.write(f"serials/{SERIAL}.toml")
    document = json.loads(fixture_bytes("installer-post-8.2.json"))
    del document["dmi"]
    client = Client(answers_dir, tmp_path / "assets")
    code, headers, _ = client.answer(json.dumps(document).encode())
    assert code == 200
    assert (headers["x-pxe-pilot-source"], headers["x-pxe-pilot-rule"]) == (
        "default.toml",
        "default",
    )


def test_install_once_follows_the_serial(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    An installed machine asking again with another network card is held back as the
    host it was installed as, found by its serial number; the status route finds it
    by serial too.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, tmp_path / "assets")
    assert client.answer(installer_body())[0] == 200
    webhook = fixture_bytes("post-install-webhook-9.1.json")
    assert client.json("POST", "http://pxe-pilot.test/webhook", data=webhook)[0] == 200
    document = json.loads(installer_body())
    for index, interface in enumerate(document["network_interfaces"]):
        interface["mac"] = f"02:00:00:00:00:0{index}"
    code, error = client.json("POST", "http://pxe-pilot.test/answer", data=json.dumps(document))
    assert code == 409
    assert "b0:7b:25:c1:0a:10 was installed" in error["error"]
    code, host = client.json("GET", f"http://pxe-pilot.test/hosts/{SERIAL}/status")
    assert (code, host["mac"], host["state"]) == (200, "b0:7b:25:c1:0a:10", "installed")


def test_a_placeholder_serial_does_not_follow(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Two machines whose firmware says C{To Be Filled By O.E.M.} are not one machine.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, tmp_path / "assets")
    placeholder = installer_body(serial="To Be Filled By O.E.M.")
    assert client.answer(placeholder)[0] == 200
    webhook = json.loads(fixture_bytes("post-install-webhook-9.1.json"))
    client.json("POST", "http://pxe-pilot.test/webhook", data=json.dumps(webhook))
    document = json.loads(placeholder)
    for index, interface in enumerate(document["network_interfaces"]):
        interface["mac"] = f"02:00:00:00:00:0{index}"
    assert client.answer(json.dumps(document).encode())[0] == 200


def test_simulate_names_the_rule(answers_dir: AnswersDir) -> None:
    """
    C{pxe-pilot simulate --answers} chooses as the answer route does, and says by which
    rule.
    """
    answers_dir.write("default.toml")
    answers_dir.write("models/poweredge-r650.toml")
    answers = str(answers_dir.root)
    done = simulate("--mac", str(B), "--model", MODEL, "--answers", answers)
    assert done.returncode == 0, done.stderr
    assert "answer file: models/poweredge-r650.toml" in done.stdout
    assert "why: no host file for its MAC address: the file of its model" in done.stdout
    report = as_json(simulate("--mac", str(B), "--model", MODEL, "--answers", answers, "--json"))
    assert (report["rule"], report["request"]["model"]) == ("model", MODEL)


def test_an_identity_file_being_written_is_not_served(answers_dir: AnswersDir) -> None:
    """
    A serial file changed a moment ago is waited for like a MAC file; one still changing
    when the wait runs out is never served.
    """
    answers_dir.write("default.toml")
    answers_dir.write(f"serials/{SERIAL}.toml", age=0)
    service = AnswerService(DirectoryAnswerFiles(answers_dir.root), clock_at_now(), max_wait=0)
    assert result_of(resolve(service, [B], R650)) == Changing(f"serials/{SERIAL}.toml", 1)


def test_the_menu_finds_identity_files_it_is_told_of(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    With no MAC file and no default, the menu installs a machine whose menu URL names
    a serial number with a file, and boots the local disk of one that names none.
    """
    assets = tmp_path / "assets"
    assets.mkdir()
    publish(assets, "9.1-1")
    answers_dir.write(f"serials/{SERIAL}.toml")
    client = Client(answers_dir, assets)
    menu = f"http://pxe.test/menu.ipxe?mac={A}&platform=efi"
    _, _, known = client.request("GET", f"{menu}&serial={SERIAL}")
    assert default_entry(known.decode()) != "local"
    _, _, unknown = client.request("GET", f"{menu}&serial=OTHER1")
    assert default_entry(unknown.decode()) == "local"


def test_the_menu_finds_a_model_file_from_an_escaped_product_name(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    iPXE escapes the product name it sends (C{${product:uristring}}): the menu finds
    the model's file by it, and the menu's own address, to come back to after a
    failure, keeps the identity, escaped again.
    """
    assets = tmp_path / "assets"
    assets.mkdir()
    publish(assets, "9.1-1")
    answers_dir.write("models/poweredge-r650.toml")
    client = Client(answers_dir, assets)
    menu = f"http://pxe.test/menu.ipxe?mac={A}&platform=efi&product=PowerEdge%20R650"
    _, _, body = client.request("GET", f"{menu}&serial=AB%26C%201")
    script = body.decode()
    assert default_entry(script) != "local"
    assert "product=PowerEdge%20R650" in script
    assert "serial=AB%26C%201" in script
