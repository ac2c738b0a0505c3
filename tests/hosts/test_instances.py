"""
Several pxe-pilot instances on one PostgreSQL database, over real sockets: a change made
through one is what the other decides by, a database that stops during a storm of
installation reports loses none that was acknowledged, and neither does an instance
killed with SIGKILL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from pxepilot.application import PxePilot
from pxepilot.config import Config
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir, fixture_bytes
from tests.hosts.postgres_fixture import PostgresServer, running_server
from tests.test_boot_routes import default_entry, publish
from tests.test_twistd import request
from tests.twistd_process import TwistdProcess

pytestmark = pytest.mark.e2e

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
# A machine that boots only while the database is down.
NEW = "52:54:00:ff:fe:01"
reactor: Any = global_reactor


def webhook_for(mac: str) -> bytes:
    """
    The installation report of a machine whose management NIC is C{mac}.
    """
    report = json.loads(fixture_bytes("post-install-webhook-9.1.json"))
    report["network-interfaces"] = [{"mac": mac, "is-management": True}]
    report["dmi"]["system"] = {"serial": f"S-{mac}", "uuid": None}
    return json.dumps(report).encode()


def storm_macs(count: int) -> list[str]:
    return [f"52:54:00:{i >> 8:02x}:{i & 0xFF:02x}:01" for i in range(count)]


def installed_in_database(url: str) -> set[str]:
    """
    The MAC addresses with an installation report in the database's timelines.
    """
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT DISTINCT mac FROM events WHERE kind = 'installed'").fetchall()
    return {mac for (mac,) in rows}


class Instance:
    """
    One pxe-pilot on the real reactor, its services started, its site on a port of
    127.0.0.1.
    """

    def __init__(self, config: Config) -> None:
        self.pilot = PxePilot(config, reactor)
        self.pilot.service.startService()
        self.port: IListeningPort = reactor.listenTCP(0, self.pilot.site(), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{cast(IPv4Address, self.port.getHost()).port}"

    async def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        response = await treq.request(method, f"{self.base}{path}", data=body, persistent=False)
        return response.code, await response.content()

    async def stop(self) -> None:
        await maybeDeferred(self.port.stopListening)
        await self.pilot.service.stopService()


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """
    Wait until C{check} holds; how long that took. Fails after C{timeout} seconds: a
    bound for a broken build, not a measure (C{bench/state_load.py} measures).
    """
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{check} did not hold within {timeout} s")
        await deferLater(reactor, 0.01, lambda: None)
    return time.monotonic() - start


@pytest.fixture
def config_for(answers_dir: AnswersDir, tmp_path: Path) -> Callable[[str, str], Config]:
    answers_dir.write("default.toml")
    assets = tmp_path / "assets"
    assets.mkdir()
    publish(assets, "9.1-1")

    def config(name: str, url: str) -> Config:
        return Config(
            answers_dir=answers_dir.root,
            assets_dir=assets,
            state_dir=tmp_path / name,
            database_url=url,
            answer_check="warn",
            https_port=0,
        )

    return config


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with running_server() as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_a_report_through_one_instance_decides_on_the_other(
    config_for: Callable[[str, str], Config], postgres_url: str
) -> None:
    """
    A host installed through A boots from its disk and is refused an answer (409) when
    it next asks B; re-armed through B, it installs again through A.
    """
    a, b = Instance(config_for("a", postgres_url)), Instance(config_for("b", postgres_url))
    try:
        menu = f"/menu.ipxe?mac={MAC}&platform=efi"
        code, body = await b.request("GET", menu)
        assert (code, default_entry(body.decode())) == (200, "install-0")
        # B's menu event is saved (A has heard of the host) before A serves the answer.
        await eventually(lambda: a.pilot.ledger.host(MAC) is not None)
        answer = fixture_bytes("installer-post-9.2.json")
        assert (await a.request("POST", "/answer", answer))[0] == 200
        report = fixture_bytes("post-install-webhook-9.1.json")
        assert (await a.request("POST", "/webhook", report))[0] == 200

        def installed_on_b() -> bool:
            host = b.pilot.ledger.host(MAC)
            return host is not None and host.installed

        await eventually(installed_on_b)
        code, body = await b.request("GET", menu)
        assert (code, default_entry(body.decode())) == (200, "local")
        code, body = await b.request("POST", "/answer", answer)
        assert code == 409, body

        assert (await b.request("POST", f"/hosts/{MAC}/reinstall"))[0] == 200

        def rearmed_on_a() -> bool:
            host = a.pilot.ledger.host(MAC)
            return host is not None and not host.installed

        await eventually(rearmed_on_a)
        code, body = await a.request("GET", menu)
        assert (code, default_entry(body.decode())) == (200, "install-0")
        assert (await a.request("POST", "/answer", answer))[0] == 200
        kinds = [event.kind.value for event in await b.pilot.ledger.timeline(MAC)]
        assert kinds == [
            "script", "answer-served", "installed", "local-boot", "answer-refused", "rearmed",
            "script", "answer-served",
        ]  # fmt: skip
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_reports_of_both_instances_at_once_are_all_kept(
    config_for: Callable[[str, str], Config], postgres_url: str
) -> None:
    """
    Installation reports and menus of the same hosts sent to both instances at once:
    every one answered 200 is in the timeline, and both instances end with the state
    the database holds.
    """
    a, b = Instance(config_for("a", postgres_url)), Instance(config_for("b", postgres_url))
    macs = storm_macs(5)
    try:
        calls = []
        for round in range(6):
            for index, mac in enumerate(macs):
                instance = (a, b)[(round + index) % 2]
                calls.append(instance.request("POST", "/webhook", webhook_for(mac)))
                calls.append(instance.request("GET", f"/menu.ipxe?mac={mac}&platform=efi"))
        results = await gatherResults([Deferred.fromCoroutine(call) for call in calls])
        assert {code for code, _ in results} == {200}
        with psycopg.connect(postgres_url) as db:
            counts: dict[str, int] = dict(
                db.execute("SELECT mac, count(*) FROM events GROUP BY mac ORDER BY mac").fetchall()
            )
        assert counts == dict.fromkeys(macs, 12)

        def agree() -> bool:
            return all(
                a.pilot.ledger.host(MacAddress.parse(mac))
                == b.pilot.ledger.host(MacAddress.parse(mac))
                is not None
                for mac in macs
            )

        await eventually(agree)
        for mac in macs:
            host = a.pilot.ledger.host(MacAddress.parse(mac))
            assert host is not None and host.installed
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_the_database_stopped_during_a_storm_of_reports(
    config_for: Callable[[str, str], Config], own_server: PostgresServer
) -> None:
    """
    PostgreSQL stops and starts again while reports keep coming: boot scripts are
    still served, reports are refused (503) while it is down and C{/health} says so;
    every report answered 200 is in the database afterwards, and what was recorded
    meanwhile is saved once it is back.
    """
    url = own_server.create_database()
    instance = Instance(config_for("a", url))
    macs = iter(storm_macs(60_000))
    answered: dict[str, int] = {}
    finished = False
    try:

        async def reporter() -> None:
            # Reports for new machines, one after another, until the test has seen
            # the database go and come back.
            while not finished:
                mac = next(macs)
                code, _ = await instance.request("POST", "/webhook", webhook_for(mac))
                answered[mac] = code

        def codes_seen(code: int) -> int:
            return sum(1 for seen in answered.values() if seen == code)

        storm = gatherResults([Deferred.fromCoroutine(reporter()) for _ in range(8)])
        await eventually(lambda: codes_seen(200) >= 20)
        await deferToThread(own_server.stop)
        await eventually(lambda: instance.pilot.ledger.store_down is not None)
        code, body = await instance.request("GET", "/health")
        health = json.loads(body)
        assert (health["database"]["status"], health["database"]["database"]) == (
            "degraded",
            "down",
        )
        code, body = await instance.request("GET", f"/menu.ipxe?mac={NEW}&platform=efi")
        assert code == 200 and b"#!ipxe" in body
        code, _ = await instance.request("POST", "/webhook", webhook_for("52:54:00:ff:ff:01"))
        assert code == 503
        await eventually(lambda: codes_seen(503) >= 20)
        before = codes_seen(200)
        await deferToThread(own_server.start)
        await eventually(lambda: instance.pilot.ledger.store_down is None, timeout=60)
        await eventually(lambda: codes_seen(200) >= before + 20)
        finished = True
        await storm
        await eventually(lambda: not instance.pilot.ledger.backlog)
        assert set(answered.values()) <= {200, 503}
        acknowledged = {mac for mac, code in answered.items() if code == 200}
        assert acknowledged <= installed_in_database(url)
        # The menu recorded while the database was down was saved when it came back.
        with psycopg.connect(url) as db:
            (scripts,) = db.execute(
                "SELECT count(*) FROM events WHERE kind = 'script' AND mac = %s", (NEW,)
            ).fetchone() or (0,)
        assert scripts == 1
        code, body = await instance.request("GET", "/health")
        assert json.loads(body)["database"]["status"] == "ok"
    finally:
        finished = True
        await instance.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("pxe-pilot-listen")]


def test_an_instance_killed_mid_storm_loses_no_acknowledged_report(
    answers_dir: AnswersDir, tmp_path: Path, postgres_url: str
) -> None:
    """
    A C{twistd pxe-pilot} on PostgreSQL killed with SIGKILL while reports stream in:
    every report it answered 200 is in the database, and a second instance started on
    it knows those hosts as installed.
    """
    answers_dir.write("default.toml")
    (tmp_path / "assets").mkdir()
    env = {
        "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
        "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
        "PXE_PILOT_DATABASE_URL": postgres_url,
    }
    args = ["--interface", "127.0.0.1", "--port", "0"]
    first = TwistdProcess([*args, "--state", str(tmp_path / "a")], env=env)
    answered: dict[str, int] = {}
    macs = storm_macs(400)
    try:
        port = first.http_port()

        def storm(part: list[str]) -> None:
            for mac in part:
                try:
                    answered[mac] = request(port, "POST", "/webhook", webhook_for(mac))[0]
                except OSError:
                    return

        workers = [threading.Thread(target=storm, args=(macs[i::4],)) for i in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        while len(answered) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.process.kill()
        first.process.wait(10)
        for worker in workers:
            worker.join(30)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    acknowledged = {mac for mac, code in answered.items() if code == 200}
    assert len(acknowledged) >= 50
    assert acknowledged <= installed_in_database(postgres_url)
    assert "postgresql://" in first.text and "host database" in first.text

    second = TwistdProcess([*args, "--state", str(tmp_path / "b")], env=env)
    try:
        port = second.http_port()
        code, _, body = request(port, "GET", "/hosts?limit=1000")
        states = {h["mac"]: h["state"] for h in json.loads(body)["known_hosts"]}
        assert code == 200
        assert all(states[mac] == "installed" for mac in acknowledged)
    finally:
        assert second.stop() in (0, -15), second.text


def test_an_unreachable_database_stops_the_start_without_showing_the_password(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    C{twistd pxe-pilot} with a database it cannot reach exits at once, saying which
    database (its password masked) and why.
    """
    (tmp_path / "assets").mkdir()
    process = TwistdProcess(
        ["--interface", "127.0.0.1", "--port", "0", "--state", str(tmp_path / "state")],
        env={
            "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
            "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
            "PXE_PILOT_DATABASE_URL": f"postgresql://pxe:s3cret@/pxe?host={tmp_path}/none",
        },
    )
    assert process.finish() != 0
    assert "cannot reach the state database postgresql://pxe:***@/pxe" in process.text
    assert "s3cret" not in process.text
