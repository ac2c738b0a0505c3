"""
Running the documentation's recipes in the PXE lab: the blocks marked C{lab NAME} in
docs/, with the documentation's example addresses (RFC 5737's 192.0.2.0/24, C{eth0})
turned into the lab's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.docs_snippets import lab as blocks
from tests.e2e import lab

# Every name the recipes read; tests/test_docs_snippets.py checks the docs mark exactly
# these.
LAB_BLOCKS = (
    "quickstart-settings",
    "quickstart",
    "quickstart-watch",
    "bare-bones",
    "bare-bones-dhcp",
    "with-netboot",
    "with-netboot-menu",
    "http-only",
    "http-only-dhcp",
    "http-boot-dhcp",
    "http-boot-kea",
    "kea",
    "ipv6-dhcp",
    "ipv6-kea",
    "shared-host-dhcp",
)

DHCP_RANGE = "10.99.0.100,10.99.0.200"


def localize(text: str) -> str:
    """
    The documentation's example network turned into the lab's.
    """
    text = text.replace("192.0.2.100,192.0.2.200", DHCP_RANGE)
    text = text.replace("192.0.2.10", lab.BRIDGE_ADDRESS)
    return re.sub(r"(?m)^interface=eth0$", "interface=br0", text)


def blocks_of(name: str) -> list[str]:
    """
    The texts of the blocks marked C{lab NAME}, in document order.
    """
    return [block.text for block in blocks(name)]


def text_of(name: str) -> str:
    return "".join(blocks_of(name))


def settings_names(name: str) -> list[str]:
    """
    The variables a settings block assigns, in order.
    """
    return re.findall(r"(?m)^([A-Z_]+)=", text_of(name))


def run_block(
    script: str, environment: dict[str, str], in_lab: bool, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """
    One block under bash, strict, with C{environment} exported: in the lab's network
    namespace, or on the host (where the package registries are reachable).
    """
    exports = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in environment.items()
    )
    command = ["bash", "-euo", "pipefail", "-c", exports + script]
    if in_lab:
        command = lab.netns(*command)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def stop_daemon(pid_file: Path) -> None:
    """
    Stop a daemon a recipe started, by its pid file.
    """
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
