"""
Every environment variable pxe-pilot's programs read is documented in
docs/configuration.md: the server's settings in their generated table, the operator
command's beside them.
"""

from __future__ import annotations

import re
from pathlib import Path

from pxepilot.cli import DEFAULT_URL
from pxepilot.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
# os.environ["X"], os.environ.get("X"), environ.get("X", ...): a variable read by name.
_READ = re.compile(r"""environ(?:\.get\(|\[)\s*["'](PXE_PILOT_[A-Z0-9_]+)["']""")


def variables_read() -> set[str]:
    found = {s.env for s in SETTINGS}
    for package in ("pxepilot", "builder"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(_READ.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_variable_read_is_documented() -> None:
    """
    A variable the code reads and the configuration page does not name is one nobody
    can find.
    """
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(PXE_PILOT_[A-Z0-9_]+)`", text))
    assert "PXE_PILOT_URL" in variables_read()
    assert variables_read() - documented == set()


def test_the_command_line_server_address_and_its_default() -> None:
    """
    C{PXE_PILOT_URL}, the server the C{pxe-pilot} command talks to, is in the command's
    table with the default the command uses.
    """
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("## The pxe-pilot command")[1]
    [row] = [line for line in section.splitlines() if "`PXE_PILOT_URL`" in line]
    assert row.startswith(f"| `--url URL` | `PXE_PILOT_URL` | `{DEFAULT_URL}` |")
