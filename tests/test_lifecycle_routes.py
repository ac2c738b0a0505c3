"""
The install lifecycle over HTTP, in memory: the events each route records, install
once, re-arming, the webhook, the tokens, C{/metrics} and the status page.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail

from pxepilot.events import TransferFinished
from pxepilot.hosts.model import EventKind, HostState
from pxepilot.hosts.store import StoreUnavailable
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir, fixture_bytes, result_of
from tests.test_boot_routes import default_entry, publish
from tests.test_http import Client

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
OTHER_NIC = MacAddress.parse("b0:7b:25:c1:0a:11")
MENU = f"http://pxe.test/menu.ipxe?mac={MAC}&platform=efi"
WEBHOOK = "http://pxe.test/webhook"
TOKEN = "admin-0123456789abcdef"
ANSWER_TOKEN = "answer-0123456789abcdef"


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    publish(path, "9.1-1")
    return path


@pytest.fixture
def client(answers_dir: AnswersDir, assets: Path) -> Client:
    answers_dir.write("default.toml")
    return Client(answers_dir, assets)


def installer_request() -> bytes:
    return fixture_bytes("installer-post-8.3-to-9.1.json")


def webhook_body() -> bytes:
    return fixture_bytes("post-install-webhook-9.1.json")


def state(client: Client, mac: MacAddress = MAC) -> str:
    host = client.pilot.ledger.host(mac)
    assert host is not None
    return host.state.value


def kinds(client: Client, mac: MacAddress = MAC) -> list[str]:
    events = result_of(client.pilot.ledger.timeline(mac))
    return [event.kind.value for event in events]


def boot(client: Client) -> str:
    """
    A network boot as iPXE does it: boot.ipxe, then the menu for this MAC.
    """
    code, _, _ = client.request("GET", "http://pxe.test/boot.ipxe")
    assert code == 200
    code, _, body = client.request("GET", MENU)
    assert code == 200
    return body.decode()


def test_a_whole_installation(client: Client) -> None:
    """
    Menu, kernel and initrd, answer, webhook: the host goes booting, installing,
    installed, and every step is on its timeline.
    """
    assert default_entry(boot(client)) == "install-0"
    assert state(client) == "booting"
    for name in ("vmlinuz", "initrd"):
        code, _, _ = client.request("GET", f"http://pxe.test/assets/proxmox-ve/9.1-1/{name}")
        assert code == 200
    code, headers, _ = client.answer(installer_request())
    assert (code, headers["x-pxe-pilot-source"]) == (200, "default.toml")
    assert state(client) == "installing"
    code, report = client.json("POST", WEBHOOK, data=webhook_body())
    assert (code, report) == (200, {"mac": str(MAC), "state": "installed"})
    assert kinds(client) == [
        "script",  # menu.ipxe; boot.ipxe came before the address was known
        "download-started",
        "download-ended",
        "download-started",
        "download-ended",
        "answer-served",
        "installed",
    ]
    host = client.pilot.ledger.host(MAC)
    assert host is not None and host.installation is not None
    assert (host.installation.fqdn, host.installation.address) == (
        "pve01.example.com",
        "192.0.2.21/24",
    )
    assert host.answer == "default.toml"
    assert host.serial == "7XK2LM3"
    ended = result_of(client.pilot.ledger.timeline(MAC))[2]
    assert ended.detail["complete"] is True
    assert ended.detail["bytes"] == len(b"kernel 9.1-1")


def test_installed_host_boots_locally_and_is_refused_until_rearmed(client: Client) -> None:
    """
    Install once: after the webhook, the menu defaults to the disk and the answer is
    refused with a message that says how to re-arm; re-arming restores both.
    """
    boot(client)
    client.answer(installer_request())
    client.json("POST", WEBHOOK, data=webhook_body())

    menu = boot(client)
    assert default_entry(menu) == "local"
    assert "installed on" in menu
    assert state(client) == "local-boot"
    code, error = client.json("POST", "http://pxe.test/answer", data=installer_request())
    assert code == 409
    assert f"pxe-pilot reinstall {MAC}" in error["error"]
    assert state(client) == "local-boot"
    assert kinds(client)[-1] == "answer-refused"

    code, report = client.json("POST", f"http://pxe.test/hosts/{MAC}/reinstall")
    assert (code, report["state"], report["installed_at"]) == (200, "new", None)
    assert default_entry(boot(client)) == "install-0"
    code, _, _ = client.answer(installer_request())
    assert code == 200
    assert state(client) == "installing"


def test_install_once_can_be_turned_off(answers_dir: AnswersDir, assets: Path) -> None:
    """
    With --no-install-once an installed host installs again when it network-boots.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, install_once=False)
    client.answer(installer_request())
    client.json("POST", WEBHOOK, data=webhook_body())
    assert default_entry(boot(client)) == "install-0"
    assert client.answer(installer_request())[0] == 200


