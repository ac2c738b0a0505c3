"""
Health of pxe-pilot's components, as reported by C{GET /health}: the interface each
component's check provides, its result, and how results add up.

Each check lives beside its component (C{answers/health.py}, C{tftp/service.py}, ...):
this module imports nothing of pxe-pilot, so any component may provide a check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from attrs import field, frozen
from zope.interface import Attribute, Interface, implementer

Status = Literal["ok", "degraded", "unavailable", "disabled"]


@frozen
class ComponentHealth:
    """
    How one component is doing.

    @ivar status: C{ok}; C{degraded} (working, but something needs the operator);
        C{unavailable} (not working: the service is unhealthy); C{disabled}.
    @ivar details: What the operator needs to know, JSON-ready. When the component is
        not C{ok}, C{details["reasons"]} may list what needs the operator, one sentence
        each, naming what it is about (see L{reasons}).
    """

    status: Status
    details: Mapping[str, Any] = field(factory=dict)

    @property
    def reasons(self) -> tuple[str, ...]:
        """
        What needs the operator, one sentence each, for a person (the status page).
        """
        return tuple(str(reason) for reason in self.details.get("reasons", ()))


class IHealthCheck(Interface):
    """
    One component that C{/health} reports on.
    """

    name = Attribute("The component's key in the report, such as C{answers}.")

    def check() -> ComponentHealth:
        """
        Look at the component now.
        """


def overall_status(components: Iterable[ComponentHealth]) -> Status:
    """
    C{unavailable} if any component is, else C{degraded} if any is, else C{ok}.
    """
    statuses = {c.status for c in components}
    if "unavailable" in statuses:
        return "unavailable"
    if "degraded" in statuses:
        return "degraded"
    return "ok"


@implementer(IHealthCheck)
@frozen
class Disabled:
    """
    A component switched off by configuration.
    """

    name: str

    def check(self) -> ComponentHealth:
        return ComponentHealth("disabled")
