"""
Every ISC Kea and ISC dhcpd configuration in the DHCP documentation is one that the
server itself accepts: C{kea-dhcp4 -t} / C{kea-dhcp6 -t} and C{dhcpd -t} check each
block as an operator would paste it. (The dnsmasq blocks are run in the QEMU lab; Kea's
IPv6 classes boot a machine in tests/e2e/test_ipv6.py.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs_snippets import ROOT, Snippet, snippets

pytestmark = pytest.mark.e2e

DHCP_PAGE = ROOT / "docs" / "dhcp.md"


def _kea_blocks() -> list[Snippet]:
    return [s for s in snippets((DHCP_PAGE,)) if s.language == "json" and '"Dhcp' in s.text]


def _dhcpd_blocks() -> list[Snippet]:
    # dhcpd's blocks have no language of their own: they are the ones with its syntax.
    return [
        s
        for s in snippets((DHCP_PAGE,))
        if s.language == "" and ("filename " in s.text or "match if " in s.text)
    ]


def _require(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{program} is not installed (.ci/run installs it)")
    return found


def test_the_page_has_kea_and_dhcpd_blocks() -> None:
    """
    The blocks below are found: a change of the page's layout cannot make the checks
    vacuous.
    """
    assert len(_kea_blocks()) >= 3
    assert len(_dhcpd_blocks()) >= 3


@pytest.mark.parametrize("block", _kea_blocks(), ids=lambda s: s.where)
def test_kea_accepts_the_documented_configuration(block: Snippet, tmp_path: Path) -> None:
    """
    The page shows Kea's C{"Dhcp4"}/C{"Dhcp6"} member as it goes into kea-dhcp4.conf /
    kea-dhcp6.conf: wrapped in the file's braces, Kea's own check accepts it.
    """
    program = _require("kea-dhcp6" if '"Dhcp6"' in block.text else "kea-dhcp4")
    configuration = tmp_path / "kea.conf"
    configuration.write_text("{\n" + block.text + "}\n")
    checked = subprocess.run(
        [program, "-t", str(configuration)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("block", _dhcpd_blocks(), ids=lambda s: s.where)
def test_dhcpd_accepts_the_documented_configuration(block: Snippet, tmp_path: Path) -> None:
    """
    Each dhcpd block is a whole dhcpd.conf (or the class declarations one holds), and
    C{dhcpd -t} accepts it.
    """
    program = _require("dhcpd")
    configuration = tmp_path / "dhcpd.conf"
    configuration.write_text(block.text)
    checked = subprocess.run(
        [program, "-t", "-cf", str(configuration)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_wrong_configuration_is_refused(tmp_path: Path) -> None:
    """
    The checks can fail: dhcpd refuses a conditional outside any scope with an
    undeclared option, Kea a class whose test does not parse.
    """
    dhcpd = _require("dhcpd")
    broken = tmp_path / "dhcpd.conf"
    broken.write_text('if option arch = 00:07 {\n  filename "snponly.efi";\n}\n')
    refused = subprocess.run([dhcpd, "-t", "-cf", str(broken)], capture_output=True, check=False)
    assert refused.returncode != 0
    kea = _require("kea-dhcp4")
    wrong = tmp_path / "kea.conf"
    wrong.write_text('{"Dhcp4": {"client-classes": [{"name": "x", "test": "option[93]. =="}]}}')
    refused = subprocess.run([kea, "-t", str(wrong)], capture_output=True, check=False)
    assert refused.returncode != 0