def test_booting_again_while_installing_is_a_failure(client: Client) -> None:
    """
    A host that network-boots again after its answer, without a report, has failed;
    it stays failed while it boots, until it is served an answer again.
    """
    boot(client)
    client.answer(installer_request())
    boot(client)
    assert state(client) == "failed"
    assert client.answer(installer_request())[0] == 200
    assert state(client) == "installing"


def test_refusals_are_recorded(answers_dir: AnswersDir, assets: Path) -> None:
    """
    No answer (404) and an invalid one (422) are on the host's timeline with the
    reason; the state does not move.
    """
    client = Client(answers_dir, assets)
    boot(client)
    assert client.answer(installer_request())[0] == 404
    answers_dir.write("default.toml", b"[broken\n")
    assert client.answer(installer_request())[0] == 422
    events = result_of(client.pilot.ledger.timeline(MAC))
    refused = [e for e in events if e.kind is EventKind.ANSWER_REFUSED]
    assert [e.detail["code"] for e in refused] == [404, 422]
    assert state(client) == "local-boot"  # no answer: its menu chose the disk


def test_the_answer_counts_for_the_mac_that_booted(answers_dir: AnswersDir, assets: Path) -> None:
    """
    The installer posts every NIC; the event goes to the one the machine booted with.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets)
    client.request("GET", f"http://pxe.test/menu.ipxe?mac={OTHER_NIC}")
    client.answer(installer_request())
    assert state(client, OTHER_NIC) == "installing"
    assert client.pilot.ledger.host(MAC) is None


def test_webhook_for_an_unknown_host_records_it(client: Client) -> None:
    """
    A report from a machine never seen (installed from USB, say) creates it, under
    its management NIC.
    """
    code, report = client.json("POST", WEBHOOK, data=webhook_body())
    assert (code, report["mac"]) == (200, str(MAC))
    assert state(client) == "installed"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "must be a JSON object"),
        (b"{}", "network-interfaces"),
        (b'{"network-interfaces": [{"mac": "nope"}]}', "not a MAC address"),
    ],
)
def test_bad_webhook_bodies_get_400(client: Client, body: bytes, message: str) -> None:
    """
    A body that is not an installation report is refused and changes nothing.
    """
    code, error = client.json("POST", WEBHOOK, data=body)
    assert code == 400
    assert message in error["error"]
    assert client.pilot.ledger.hosts == {}


def test_webhook_is_not_acknowledged_when_it_cannot_be_saved(client: Client) -> None:
    """
    If the report cannot be saved the installer hears so (500): a 200 would let the
    machine reinstall itself on its next network boot.
    """

    def broken(work: Any) -> Deferred[Any]:
        return fail(OSError(28, "No space left on device"))

    client.pilot.ledger._run = broken
    code, error = client.json("POST", WEBHOOK, data=webhook_body())
    assert code == 500
    assert "could not save" in error["error"]
    code, health = client.json("GET", "http://pxe.test/health")
    assert (code, health["status"], health["hosts"]["status"]) == (200, "degraded", "degraded")
    assert "No space left on device" in health["hosts"]["error"]
    assert str(client.pilot.config.state_dir) not in json.dumps(health)


def test_webhook_is_refused_with_503_when_the_database_is_unreachable(client: Client) -> None:
    """
    A report that finds the host database unreachable is refused with 503 and a
    Retry-After, as the ones after it are: the installer sends it again later.
    """

    def unreachable(work: Any) -> Deferred[Any]:
        return fail(StoreUnavailable("cannot reach the state database postgresql://pxe@db/"))

    client.pilot.ledger._run = unreachable
    code, headers, body = client.request("POST", WEBHOOK, data=webhook_body())
    assert code == 503
    assert headers.get("retry-after") == "30"
    assert "database is down" in json.loads(body)["error"]


def test_host_status_has_the_timeline(client: Client) -> None:
    """
    C{/hosts/{mac}/status}: the host and its events; 404 for a host never seen; 400
    for what is not a MAC address; C{/hosts} lists known hosts and counts states.
    """
    boot(client)
    client.answer(installer_request())
    code, report = client.json("GET", "http://pxe.test/hosts/B0-7B-25-C1-0A-10/status")
    assert code == 200
    assert report["state"] == "installing"
    assert [e["kind"] for e in report["timeline"]] == ["script", "answer-served"]
    code, report = client.json("GET", "http://pxe.test/hosts/b0:7b:25:c1:0a:10/status?limit=1")
    assert [e["kind"] for e in report["timeline"]] == ["answer-served"]
    assert client.json("GET", "http://pxe.test/hosts/00:11:22:33:44:55/status")[0] == 404
    assert client.json("GET", "http://pxe.test/hosts/zz/status")[0] == 400
    assert client.json("POST", "http://pxe.test/hosts/00:11:22:33:44:55/reinstall")[0] == 404
    _, listing = client.json("GET", "http://pxe.test/hosts")
    assert [h["mac"] for h in listing["known_hosts"]] == [str(MAC)]
    assert listing["states"]["installing"] == 1


def test_tftp_and_downloads_are_attributed_by_address(client: Client) -> None:
    """
    Requests that carry no MAC address count for the MAC that last asked for a menu
    from the same address; from an address nobody claimed, they are only counted.
    TFTP transfers (published by the TFTP server as it does over sockets) too.
    """
    client.pilot.events.publish(TransferFinished("127.0.0.1", "snponly.efi", "complete", 9, 0.1))
    client.request("GET", "http://pxe.test/assets/proxmox-ve/9.1-1/vmlinuz")
    assert client.pilot.ledger.hosts == {}
    exposition = client.pilot.metrics.exposition().decode()
    assert metric(exposition, "pxepilot_asset_downloads_total", outcome="complete") == 1
    boot(client)
    client.request("GET", "http://pxe.test/boot.ipxe")
    assert kinds(client)[-1] == "script"
    assert result_of(client.pilot.ledger.timeline(MAC))[-1].detail["script"] == "boot.ipxe"
    client.pilot.events.publish(TransferFinished("127.0.0.1", "snponly.efi", "complete", 9, 0.1))
    client.request("GET", "http://pxe.test/assets/proxmox-ve/9.1-1/vmlinuz")
    assert kinds(client)[-3:] == ["tftp", "download-started", "download-ended"]
    timeline = result_of(client.pilot.ledger.timeline(MAC))
    assert timeline[-3].detail["file"] == "snponly.efi"
    assert timeline[-1].detail["complete"] is True


# -- tokens


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()


ADMIN_ROUTES = [
    ("GET", "http://pxe.test/"),
    ("GET", "http://pxe.test/hosts"),
    ("GET", f"http://pxe.test/hosts/{MAC}"),
    ("GET", f"http://pxe.test/hosts/{MAC}/status"),
    ("POST", f"http://pxe.test/hosts/{MAC}/reinstall"),
    ("GET", "http://pxe.test/metrics"),
]


@pytest.mark.parametrize(("method", "url"), ADMIN_ROUTES)
def test_admin_token_guards_the_operator_routes(
    answers_dir: AnswersDir, assets: Path, method: str, url: str
) -> None:
    """
    With an admin token, each operator route answers 401 without it or with a wrong
    one, and works with it as a bearer token or a browser's Basic password (sent, as a
    state change needs with Basic credentials, with the X-PXE-Pilot-Request header).
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, admin_token=TOKEN)
    boot(client)
    for wrong in (None, "Bearer wrong-0123456789abcdef", basic("wrong-0123456789abcdef")):
        headers = {"Authorization": wrong} if wrong else {}
        code, found, _ = client.request(method, url, headers=headers)
        assert code == 401
        assert found["www-authenticate"] == 'Bearer realm="pxe-pilot"'
    for good in (f"Bearer {TOKEN}", basic(TOKEN)):
        headers = {"Authorization": good, "X-PXE-Pilot-Request": "1"}
        code, _, _ = client.request(method, url, headers=headers)
        assert code == 200


