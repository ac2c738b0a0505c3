"""
Hypothesis strategies for hosts and their events, shared by the model and ledger tests.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pxepilot.hosts.model import Event, EventKind, Installation
from pxepilot.macs import MacAddress

MACS = tuple(MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(3))

# Values that survive a trip through JSON unchanged: no NaN (not equal to itself), no
# tuples (they come back as lists).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=4,
)

short_text = st.text(max_size=12)
maybe_text = st.none() | short_text

key_tables = st.dictionaries(short_text, short_text, max_size=2)

installations: st.SearchStrategy[Installation] = st.builds(
    Installation,
    fqdn=maybe_text,
    address=maybe_text,
    product=maybe_text,
    version=maybe_text,
    boot_mode=maybe_text,
    filesystem=maybe_text,
    machine_id=maybe_text,
    macs=st.lists(short_text, max_size=3).map(tuple),
    disks=st.lists(st.dictionaries(short_text, json_values, max_size=3), max_size=2).map(tuple),
    ssh_host_keys=st.lists(key_tables, max_size=2).map(tuple),
)


@st.composite
def details(draw: st.DrawFn, kind: EventKind) -> dict[str, Any]:
    """
    An event's detail: arbitrary JSON facts, sometimes with the fields the model reads.
    """
    detail: dict[str, Any] = draw(
        st.dictionaries(
            short_text.filter(lambda key: key != "installation"), json_values, max_size=3
        )
    )
    for name in ("serial", "uuid", "product", "file"):
        if draw(st.booleans()):
            detail[name] = draw(maybe_text)
    if kind is EventKind.INSTALLED and draw(st.booleans()):
        detail["installation"] = draw(installations).as_json()
    return detail


@st.composite
def events(draw: st.DrawFn, macs: tuple[MacAddress, ...] = MACS[:1]) -> Event:
    kind = draw(st.sampled_from(EventKind))
    return Event(
        mac=draw(st.sampled_from(macs)),
        at=draw(st.floats(min_value=0, max_value=4e9, allow_nan=False)),
        kind=kind,
        summary=draw(short_text),
        detail=draw(details(kind)),
    )
