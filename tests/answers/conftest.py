"""
Every checker test starts with no findings remembered, so a test that counts the
checker's work sees its own calls, whatever ran before it.
"""

from __future__ import annotations

import pytest

import pxepilot.answers.lint as lint_module


@pytest.fixture(autouse=True)
def no_remembered_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lint_module, "_recent", lint_module.remembered_checks())
