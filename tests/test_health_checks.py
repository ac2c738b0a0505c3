"""
Each component's health check where it says something is wrong: a server that runs
without its port, an assets directory holding a version that cannot be served.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError

from pxepilot.boot.health import AssetsHealth
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.health import ComponentHealth, overall_status
from pxepilot.http.secure import TLSHealth
from pxepilot.tftp.files import TFTPRoot
from pxepilot.tftp.server import TFTPServer
from pxepilot.tftp.service import TFTPHealth, TFTPService
from pxepilot.tls import load_or_create
from tests.test_boot_routes import publish


@pytest.fixture
def taken_port() -> Iterator[int]:
    """
    A UDP port on every IPv4 address that another socket holds, without sharing.
    """
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", 0))
    yield holder.getsockname()[1]
    holder.close()


def test_tftp_running_without_its_port_is_unavailable(tmp_path: Path, taken_port: int) -> None:
    """
    A TFTP service whose port could not be bound (it is taken) is running but serves
    nobody: C{/health} says so, and pxe-pilot is unavailable.
    """
    from twisted.internet import reactor

    server = TFTPServer(files=TFTPRoot(tmp_path), clock=reactor, open_port=lambda p, i: None)  # type: ignore[arg-type,return-value]
    service = TFTPService(reactor, server, taken_port, "")
    health = TFTPHealth(service, tmp_path)
    with pytest.raises(CannotListenError):
        service.startService()
    status = health.check()
    assert service.running
    assert (status.status, status.details["listening"]) == ("unavailable", False)
    assert overall_status([ComponentHealth("ok"), status]) == "unavailable"


def test_tftp_not_started_is_not_unavailable(tmp_path: Path) -> None:
    """
    Before it starts, the TFTP service is not listening and that is no fault.
    """
    from twisted.internet import reactor

    server = TFTPServer(files=TFTPRoot(tmp_path), clock=reactor, open_port=lambda p, i: None)  # type: ignore[arg-type,return-value]
    service = TFTPService(reactor, server, 0, "")
    assert TFTPHealth(service, tmp_path).check().status == "ok"


def test_proxy_dhcp_running_without_a_port_is_unavailable(taken_port: int) -> None:
    """
    proxyDHCP with one of its two ports taken runs, but cannot serve: unavailable.
    """
    from twisted.internet import reactor

    service = ProxyDHCPService(
        reactor,
        lambda local: f"http://{local}/boot.ipxe",
        lambda: None,
        ports=(taken_port, 0),
    )
    with pytest.raises(CannotListenError):
        service.startService()
    try:
        status = ProxyDHCPHealth(service).check()
        assert service.running
        assert (status.status, status.details["listening"]) == ("unavailable", False)
    finally:
        service.stopService()


def test_assets_with_a_version_that_cannot_be_served_are_degraded(tmp_path: Path) -> None:
    """
    A version directory whose C{asset.json} is broken is named with why; the others
    are still listed, and the assets are degraded, not unavailable.
    """
    assets = tmp_path / "assets"
    publish(assets, "9.1-1")
    broken = publish(assets, "9.0-1")
    (broken / "asset.json").write_text(json.dumps({"format": 1}))
    status = AssetsHealth(assets).check()
    assert status.status == "degraded"
    assert status.details["versions"] == ["proxmox-ve/9.1-1"]
    [problem] = status.details["invalid_versions"]
    assert problem["version"] == "proxmox-ve/9.0-1"


def test_assets_that_all_serve_are_ok(tmp_path: Path) -> None:
    """
    With every version servable, the assets are ok.
    """
    assets = tmp_path / "assets"
    publish(assets, "9.1-1")
    assert AssetsHealth(assets).check().status == "ok"


def test_assets_pinned_to_another_certificate_are_degraded(tmp_path: Path) -> None:
    """
    A version built to fetch its answer over HTTPS with another certificate's
    fingerprint is named: its installers would fail their TLS handshake. One pinned to
    this server's certificate (in any spelling), or fetching over plain HTTP, is fine.
    """
    assets = tmp_path / "assets"
    served = "AB:" * 31 + "AB"
    for version, url, pinned in (
        ("9.1-1", "https://192.0.2.10:8443/answer", "ab" * 32),
        ("9.0-1", "https://192.0.2.10:8443/answer", "CD" * 32),
        ("8.4-1", "http://192.0.2.10:8080/answer", "CD" * 32),
    ):
        target = publish(assets, version)
        metadata = json.loads((target / "asset.json").read_text())
        metadata["answer"] = {"url": url, "cert_fingerprint": pinned}
        (target / "asset.json").write_text(json.dumps(metadata))
    status = AssetsHealth(assets, served).check()
    assert status.status == "degraded"
    assert status.details["pinned_to_another_certificate"] == ["proxmox-ve/9.0-1"]
    assert AssetsHealth(assets, None).check().status == "ok"


def test_tls_reports_its_fingerprint_and_an_expired_certificate(tmp_path: Path) -> None:
    """
    The TLS component says the fingerprint installers pin and the port; a certificate
    past its end is degraded (browsers and monitoring refuse it, installers do not).
    """
    now = datetime.now(UTC)
    certificate = load_or_create(tmp_path / "state", ["localhost"], now)
    fresh = TLSHealth(certificate, lambda: 8443, lambda: now.timestamp()).check()
    assert (fresh.status, fresh.details["fingerprint"], fresh.details["port"]) == (
        "ok",
        certificate.fingerprint,
        8443,
    )
    later = certificate.not_after.timestamp() + 1
    expired = TLSHealth(certificate, lambda: None, lambda: later).check()
    assert expired.status == "degraded"
    assert "expired" in expired.details["warning"]
    assert TLSHealth(None, lambda: None, lambda: later).check().status == "disabled"
