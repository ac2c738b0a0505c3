"""
pxe-pilot: zero-touch network installation of Proxmox products.

The public API for embedding pxe-pilot in another Twisted application is
L{Config}, L{load_config}, L{PxePilot} and L{make_service}.
"""

from pxepilot._version import __version__
from pxepilot.application import PxePilot, make_service
from pxepilot.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "PxePilot", "__version__", "load_config", "make_service"]
