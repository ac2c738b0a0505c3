"""
The shape of pxe-pilot's imports, read from the source: the protocols know nothing of
the ledger, HTTP or the metrics; events and health are leaves; no package needs another
that needs it back. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "pxepilot"

# Each rule: modules under these parts may not import any of those.
FORBIDDEN = {
    "tftp": ("hosts", "http", "metrics", "application", "answers", "dhcp"),
    "dhcp": ("hosts", "http", "metrics", "application", "answers", "tftp", "boot"),
    "boot": ("hosts", "http", "metrics", "application", "dhcp"),
    "hosts": ("http", "tftp", "dhcp", "boot", "metrics", "application"),
    "answers": ("hosts", "http", "tftp", "dhcp", "boot", "metrics", "application"),
    "metrics": ("hosts", "http", "tftp", "dhcp", "boot", "answers", "application"),
}
# Leaves: the only parts of pxe-pilot they may import.
LEAVES = {
    "events": {"logs", "macs"},
    "health": set(),
    "address": set(),
    "tls": set(),
    "macs": set(),
    "logs": set(),
    "_version": set(),
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imported(path: Path) -> set[str]:
    """
    Every pxe-pilot module C{path} imports, wherever in the file (lazy imports count).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pxepilot":
                found.update(f"pxepilot.{alias.name}" for alias in node.names)
            elif node.module.startswith("pxepilot."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pxepilot."))
    return found


def part(module: str) -> str:
    """
    The top-level part of pxe-pilot a module belongs to: its subpackage, or itself.
    """
    return module.split(".")[1] if "." in module else ""


def test_the_source_is_read() -> None:
    """
    The rules below see the modules they are about, with the imports they have.
    """
    found = dict(modules())
    assert "pxepilot.tftp.server" in found
    assert "pxepilot.events" in imported(found["pxepilot.tftp.server"])
    assert "pxepilot.hosts.ledger" in imported(found["pxepilot.hosts.recorder"])


@pytest.mark.parametrize("owner", sorted(FORBIDDEN))
def test_parts_do_not_reach_into_what_they_must_not_know(owner: str) -> None:
    """
    The protocols (TFTP, proxyDHCP, the boot chain) import no ledger, HTTP or metrics:
    they publish events. The ledger imports no protocol or route; the metrics import
    no component. A violation names the module and the import.
    """
    violations = [
        f"{module} imports {target}"
        for module, path in modules()
        if part(module) == owner
        for target in sorted(imported(path))
        if part(target) in FORBIDDEN[owner]
    ]
    assert violations == []


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_leaves(leaf: str) -> None:
    """
    The event values, the health interface, the HTTP address, the TLS certificate, MAC
    addresses, logging and the version import nothing of pxe-pilot beyond the leaves named
    for them, so any part may depend on them.
    """
    path = dict(modules())[f"pxepilot.{leaf}"]
    assert {part(target) for target in imported(path)} <= LEAVES[leaf]


def test_no_part_depends_on_itself_through_others() -> None:
    """
    The parts of pxe-pilot (its subpackages and top-level modules) form no import
    cycle; the package's own C{__init__}, which only re-exports lazily, is left out.
    """
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules():
        if module == "pxepilot":
            continue
        for target in imported(path):
            if part(target) != part(module):
                graph[part(module)].add(part(target))

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for following in graph.get(node, ()):
                if following == start:
                    return [*trail, start]
                if following not in seen:
                    seen.add(following)
                    stack.append((following, [*trail, following]))
        return None

    cycles = [cycle for name in sorted(graph) if (cycle := cycle_from(name))]
    assert cycles == []


def test_no_module_is_too_long_to_read() -> None:
    """
    No module above 700 lines, but the data tables (ISO country, keyboard and time zone
    codes).
    """
    data_tables = {"pxepilot.answers.locales"}
    long_modules = [
        (module, lines)
        for module, path in modules()
        if module not in data_tables and (lines := len(path.read_text().splitlines())) > 700
    ]
    assert long_modules == []
