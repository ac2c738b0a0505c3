"""
C{twistd pxe-pilot}: options and the service tree they build, inspected without binding.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from twisted.application.service import IServiceCollection, IServiceMaker, MultiService
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.plugin import IPlugin, getPlugins

from pxepilot.http.listener import HTTPListener
from pxepilot.http.site import PxePilotSite
from pxepilot.tap import YOUNG_COLLECTION_THRESHOLD, Options, makeService


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    monkeypatch.chdir(tmp_path)
    for name in ["PXE_PILOT_PORT", "PXE_PILOT_INTERFACE", "PXE_PILOT_BOOT_ENABLED"]:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_plugin_is_discovered() -> None:
    """
    twistd finds the C{pxe-pilot} service maker.
    """
    import twisted.plugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
    assert IPlugin.providedBy(makers["pxe-pilot"])
    assert makers["pxe-pilot"].options is Options


def test_service_tree(dirs: Path) -> None:
    """
    The tree holds named HTTP and HTTPS listeners on the configured ports and address,
    with a long listen queue, serving pxe-pilot's site, and the named pxe-pilot
    collection.
    """
    options = Options()
    options.parseOptions(["--port", "8181", "--https-port", "8444", "--interface", "127.0.0.1"])
    top = makeService(options)
    assert isinstance(top, MultiService)
    http = top.getServiceNamed("http")
    https = top.getServiceNamed("https")
    assert isinstance(http, HTTPListener)
    assert isinstance(https, HTTPListener)
    assert isinstance(http.endpoint, TCP4ServerEndpoint)
    assert isinstance(https.endpoint, SSL4ServerEndpoint)
    # Twisted's endpoints keep where they listen to themselves.
    assert (vars(http.endpoint)["_port"], vars(http.endpoint)["_interface"]) == (8181, "127.0.0.1")
    assert (vars(https.endpoint)["_port"], vars(https.endpoint)["_interface"]) == (
        8444,
        "127.0.0.1",
    )
    # A listen queue long enough for a rack's installers at once, on both ports.
    assert vars(http.endpoint)["_backlog"] == vars(https.endpoint)["_backlog"] == 1024
    # One site behind both: the same routes over HTTP and HTTPS.
    assert id(https.factory) == id(http.factory)
    assert isinstance(http.factory, PxePilotSite)
    assert IServiceCollection.providedBy(top.getServiceNamed("pxe-pilot"))


def test_https_off_leaves_no_listener(dirs: Path) -> None:
    """
    C{--https-port 0} builds no HTTPS listener and makes no certificate.
    """
    options = Options()
    options.parseOptions(["--https-port", "0"])
    top = makeService(options)
    assert isinstance(top, MultiService)
    assert [child.name for child in top] == ["pxe-pilot", "http"]
    assert not (dirs / "state" / "tls").exists()


def test_environment_and_flags(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The environment fills in what the command line leaves out; C{--no-boot} overrides
    C{PXE_PILOT_BOOT_ENABLED=true}.
    """
    monkeypatch.setenv("PXE_PILOT_PORT", "9999")
    monkeypatch.setenv("PXE_PILOT_BOOT_ENABLED", "true")
    options = Options()
    options.parseOptions(["--no-boot"])
    assert options.config.port == 9999
    assert options.config.boot_enabled is False


def test_invalid_value_exits_with_one_line(dirs: Path) -> None:
    """
    An invalid value ends option parsing with one line naming it, not the whole help.
    """
    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(["--log-level", "loud"])
    assert str(raised.value) == (
        "pxe-pilot: error: --log-level: 'loud' is not one of debug, info, warning, error"
    )


@pytest.fixture
def garbage_collection() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("garbage_collection")
def test_started_server_sets_its_start_up_aside_from_garbage_collection(dirs: Path) -> None:
    """
    Once started, what start-up made is frozen and young collections come less often;
    building the tree alone (as an embedding application might) changes nothing.
    """
    gc.set_threshold(700, 10, 10)
    options = Options()
    options.parseOptions(["--https-port", "0"])
    top = makeService(options)
    assert gc.get_threshold() == (700, 10, 10)
    # Started without its children: nothing is bound.
    for child in list(cast(MultiService, top)):
        child.disownServiceParent()
    top.startService()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 10, 10)
    top.stopService()