def test_machine_routes_need_no_admin_token(answers_dir: AnswersDir, assets: Path) -> None:
    """
    What machines fetch stays open: they cannot present the admin token.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, admin_token=TOKEN)
    assert default_entry(boot(client)) == "install-0"
    assert client.request("GET", "http://pxe.test/assets/proxmox-ve/9.1-1/vmlinuz")[0] == 200
    assert client.answer(installer_request())[0] == 200
    assert client.request("POST", WEBHOOK, data=webhook_body())[0] == 200
    assert client.request("GET", "http://pxe.test/health")[0] == 200


def test_answer_token(answers_dir: AnswersDir, assets: Path) -> None:
    """
    With an answer token, POST /answer needs it (9.2 installers send it as a bearer
    token); without it, 401 with a message the installer prints, and nothing recorded.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, answer_token=ANSWER_TOKEN)
    body = fixture_bytes("installer-post-9.2.json")
    code, error = client.json("POST", "http://pxe.test/answer", data=body)
    assert code == 401
    assert "--answer-token" in error["error"]
    code, _, _ = client.answer(body, headers={"Authorization": "Bearer nope-0123456789abcdef"})
    assert code == 401
    assert client.pilot.ledger.hosts == {}
    code, _, _ = client.answer(body, headers={"Authorization": f"Bearer {ANSWER_TOKEN}"})
    assert code == 200


