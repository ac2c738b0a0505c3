"""
A pytest plugin: with C{PXE_PILOT_REQUIRE_E2E=1} (set by C{.ci/run}) a skipped
end-to-end test fails the run. CI has root, QEMU and network namespaces, so a skip there
means a test did not run.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "e2e" in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PXE_PILOT_REQUIRE_E2E") == "1" and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"end-to-end tests were skipped, which CI does not allow: {_skipped}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
