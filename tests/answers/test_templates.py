"""
Answer file templates: C{models/<model>.toml.tmpl} and C{default.toml.tmpl}, with each
machine's values from C{inventory.toml}, escaped so that no value can change the
answer's structure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.identity import Identity, Rule
from pxepilot.answers.service import AnswerService, Invalid, Resolution, Served
from pxepilot.answers.template import InventoryHost, TemplateError, render
from pxepilot.answers.versions import NEWEST, VersionRange
from pxepilot.check_command import check_files
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir, clock_at_now, result_of
from tests.test_boot_routes import default_entry, publish
from tests.test_http import Client

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))
SERIAL = "7XK2LM3"

TEMPLATE = b"""[global]
keyboard = "en-us"
country = "us"
fqdn = {{ fqdn }}
mailto = "ops@example.com"
timezone = "UTC"
root-password = "change-this-password"

[network]
source = "from-answer"
cidr = {{ cidr }}   # the management address
gateway = {{gateway}}
dns = "192.0.2.53"
filter.ID_NET_NAME_MAC = "*"

[disk-setup]
filesystem = "ext4"
disk-list = ["sda"]
"""

INVENTORY = b"""[[host]]
mac = "b0:7b:25:c1:0a:10"
fqdn = "pve01.example.com"
cidr = "192.0.2.11/24"
gateway = "192.0.2.1"

[[host]]
serial = "7XK2LM3"
fqdn = "pve02.example.com"
cidr = "192.0.2.12/24"
gateway = "192.0.2.1"
"""


def host(**values: object) -> InventoryHost:
    return InventoryHost("pve99", None, "s", None, values)


def resolve(
    service: AnswerService, macs: Sequence[MacAddress], identity: Identity | None = None
) -> Deferred[Resolution]:
    return Deferred.fromCoroutine(service.resolve(macs, identity))


@pytest.fixture
def service(answers_dir: AnswersDir) -> AnswerService:
    return AnswerService(DirectoryAnswerFiles(answers_dir.root), clock_at_now())


@pytest.mark.parametrize(
    "value",
    [
        'pve"01',
        "pve01\nroot-password = 'x'",
        "]",
        "[section]",
        '"\n[disk-setup]\nfilesystem = "zfs',
        "\\",
        "'''",
    ],
)
def test_values_cannot_inject(value: str) -> None:
    """
    A value with quotes, newlines, C{]} or a table header stays one string value.
    """
    rendered = render("[global]\nfqdn = {{ fqdn }}\n", host(fqdn=value))
    assert tomllib.loads(rendered) == {"global": {"fqdn": value}}


def test_numbers_lists_and_booleans_stay_typed() -> None:
    rendered = render(
        "a = {{ n }}\nb = {{ l }}\nc = {{ t }}\n", host(n=8, l=["sda", "sdb"], t=True)
    )
    assert tomllib.loads(rendered) == {"a": 8, "b": ["sda", "sdb"], "c": True}


def test_a_missing_key_names_the_host_and_the_key() -> None:
    with pytest.raises(TemplateError) as raised:
        render("[global]\nfqdn = {{ fqdn }}\n", host())
    assert str(raised.value) == "inventory host pve99 has no value for 'fqdn'"
    assert raised.value.line == 2


@pytest.mark.parametrize(
    "line", ['fqdn = "{{ fqdn }}"', "{{ fqdn }} = 1", "[{{ fqdn }}]", "x = [{{ fqdn }}]"]
)
def test_placeholders_only_stand_for_whole_values(line: str) -> None:
    with pytest.raises(TemplateError, match="whole value"):
        render(f"{line}\n", host(fqdn="a"))


def test_a_model_template_is_rendered_for_the_machine(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    """
    A model template gets the values of the machine's inventory host, found by MAC or,
    as here, by serial number; the model rule chose it.
    """
    answers_dir.write("models/poweredge-r650.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY)
    resolution = result_of(resolve(service, [B], Identity.of(None, SERIAL, "PowerEdge R650")))
    assert isinstance(resolution, Served)
    assert resolution.rule is Rule.MODEL
    document = tomllib.loads(resolution.data.decode())
    assert document["global"]["fqdn"] == "pve02.example.com"
    assert document["network"]["cidr"] == "192.0.2.12/24"


def test_a_default_template(answers_dir: AnswersDir, service: AnswerService) -> None:
    answers_dir.write("default.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY)
    resolution = result_of(resolve(service, [A]))
    assert isinstance(resolution, Served) and resolution.rule is Rule.DEFAULT
    assert b'fqdn = "pve01.example.com"' in resolution.data


def test_a_machine_missing_from_the_inventory(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    answers_dir.write("default.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY)
    resolution = result_of(resolve(service, [B]))
    assert isinstance(resolution, Invalid)
    assert "no [[host]] for this machine" in resolution.describe()


def test_a_missing_key_is_not_served(answers_dir: AnswersDir, service: AnswerService) -> None:
    answers_dir.write("default.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", b'[[host]]\nmac = "b0:7b:25:c1:0a:10"\nfqdn = "a.b"\n')
    resolution = result_of(resolve(service, [A]))
    assert isinstance(resolution, Invalid)
    assert resolution.describe() == (
        "default.toml.tmpl, line 11: inventory host b0:7b:25:c1:0a:10 has no value for 'cidr'"
    )


def test_check_renders_every_inventory_host(answers_dir: AnswersDir) -> None:
    """
    C{pxe-pilot check} checks a template once for each inventory host, as rendered.
    """
    answers_dir.write("models/poweredge-r650.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY + b'\n[[host]]\nserial = "X9"\nfqdn = "x"\n')
    _, checked = check_files(answers_dir.root, VersionRange.exactly(NEWEST), "pve")
    by_name = {item.name: item for item in checked}
    assert set(by_name) == {
        "models/poweredge-r650.toml.tmpl for b0:7b:25:c1:0a:10",
        "models/poweredge-r650.toml.tmpl for 7XK2LM3",
        "models/poweredge-r650.toml.tmpl for X9",
    }
    assert not by_name["models/poweredge-r650.toml.tmpl for 7XK2LM3"].rejected
    missing = by_name["models/poweredge-r650.toml.tmpl for X9"]
    assert missing.rejected
    assert "has no value for 'cidr'" in missing.findings[0].message


def test_hosts_report_checks_templates(answers_dir: AnswersDir, service: AnswerService) -> None:
    answers_dir.write("models/poweredge-r650.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY)
    report = service.inspect(VersionRange.exactly(NEWEST))
    (template,) = report["identity_files"]
    assert (template["file"], template["valid"], template["hosts"]) == (
        "models/poweredge-r650.toml.tmpl",
        True,
        2,
    )


def test_the_menu_installs_with_a_default_template(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    The menu does not check a template it cannot render: the answer route checks the
    machine's rendering.
    """
    assets = tmp_path / "assets"
    assets.mkdir()
    publish(assets, "9.1-1")
    answers_dir.write("default.toml.tmpl", TEMPLATE)
    answers_dir.write("inventory.toml", INVENTORY)
    client = Client(answers_dir, assets)
    _, _, menu = client.request("GET", f"http://pxe.test/menu.ipxe?mac={A}&platform=efi")
    assert default_entry(menu.decode()) != "local"
