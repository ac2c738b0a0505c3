"""
CI's rule: a skipped end-to-end test fails the run.
"""

from __future__ import annotations

import pytest

SUITE = """
import pytest

@pytest.mark.e2e
def test_needs_qemu():
    pytest.skip("no QEMU here")

def test_plain():
    pass
"""


@pytest.mark.parametrize(("required", "code"), [("1", 1), ("", 0)])
def test_skipped_e2e_fails_only_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: str, code: int
) -> None:
    """
    With C{PXE_PILOT_REQUIRE_E2E=1} a skipped C{e2e} test makes the run fail; without it
    the skip is only reported.
    """
    monkeypatch.setenv("PXE_PILOT_REQUIRE_E2E", required)
    pytester.makeini("[pytest]\nmarkers =\n    e2e: end-to-end\n")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess("-p", "tests.e2e_policy")
    assert result.ret == code
    result.assert_outcomes(passed=1, skipped=1)
