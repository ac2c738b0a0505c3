"""
Answers and webhooks over HTTPS, on real sockets: a client that trusts the server the
way the Proxmox installer does (the SHA-256 of its DER certificate, nothing else),
C{--require-tls}, bearer and webhook tokens, the webhook pxe-pilot adds to answers, and
what a bad client gets on the HTTPS port.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent

from pxepilot import Config, make_service
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import HostState
from pxepilot.macs import MacAddress
from pxepilot.tls import fingerprint
from tests.conftest import AnswersDir, fixture_bytes

REQUEST_9_2 = fixture_bytes("installer-post-9.2.json")
MAC = "b0:7b:25:c1:0a:10"
OTHER_MAC = "04:3f:72:a8:1e:99"
ANSWER_TOKEN = "answer-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
WEBHOOK_TOKEN = "webhook-token-0123456789"


class PinMismatch(Exception):
    """
    The server's certificate is not the pinned one: the installer stops here.
    """


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return cast(int, probe.getsockname()[1])


def installer_request(
    port: int,
    path: str,
    body: bytes | None = None,
    *,
    tls: bool = True,
    pinned: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes, str | None]:
    """
    One request as the installer makes it: over TLS, the server is accepted by the
    SHA-256 of its DER certificate alone (no CA, no host name, no expiry) and refused
    before anything is sent when that is not C{pinned}. The status, headers, body, and
    the certificate's fingerprint.
    """
    connection: http.client.HTTPConnection
    seen = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        connection.connect()
        sock = cast(ssl.SSLSocket, connection.sock)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        seen = fingerprint(der)
        if pinned is not None and seen.replace(":", "") != pinned.replace(":", "").upper():
            connection.close()
            raise PinMismatch(seen)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {
        "Content-Type": "application/json; charset=utf-8",
        "Accept": "application/json, application/toml;q=0.5",
        **(headers or {}),
    }
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    result = (
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        response.read(),
        seen,
    )
    connection.close()
    return result


class Server:
    def __init__(self, top: MultiService, state: Path) -> None:
        self.top = top
        self.state = state

    def port(self, name: str) -> int:
        service: Any = cast(IServiceCollection, self.top).getServiceNamed(name)
        return cast(int, service.address().port)

    def ledger(self) -> HostLedger:
        pilot: Any = cast(IServiceCollection, self.top).getServiceNamed("pxe-pilot")
        return cast(HostLedger, pilot.getServiceNamed("hosts"))

    async def metrics(self) -> str:
        _, _, body, _ = await call(self.port("https"), "/metrics", method="GET")
        return body.decode()


def start(answers: AnswersDir, tmp_path: Path, **settings: Any) -> Server:
    state = tmp_path / "state"
    config = Config(
        answers_dir=answers.root,
        assets_dir=tmp_path,
        port=0,
        interface="127.0.0.1",
        https_port=free_port(),
        state_dir=state,
        answer_check="warn",
        **settings,
    )
    top = cast(MultiService, make_service(config))
    top.startService()
    return Server(top, state)


async def call(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str], bytes, str | None]:
    result: tuple[int, dict[str, str], bytes, str | None] = await deferToThread(
        installer_request, *args, **kwargs
    )
    return result


def generated_fingerprint(state: Path) -> str:
    pem = (state / "tls" / "server.crt").read_bytes()
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem.decode()))


@pytest_twisted.ensureDeferred
async def test_the_answer_comes_over_https_to_a_pinned_client(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    A client that pins the generated certificate's fingerprint gets its answer over
    HTTPS; the fingerprint is the one logged, in /health, and on the status page; one
    that pins another certificate stops before it sends anything.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path)
    try:
        https = server.port("https")
        pinned = generated_fingerprint(server.state)
        code, headers, body, seen = await call(https, "/answer", REQUEST_9_2, pinned=pinned)
        assert (code, seen) == (200, pinned)
        assert headers["x-pxe-pilot-source"] == "default.toml"
        assert tomllib.loads(body.decode())["global"]["fqdn"] == "pve01.example.com"

        with pytest.raises(PinMismatch):
            await call(https, "/answer", REQUEST_9_2, pinned="AB" * 32)

        code, _, body, _ = await call(https, "/health", method="GET")
        assert json.loads(body)["tls"]["fingerprint"] == pinned
        assert json.loads(body)["tls"]["port"] == https
        code, _, page, _ = await call(https, "/", method="GET")
        assert pinned in page.decode()
        # The client that pinned another certificate sent nothing: one answer served.
        metrics = await server.metrics()
        assert 'pxepilot_answers_total{outcome="served"} 1.0' in metrics
    finally:
        await server.top.stopService()


@pytest_twisted.ensureDeferred
async def test_the_certificate_survives_a_restart(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    The generated certificate is made once, kept private (0600) and presented again,
    unchanged, after a restart.
    """
    first = start(answers_dir, tmp_path)
    try:
        _, _, _, before = await call(first.port("https"), "/health", method="GET")
    finally:
        await first.top.stopService()
    assert (first.state / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
    assert (first.state / "tls" / "server.crt").stat().st_mode & 0o777 == 0o600
    second = start(answers_dir, tmp_path)
    try:
        _, _, _, after = await call(second.port("https"), "/health", method="GET")
    finally:
        await second.top.stopService()
    assert before == after == generated_fingerprint(tmp_path / "state")


@pytest_twisted.ensureDeferred
async def test_a_wrong_bearer_token_gets_401(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    With an answer token, a wrong or missing bearer token gets 401 over HTTPS too; the
    right one the answer.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, answer_token=ANSWER_TOKEN)
    try:
        https = server.port("https")
        for wrong in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            code, _, _, _ = await call(https, "/answer", REQUEST_9_2, headers=wrong)
            assert code == 401
        right = {"Authorization": f"Bearer {ANSWER_TOKEN}"}
        code, _, _, _ = await call(https, "/answer", REQUEST_9_2, headers=right)
        assert code == 200
    finally:
        await server.top.stopService()


@pytest_twisted.ensureDeferred
async def test_plain_http_is_refused_where_tls_is_required(
    answers_dir: AnswersDir, tmp_path: Path, events: list[LogEvent]
) -> None:
    """
    With C{--require-tls}, the answer, the webhook, the operator's routes and re-arming
    answer 403 over plain HTTP, naming the HTTPS URL, and serve nothing; boot scripts,
    assets and /health stay on HTTP, as iPXE and firmware need them.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, require_tls=True)
    try:
        plain, https = server.port("http"), server.port("https")
        refused = [
            ("POST", "/answer", REQUEST_9_2),
            ("POST", "/webhook", fixture_bytes("post-install-webhook-9.1.json")),
            ("GET", "/hosts", None),
            ("GET", f"/hosts/{MAC}", None),
            ("GET", "/metrics", None),
            ("GET", "/", None),
            ("POST", f"/hosts/{MAC}/reinstall", None),
        ]
        for method, path, body in refused:
            code, _, answer, _ = await call(plain, path, body, tls=False, method=method)
            assert code == 403, path
            error = json.loads(answer)
            assert error["https_url"] == f"https://127.0.0.1:{https}{path}"
            assert b"[global]" not in answer
        for path in ("/health", "/boot.ipxe", "/menu.ipxe?mac=" + MAC):
            code, _, _, _ = await call(plain, path, tls=False, method="GET")
            assert code == 200, path
        # Nothing of those reached the ledger: the menu made the host known, no more.
        host = server.ledger().hosts[MacAddress.parse(MAC)]
        assert (host.answer, host.installed_at) == (None, None)
        code, _, _, _ = await call(https, "/answer", REQUEST_9_2)
        assert code == 200
    finally:
        await server.top.stopService()


@pytest_twisted.ensureDeferred
async def test_https_urls_for_a_machine_that_asked_by_an_ipv6_address(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    A machine that reached pxe-pilot at an IPv6 address (its C{Host} header in
    brackets) is told HTTPS URLs with that address in brackets, once: the 403 of
    C{--require-tls} and the injected webhook.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, require_tls=True, inject_webhook=True)
    try:
        plain, https = server.port("http"), server.port("https")
        host = {"Host": f"[fd00:77::1]:{plain}"}
        code, _, answer, _ = await call(plain, "/answer", REQUEST_9_2, tls=False, headers=host)
        assert code == 403
        assert json.loads(answer)["https_url"] == f"https://[fd00:77::1]:{https}/answer"
        host = {"Host": f"[fd00:77::1]:{https}"}
        code, _, body, _ = await call(https, "/answer", REQUEST_9_2, headers=host)
        assert code == 200
        hook = tomllib.loads(body.decode())["post-installation-webhook"]
        assert hook["url"] == f"https://[fd00:77::1]:{https}/webhook"
    finally:
        await server.top.stopService()


def webhook_body(macs: list[str], token: str | None) -> bytes:
    """
    An installation report (9.1's shape) from a machine with C{macs}, with C{token} as
    9.2 adds it.
    """
    report = json.loads(fixture_bytes("post-install-webhook-9.1.json"))
    report["network-interfaces"] = [
        {"name": f"eno{i}", "mac": mac, "is-management": i == 0} for i, mac in enumerate(macs)
    ]
    if token is not None:
        report["token"] = token
    return json.dumps(report).encode()


def state(server: Server, mac: str) -> HostState | None:
    host = server.ledger().hosts.get(MacAddress.parse(mac))
    return host.state if host is not None else None


@pytest_twisted.ensureDeferred
async def test_the_injected_webhook_authenticates_its_own_host(
    answers_dir: AnswersDir, tmp_path: Path, events: list[LogEvent]
) -> None:
    """
    With C{--inject-webhook}, a 9.2 installer's answer gets a webhook section to
    pxe-pilot's HTTPS URL, with its certificate's fingerprint and a token for that host;
    a report without it, with a wrong one or with another host's changes nothing, and
    the host's own token marks it installed. No token shows in a log line.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, inject_webhook=True, admin_token=ADMIN_TOKEN)
    try:
        https = server.port("https")
        code, _, body, _ = await call(https, "/answer", REQUEST_9_2)
        assert code == 200
        hook = tomllib.loads(body.decode())["post-installation-webhook"]
        assert hook["url"] == f"https://127.0.0.1:{https}/webhook"
        assert hook["cert-fingerprint"] == generated_fingerprint(server.state)
        token = hook["auth-token"]
        other_request = REQUEST_9_2.replace(b"B0:7B:25:C1:0A:10", OTHER_MAC.upper().encode())
        _, _, other_body, _ = await call(https, "/answer", other_request)
        other_token = tomllib.loads(other_body.decode())["post-installation-webhook"]["auth-token"]
        assert other_token != token

        for forged in (None, "forged-token-0123456789", other_token):
            code, _, answer, _ = await call(https, "/webhook", webhook_body([MAC], forged))
            assert code == 401, forged
            assert b"token" in answer
            assert state(server, MAC) is HostState.INSTALLING
        code, _, answer, _ = await call(https, "/webhook", webhook_body([MAC], token))
        assert code == 200
        assert state(server, MAC) is HostState.INSTALLED

        _, _, hosts, _ = await call(
            https, "/hosts", method="GET", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert token.encode() not in hosts
    finally:
        await server.top.stopService()
    text = "\n".join(str(event) for event in events)
    assert token not in text and other_token not in text


@pytest_twisted.ensureDeferred
async def test_the_webhook_token_is_required_when_set(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    With C{--webhook-token}, a report without it or with another changes no state
    (401); with it, the host is installed.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, webhook_token=WEBHOOK_TOKEN)
    try:
        https = server.port("https")
        assert (await call(https, "/answer", REQUEST_9_2))[0] == 200
        for forged in (None, "another-token-0123456789"):
            code, _, _, _ = await call(https, "/webhook", webhook_body([MAC], forged))
            assert code == 401
            assert state(server, MAC) is HostState.INSTALLING
        code, _, _, _ = await call(https, "/webhook", webhook_body([MAC], WEBHOOK_TOKEN))
        assert code == 200
        assert state(server, MAC) is HostState.INSTALLED
    finally:
        await server.top.stopService()


@pytest_twisted.ensureDeferred
async def test_garbage_and_abandoned_handshakes_leave_https_serving(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    Bytes that are no TLS, and handshakes begun and abandoned, get their connections
    closed; the server goes on answering over HTTPS.
    """

    def abuse(port: int) -> None:
        for n in range(50):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if n % 2:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
                    # The server closes a connection that is no TLS.
                    assert sock.recv(4096) is not None
                else:
                    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path)
    try:
        https = server.port("https")
        await deferToThread(abuse, https)
        code, _, _, _ = await call(https, "/answer", REQUEST_9_2)
        assert code == 200
    finally:
        await server.top.stopService()


def test_unusable_certificates_stop_start_up_with_one_line(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    A certificate file that is no certificate, or a key of another certificate: the
    service is not built, and the error is one line naming the file.
    """
    from pxepilot.tls import TLSSetupError, new_self_signed

    certificate, _ = new_self_signed(["localhost"], datetime.now(UTC))
    _, other_key = new_self_signed(["localhost"], datetime.now(UTC))
    cert_file, key_file, garbage = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "g.pem"
    cert_file.write_bytes(certificate)
    key_file.write_bytes(other_key)
    garbage.write_bytes(b"not a certificate")
    for cert, key, named in ((cert_file, key_file, "k.pem"), (garbage, key_file, "g.pem")):
        config = Config(
            answers_dir=answers_dir.root,
            assets_dir=tmp_path,
            state_dir=tmp_path / "state",
            tls_cert=cert,
            tls_key=key,
        )
        with pytest.raises(TLSSetupError) as caught:
            make_service(config)
        message = str(caught.value)
        assert named in message and "\n" not in message


@pytest_twisted.ensureDeferred
async def test_no_secret_shows_in_logs_pages_or_metrics(
    answers_dir: AnswersDir, tmp_path: Path, events: list[LogEvent], debug_logging: None
) -> None:
    """
    With every token set and debug logging on, a whole installation (answer, webhook)
    and an operator's look at /hosts, the status page and the metrics leave no token,
    no root password and no key in a log line or on those pages.
    """
    answers_dir.write("default.toml")
    server = start(
        answers_dir,
        tmp_path,
        answer_token=ANSWER_TOKEN,
        admin_token=ADMIN_TOKEN,
        webhook_token=WEBHOOK_TOKEN,
        inject_webhook=True,
    )
    pages: list[str] = []
    try:
        https = server.port("https")
        bearer = {"Authorization": f"Bearer {ANSWER_TOKEN}"}
        code, _, body, _ = await call(https, "/answer", REQUEST_9_2, headers=bearer)
        assert code == 200
        host_token = tomllib.loads(body.decode())["post-installation-webhook"]["auth-token"]
        code, _, _, _ = await call(https, "/webhook", webhook_body([MAC], WEBHOOK_TOKEN))
        assert code == 200
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for path in ("/hosts", f"/hosts/{MAC}/status", "/", "/metrics", "/health"):
            code, _, shown, _ = await call(https, path, method="GET", headers=admin)
            assert code == 200, path
            pages.append(shown.decode())
    finally:
        await server.top.stopService()
    key = (server.state / "tls" / "server.key").read_text().splitlines()[1]
    secrets = [ANSWER_TOKEN, ADMIN_TOKEN, WEBHOOK_TOKEN, host_token, "changeme123", key]
    logged = "\n".join(str(event) for event in events)
    for secret in secrets:
        assert secret not in logged
        for page in pages:
            assert secret not in page


def pxe_pilot_command(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ.update(PXE_PILOT_STATE_DIR=str(state), PXE_PILOT_ADMIN_TOKEN=ADMIN_TOKEN)
    command = [str(Path(sys.executable).parent / "pxe-pilot"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)


@pytest_twisted.ensureDeferred
async def test_the_command_trusts_the_servers_own_certificate(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    C{pxe-pilot hosts} over HTTPS trusts the certificate pxe-pilot made in its state
    directory by its fingerprint, as the installer does; given another fingerprint it
    refuses the server; over plain HTTP with C{--require-tls} it says to use HTTPS.
    """
    answers_dir.write("default.toml")
    server = start(answers_dir, tmp_path, require_tls=True, admin_token=ADMIN_TOKEN)
    try:
        https, plain = server.port("https"), server.port("http")
        url = f"https://127.0.0.1:{https}/"
        trusted = await deferToThread(pxe_pilot_command, "--url", url, "hosts", state=server.state)
        assert trusted.returncode == 0, trusted.stderr
        wrong = await deferToThread(
            pxe_pilot_command,
            "--url",
            url,
            "--cert-fingerprint",
            "ab" * 32,
            "hosts",
            state=server.state,
        )
        assert wrong.returncode == 1
        assert "cannot reach pxe-pilot" in wrong.stderr
        plain_url = f"http://127.0.0.1:{plain}/"
        refused = await deferToThread(
            pxe_pilot_command, "--url", plain_url, "hosts", state=server.state
        )
        assert refused.returncode == 1
        assert f"https://127.0.0.1:{https}/hosts" in refused.stderr
    finally:
        await server.top.stopService()
