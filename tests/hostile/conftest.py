"""
What the hostile-client tests share: a pxe-pilot in memory with one asset and a
default answer, for the attack to be tried on and a normal installer to be served by.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import AnswersDir
from tests.test_boot_routes import publish
from tests.test_http import Client


@pytest.fixture
def client(answers_dir: AnswersDir, tmp_path: Path) -> Client:
    assets = tmp_path / "assets"
    assets.mkdir()
    publish(assets, "9.1-1")
    answers_dir.write("default.toml")
    return Client(answers_dir, assets)