def test_tokens_never_reach_the_log(
    answers_dir: AnswersDir, assets: Path, events: list[Any]
) -> None:
    """
    Neither token shows in any log event, whatever the requests carried.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, admin_token=TOKEN, answer_token=ANSWER_TOKEN)
    client.answer(installer_request(), headers={"Authorization": f"Bearer {ANSWER_TOKEN}"})
    client.answer(installer_request(), headers={"Authorization": "Bearer wrong-0123456789ab"})
    client.request("GET", "http://pxe.test/hosts", headers={"Authorization": f"Bearer {TOKEN}"})
    text = repr(events) + repr(client.pilot.config)
    assert TOKEN not in text
    assert ANSWER_TOKEN not in text


# -- metrics and the status page


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" (\S+)$"
    found = re.search("^" + pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in metrics"
    return float(found.group(1))


def test_metrics(client: Client) -> None:
    """
    C{/metrics} counts requests by route and status, answers by outcome, installs,
    asset bytes and hosts by state, in Prometheus' text format.
    """
    boot(client)
    client.request("GET", "http://pxe.test/assets/proxmox-ve/9.1-1/initrd")
    client.answer(installer_request())
    client.answer(b"not json")
    client.request("POST", WEBHOOK, data=webhook_body())
    client.answer(installer_request())
    client.request("GET", "http://pxe.test/no/such/route")
    code, headers, body = client.request("GET", "http://pxe.test/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert metric(text, "pxepilot_http_requests_total", route="answer", status="200") == 1
    assert metric(text, "pxepilot_http_requests_total", route="answer", status="400") == 1
    assert metric(text, "pxepilot_http_requests_total", route="answer", status="409") == 1
    assert metric(text, "pxepilot_http_requests_total", route="other", status="404") == 1
    assert metric(text, "pxepilot_http_requests_total", route="menu.ipxe", status="200") == 1
    assert metric(text, "pxepilot_answers_total", outcome="served") == 1
    assert metric(text, "pxepilot_answers_total", outcome="installed") == 1
    assert metric(text, "pxepilot_answers_total", outcome="bad-request") == 1
    assert metric(text, "pxepilot_installs_total", outcome="completed") == 1
    assert metric(text, "pxepilot_installs_total", outcome="failed") == 0
    assert metric(text, "pxepilot_asset_bytes_sent_total") == len(b"initrd 9.1-1")
    assert metric(text, "pxepilot_asset_downloads_total", outcome="complete") == 1
    assert metric(text, "pxepilot_hosts", state="installed") == 1
    assert metric(text, "pxepilot_asset_downloads_active") == 0


def test_status_page(client: Client) -> None:
    """
    C{/}: every host with state, product, last event and its age, answer file, FQDN
    and address, refreshing itself; what came from machines is escaped.
    """
    code, headers, body = client.request("GET", "http://pxe.test/")
    assert code == 200
    assert "No host has network-booted yet" in body.decode()
    boot(client)
    client.answer(installer_request())
    report = json.loads(webhook_body())
    report["fqdn"] = "<b>pve01</b>.example.com"
    client.request("POST", WEBHOOK, data=json.dumps(report).encode())
    code, headers, body = client.request("GET", "http://pxe.test/")
    page = body.decode()
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert '<meta http-equiv="refresh"' in page
    assert str(MAC) in page
    assert "state-installed" in page
    assert "pve 9.1.1" in page
    assert "default.toml" in page
    assert "192.0.2.21/24" in page
    assert "&lt;b&gt;pve01&lt;/b&gt;.example.com" in page
    assert "<b>pve01</b>" not in page
    assert "s ago" in page


def test_states_survive_a_restart(answers_dir: AnswersDir, assets: Path, tmp_path: Path) -> None:
    """
    A new pxe-pilot on the same state directory knows what the last one knew: an
    installed host still boots from its disk.
    """
    answers_dir.write("default.toml")
    state_dir = tmp_path / "state"
    first = Client(answers_dir, assets, state_dir=state_dir)
    first.answer(installer_request())
    first.request("POST", WEBHOOK, data=webhook_body())
    result_of(first.pilot.service.stopService())
    second = Client(answers_dir, assets, state_dir=state_dir)
    host = second.pilot.ledger.host(MAC)
    assert host is not None and host.state is HostState.INSTALLED
    assert default_entry(boot(second)) == "local"
    assert second.answer(installer_request())[0] == 409


def test_unusable_state_database_is_a_clear_error(
    answers_dir: AnswersDir, assets: Path, tmp_path: Path
) -> None:
    """
    A state directory holding something that is not a database stops pxe-pilot with
    one message, and the file is left as it was.
    """
    from pxepilot.hosts.store import StoreError

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    junk = state_dir / "pxe-pilot.sqlite3"
    junk.write_bytes(b"not a database, but someone's file" * 100)
    with pytest.raises(StoreError, match="not a usable pxe-pilot state database"):
        Client(answers_dir, assets, state_dir=state_dir)
    assert junk.read_bytes() == b"not a database, but someone's file" * 100
