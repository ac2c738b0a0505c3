"""
pxe-pilot: zero-touch network installation of Proxmox products.

The public API for embedding pxe-pilot in another Twisted application is
L{Config}, L{load_config}, L{PxePilot} and L{make_service}.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pxepilot._version import __version__

if TYPE_CHECKING:
    from pxepilot.application import PxePilot, make_service
    from pxepilot.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "PxePilot", "__version__", "load_config", "make_service"]

# Loaded on first use (PEP 562), not on import: importing any submodule runs this file
# first, and a packet codec or the builder reading the version must not pay for the
# whole server (Klein, the metrics, the state database).
_LAZY = {
    "Config": "pxepilot.config",
    "ConfigError": "pxepilot.config",
    "load_config": "pxepilot.config",
    "PxePilot": "pxepilot.application",
    "make_service": "pxepilot.application",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # Later lookups find it in the module's namespace and skip this function.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
