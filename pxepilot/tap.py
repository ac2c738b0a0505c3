"""
C{twistd pxe-pilot}: command-line options and the service they describe.
"""

from __future__ import annotations

import errno
import gc
import os
import sys
from typing import Any, ClassVar, cast

from twisted.application.service import IService, MultiService
from twisted.python import usage

from pxepilot._version import __version__
from pxepilot.application import make_service
from pxepilot.config import SETTINGS, Config, ConfigError, Setting, load_config
from pxepilot.hosts.store import StoreError
from pxepilot.listening import ListenFailed
from pxepilot.logs import set_log_level
from pxepilot.tls import TLSSetupError


def _help(setting: Setting) -> str:
    default = f" [default: {setting.default}]" if setting.default else ""
    return f"{setting.meaning} (env {setting.env}){default}"


class Options(usage.Options):
    """
    C{twistd pxe-pilot} options; each has a C{PXE_PILOT_*} environment variable, and an
    option given on the command line wins over the environment.
    """

    synopsis = "[options]"
    longdesc = (
        "Serves Proxmox installer answer files over HTTP (POST /answer) and, with --boot, "
        "the iPXE boot chain over TFTP. Every option can also be set through the "
        "environment variable named in its help."
    )
    optParameters: ClassVar[list[list[str | None]]] = [
        [s.option, None, None, _help(s)] for s in SETTINGS if not s.flag
    ]

    # Set by postOptions.
    config: Config

    def __init__(self) -> None:
        super().__init__()
        for setting in SETTINGS:
            if setting.flag:
                self[setting.option] = None

    def opt_version(self) -> None:
        """
        Print pxe-pilot's version and exit.
        """
        print(f"pxe-pilot {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            self.config = load_config(self, os.environ)
        except ConfigError as e:
            # One line and a non-zero exit, before anything binds; a usage error would
            # print the whole help first.
            raise SystemExit(f"pxe-pilot: error: {e}") from None


def _flag_handlers(setting: Setting) -> None:
    def on(self: Options) -> None:
        self[setting.option] = True

    def off(self: Options) -> None:
        self[setting.option] = False

    on.__doc__ = _help(setting)
    off.__doc__ = f"do not {setting.meaning}"
    setattr(Options, f"opt_{setting.option.replace('-', '_')}", on)
    setattr(Options, f"opt_no_{setting.option.replace('-', '_')}", off)


for _setting in SETTINGS:
    if _setting.flag:
        _flag_handlers(_setting)


class StartUpFailed(SystemExit, Exception):
    """
    Start-up ends with one line and a non-zero exit, as a configuration error does.

    A L{SystemExit}, so that twistd prints the line rather than a traceback; an
    L{Exception} too, so that a daemonising twistd passes it on to the process that
    started it (it reports only those), instead of an empty error.
    """


# The option behind each listener, for a port that cannot be bound.
_LISTENER_OPTIONS = {
    "HTTP": "port",
    "HTTPS": "https-port",
    "TFTP": "tftp-port",
    "proxyDHCP": "proxy-dhcp",
}


# A generation-0 collection once this many new objects are tracked, instead of
# Python's 700: most of a request's objects are gone by then and never scanned. With
# 200 answers in flight, 700 meant about 2,000 young collections in 10 s, each scanning
# the in-flight requests' objects again.
YOUNG_COLLECTION_THRESHOLD = 10_000


def settle_garbage_collection() -> None:
    """
    Tune the cyclic garbage collector for a long-running server, once start-up is done.

    What start-up made (modules, classes, the answers, the ledger) lives as long as the
    process: frozen, it is no longer scanned by each full collection, which a busy
    server runs every second or so (under 200 answers at once, a full collection held
    the reactor for 20-50 ms before, 2-3 ms after). Young collections come less often
    (L{YOUNG_COLLECTION_THRESHOLD}). Only C{twistd pxe-pilot} does this: an application
    embedding pxe-pilot keeps its own settings.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


class _StartUp(MultiService):
    """
    The service tree twistd runs: a port that cannot be bound stops start-up with one
    line naming the option, the address and the cause.
    """

    def __init__(self, options: Any, environ: Any) -> None:
        super().__init__()
        self._options = options
        self._environ = environ

    def startService(self) -> None:
        super().startService()
        settle_garbage_collection()

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenFailed as e:
            raise StartUpFailed(f"pxe-pilot: error: {self._describe(e)}") from None

    def _describe(self, failure: ListenFailed) -> str:
        if failure.errno == errno.EADDRNOTAVAIL and failure.interface:
            option = "interface"
        else:
            option = _LISTENER_OPTIONS.get(failure.kind, "")
        setting = next((s for s in SETTINGS if s.option == option), None)
        if setting is None:
            return str(failure)
        if setting.flag:
            named = f"--{option}"
        elif self._options.get(option) is None and self._environ.get(setting.env, "").strip():
            named = f"{setting.env}={self._environ[setting.env].strip()}"
        else:
            named = f"--{option} {failure.interface if option == 'interface' else failure.port}"
        return f"{named}: {failure.why()}"


def makeService(options: Any) -> IService:
    """
    The service tree for C{twistd pxe-pilot}.
    """
    config: Config = options.config
    set_log_level(config.log_level)
    try:
        tree = make_service(config)
    except StoreError as e:
        raise SystemExit(f"pxe-pilot: error: --state: {e}") from None
    except TLSSetupError as e:
        raise SystemExit(f"pxe-pilot: error: {e}") from None
    except ValueError as e:
        # The webhook secret in the state directory is damaged.
        raise SystemExit(f"pxe-pilot: error: --state: {e}") from None
    top = _StartUp(options, os.environ)
    # Each part keeps its place and its name (http, https, pxe-pilot) under the new top.
    for part in list(cast(MultiService, tree)):
        part.setServiceParent(top)
    return top
