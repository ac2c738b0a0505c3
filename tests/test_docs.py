"""
The documentation describes the options the code has, and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

from pxepilot.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent


def option_cell(setting: Setting) -> str:
    if setting.flag:
        return f"`--{setting.option}` / `--no-{setting.option}`"
    return f"`--{setting.option} {setting.metavar}`"


def expected_row(setting: Setting) -> str:
    default = f"`{setting.default}`" if setting.default else ""
    return f"| {option_cell(setting)} | `{setting.env}` | {default} | {setting.meaning} |"


def test_configuration_table_matches_settings() -> None:
    """
    docs/configuration.md has one row per setting, exactly as the code defines it.
    """
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("<!-- settings:")[1].split("<!-- end settings -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows == [expected_row(s) for s in SETTINGS]


def test_readme_names_every_option_and_variable() -> None:
    """
    The README's option table names every option and variable, and no other.
    """
    text = (ROOT / "README.md").read_text()
    assert set(re.findall(r"`(PXE_PILOT_[A-Z_]+)`", text)) == {s.env for s in SETTINGS}
    for setting in SETTINGS:
        assert option_cell(setting).split(" ")[0].rstrip("`") in text
