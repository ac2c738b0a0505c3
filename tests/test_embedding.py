"""
Embedding pxe-pilot in another Twisted application: its resource under a prefix of the
host's own site, its services in the host's service tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from pxepilot import Config, PxePilot, load_config
from pxepilot.hosts.ledger import run_here
from tests.conftest import AnswersDir, clock_at_now, fixture_bytes, marker, result_of


class HostPage(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"host application"


def host_application(pilot: PxePilot) -> Resource:
    """
    Someone else's site: its own page at C{/}, pxe-pilot under C{/provisioning/pxe/}.
    """
    root = Resource()
    root.putChild(b"", HostPage())
    provisioning = Resource()
    provisioning.putChild(b"pxe", pilot.resource)
    root.putChild(b"provisioning", provisioning)
    return root


@pytest.fixture
def config(answers_dir: AnswersDir, tmp_path: Path) -> Config:
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    (tmp_path / "assets").mkdir()
    return Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path / "assets",
        state_dir=tmp_path / "state",
        answer_check="warn",
    )


def test_mounted_under_a_prefix_in_memory(config: Config) -> None:
    """
    Under a prefix, every route answers as at the root.
    """
    stub: Any = StubTreq(host_application(PxePilot(config, clock_at_now(), run_blocking=run_here)))
    response = result_of(
        stub.post(
            "http://host/provisioning/pxe/answer", data=fixture_bytes("installer-post-9.2.json")
        )
    )
    assert response.code == 200
    assert result_of(stub.content(response)) == marker("b0-7b-25-c1-0a-10.toml")
    response = result_of(stub.get("http://host/provisioning/pxe/hosts/B0:7B:25:C1:0A:10"))
    assert response.code == 200
    response = result_of(stub.get("http://host/"))
    assert result_of(stub.content(response)) == b"host application"


@pytest_twisted.ensureDeferred
async def test_embedded_in_a_running_application(config: Config) -> None:
    """
    The public API as documented: a host application builds pxe-pilot from a
    configuration, starts its services with its own, mounts the resource in its own
    site on a real socket, and pxe-pilot answers there; stopping waits for the services.
    """
    from twisted.internet import reactor

    pilot = PxePilot(config, reactor)
    application = MultiService()
    pilot.service.setServiceParent(application)
    application.startService()
    site: Any = Site(host_application(pilot))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}/provisioning/pxe"
    try:
        response = await treq.post(
            f"{base}/answer", data=fixture_bytes("installer-post-8.2.json"), persistent=False
        )
        assert response.code == 200
        assert await response.content() == marker("b0-7b-25-c1-0a-10.toml")
        response = await treq.get(f"{base}/health", persistent=False)
        health: dict[str, Any] = json.loads(await response.content())
        # Healthy but for the assets directory, which is empty here.
        assert (response.code, health["status"]) == (200, "degraded")
        assert health["assets"]["reasons"] == ["no boot assets: run pxe-pilot-builder"]
        assert {
            n for n, c in health.items() if isinstance(c, dict) and c["status"] == "degraded"
        } == {"assets"}
    finally:
        await maybeDeferred(port.stopListening)
        stopped = application.stopService()
        assert isinstance(stopped, Deferred)
        await stopped
    assert not pilot.service.running


def test_load_config_is_public(config: Config) -> None:
    """
    An embedding application can load the same options and variables twistd reads.
    """
    loaded = load_config(
        {"answers": str(config.answers_dir), "assets": str(config.assets_dir)},
        {"PXE_PILOT_PORT": "0"},
    )
    assert (loaded.answers_dir, loaded.port) == (config.answers_dir, 0)
