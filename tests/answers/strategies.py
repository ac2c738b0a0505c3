"""
Hypothesis strategies for answer documents: a valid answer for some installer version,
or nothing, with known keys (in either spelling) and unknown ones added anywhere, holding
plausible or arbitrary values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from pxepilot.answers.schema import SCHEMA, Key
from pxepilot.answers.versions import InstallerVersion

V = InstallerVersion.parse

VERSIONS = tuple(V(text) for text in ("8.2", "8.3", "8.4", "8.4.3", "9.0", "9.1", "9.2"))

# Key names as people mistype them, and anything else a dictionary key can be.
unknown_names: st.SearchStrategy[str] = st.sampled_from(
    ["rebot-on-error", "disk_setup", "password", "raid", "Keyboard", "sources", "zfs.raid"]
) | st.text(st.characters(codec="utf-8"), max_size=10)

scalars: st.SearchStrategy[Any] = (
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["sda", "from-dhcp", "raid1", "192.0.2.1", "en-us", "UTC", "#1 [x]", "]#["])
    | st.dates()
)

any_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(unknown_names, children, max_size=3)
    ),
    max_leaves=6,
)

# A value of the right form for the keys whose strings are not a fixed set.
EXAMPLES: dict[str, list[Any]] = {
    "country": ["at", "us", "US"],
    "fqdn": ["pve01.example.com", {"source": "from-dhcp"}, {"source": "from-dhcp", "domain": ""}],
    "mailto": ["ops@example.com"],
    "timezone": ["UTC", "Europe/Vienna"],
    "root-password": ["changeme123", "short"],
    "root-password-hashed": ["$6$salt$0123456789abcdef"],
    "root-ssh-keys": [["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 ops@example.com"]],
    "subscription-key": ["pve4c-0123456789"],
    "cidr": ["192.0.2.10/24"],
    "dns": ["192.0.2.1"],
    "gateway": ["192.0.2.254"],
    "raid": ["raid0", "raid1", "RAID1"],
    "url": ["https://answers.example.com/first-boot"],
    "cert-fingerprint": ["AA:BB:CC"],
    "auth-token": ["hook:secret"],
    "ashift": [12],
    "arc-max": [2048],
    "copies": [1, 2],
    "disk-list": [["sda"], ["sda", "sdb"], ["sda", "sdb", "sdc", "sdd"]],
    "mapping": [{"aa:bb:cc:dd:ee:ff": "lan0"}],
    "zfs": [{"raid": "raid1"}],
    "btrfs": [{"raid": "raid1"}],
    "interface-name-pinning": [{"enabled": True}],
    "post-installation-webhook": [{"url": "https://hooks.example.com/installed"}],
    "first-boot": [{"source": "from-iso"}],
}


def base_answer(version: InstallerVersion, filesystem: str = "zfs") -> dict[str, Any]:
    """
    An answer the installer C{version} accepts, spelled as it wants, installing on
    C{filesystem} (zfs, btrfs or ext4).
    """
    kebab = version >= V("8.4")

    def spell(name: str) -> str:
        return name if kebab else name.replace("-", "_")

    return {
        "global": {
            "keyboard": "en-us",
            "country": "us",
            "fqdn": "pve01.example.com",
            "mailto": "ops@example.com",
            "timezone": "UTC",
            spell("root-password"): "changeme123",
        },
        "network": {"source": "from-dhcp"},
        "disk-setup": {
            "filesystem": filesystem,
            spell("disk-list"): ["sda"] if filesystem == "ext4" else ["sda", "sdb"],
        }
        | ({} if filesystem == "ext4" else {filesystem: {"raid": "raid1"}}),
    }


def _known_keys(spec: Key, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Key]]:
    """
    Every key of the schema with the path of the table it is in.
    """
    for key in spec.keys:
        yield path, key
        if key.kind == "section":
            yield from _known_keys(key, (*path, key.name))


KNOWN_KEYS = tuple(_known_keys(SCHEMA))
# The keys some installers take and others do not, or take spelled another way.
CHANGED_KEYS = tuple(
    (path, key) for path, key in KNOWN_KEYS if key.since > V("8.2") or "-" in key.name
)


def _tables(table: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """
    A document's tables, nested ones included.
    """
    yield table
    for value in table.values():
        if isinstance(value, dict):
            yield from _tables(value)


def _table_at(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """
    The table at C{path}, made (in place of whatever was there) if need be.
    """
    table = document
    for name in path:
        if not isinstance(table.get(name), dict):
            table[name] = {}
        table = table[name]
    return table


def _plausible(key: Key) -> st.SearchStrategy[Any]:
    """
    A value of the right form for C{key}, often one the installer accepts.
    """
    if key.name in EXAMPLES:
        return st.sampled_from(EXAMPLES[key.name])
    if key.values is not None:
        return st.sampled_from(sorted(key.values))
    by_kind: dict[str, st.SearchStrategy[Any]] = {
        "bool": st.booleans(),
        "int": st.sampled_from([1, 12, 64]),
        "number": st.sampled_from([2, 8.5, 64]),
        "strings": st.lists(st.sampled_from(["sda", "sdb", "sdc"]), max_size=2),
        "table": st.dictionaries(st.sampled_from(["ID_SERIAL", "ID_NET_NAME_MAC"]), scalars),
        "section": st.just({}),
    }
    return by_kind.get(key.kind, any_values)


@st.composite
def answer_documents(draw: st.DrawFn) -> tuple[InstallerVersion, dict[str, Any]]:
    """
    An installer version and a document for it: mostly its valid answer, sometimes an
    empty one, with a key of the schema set to a plausible value (in either spelling,
    often a key whose acceptance changed between versions), and up to two more keys:
    known or unknown, with plausible or arbitrary values.
    """
    version = draw(st.sampled_from(VERSIONS))
    empty = draw(st.integers(0, 7)) == 0
    filesystem = draw(st.sampled_from(["zfs", "btrfs", "ext4"]))
    document: dict[str, Any] = {} if empty else base_answer(version, filesystem)
    for number in range(draw(st.integers(1, 3))):
        if number == 0 or draw(st.booleans()):
            path, key = draw(st.sampled_from(CHANGED_KEYS) | st.sampled_from(KNOWN_KEYS))
            name = draw(st.sampled_from(sorted({key.name, key.snake_name})))
            table = _table_at(document, path)
            if number == 0 or draw(st.booleans()):
                # A copy: tables set here may get keys of their own later.
                table[name] = copy.deepcopy(draw(_plausible(key)))
            else:
                table[name] = draw(any_values)
        else:
            table = draw(st.sampled_from(list(_tables(document))))
            table[draw(unknown_names)] = draw(any_values)
    return version, document
