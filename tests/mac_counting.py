"""
Counters of the work a body's MAC addresses cost, for tests that a reader stays linear
and bounded whatever a request lists.
"""

from __future__ import annotations

import pytest

from pxepilot.answers.request import MAX_INTERFACES
from pxepilot.macs import MacAddress


def counted_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    Every MAC address parsed from now on; parsing more than L{MAX_INTERFACES} fails the
    test at once, rather than after the minutes a quadratic reader would take.
    """
    parse = MacAddress.parse
    parsed: list[str] = []

    def counting(text: str) -> MacAddress:
        parsed.append(text)
        assert len(parsed) <= MAX_INTERFACES, "more MAC addresses parsed than a body may hold"
        return parse(text)

    monkeypatch.setattr(MacAddress, "parse", counting)
    return parsed


def counted_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """
    One entry per comparison of two MAC addresses from now on.
    """
    equal = MacAddress.__eq__
    compared: list[None] = []

    def counting(self: MacAddress, other: object) -> bool:
        compared.append(None)
        return equal(self, other)

    monkeypatch.setattr(MacAddress, "__eq__", counting)
    return compared
