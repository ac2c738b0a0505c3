"""
Saying what is wrong before a machine downloads anything: assets whose answer URL does
not lead here, an empty assets directory, a machine whose answer would be refused, a
C{--menu-default} that names nothing, and a port that cannot be bound.
"""

from __future__ import annotations

import errno
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from pxepilot import Config, PxePilot
from pxepilot.address import HTTPAddress
from pxepilot.answers.request import parse_installer_request
from pxepilot.answers.versions import OLDEST, InstallerVersion, VersionRange, installer_versions
from pxepilot.boot.health import NO_ASSETS, AssetsHealth, answer_url_problem
from pxepilot.boot.policy import installers_of
from pxepilot.config import ConfigError, load_config
from pxepilot.health import ComponentHealth
from pxepilot.hosts.ledger import run_here
from pxepilot.listening import ListenFailed, ListeningService
from pxepilot.macs import MacAddress
from pxepilot.simulate import installer_body
from pxepilot.tap import StartUpFailed, _StartUp
from tests.boot.test_ipxe import asset
from tests.conftest import MINIMAL_ANSWER, AnswersDir, clock_at_now
from tests.test_boot_routes import Client, default_entry, publish
from tests.twistd_process import TwistdProcess

MAC = "b0:7b:25:c1:0a:10"
HOST_FILE = "hosts/b0-7b-25-c1-0a-10.toml"
# Two values installer 9.1 rejects: an unknown keyboard layout and country.
TWO_ERRORS = MINIMAL_ANSWER.replace(b'"en-us"', b'"klingon"').replace(b'"us"', b'"xx"')


def with_answer_url(target: Path, url: str, fingerprint: str | None = None) -> None:
    metadata = json.loads((target / "asset.json").read_text())
    metadata["answer"] = {"url": url, "cert_fingerprint": fingerprint}
    (target / "asset.json").write_text(json.dumps(metadata))


def listening(port: int = 8080, https: int = 8443, public_url: str | None = None) -> HTTPAddress:
    """
    pxe-pilot's address once its own listeners listen.
    """
    address = HTTPAddress(public_url, port, None, https)
    address.listening(port)
    if https:
        address.https_listening(https)
    return address


# /health: the assets.


def test_no_assets_is_degraded_with_the_reason(tmp_path: Path) -> None:
    """
    An empty assets directory cannot boot anything: degraded, saying what to do.
    """
    status = AssetsHealth(tmp_path).check()
    assert status.status == "degraded"
    assert status.reasons == (NO_ASSETS,)
    assert status.details["versions"] == []


@pytest.mark.parametrize(
    ("url", "wrong"),
    [
        ("http://127.0.0.1:8080/answer", "127.0.0.1 is a loopback address"),
        ("http://localhost:8080/answer", "localhost is the machine itself"),
        ("http://[::1]:8080/answer", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:8080/answer", "::ffff:127.0.0.1 is a loopback address"),
        ("http://0.0.0.0:8080/answer", "0.0.0.0 is no machine's address"),
        ("http://169.254.1.1:8080/answer", "169.254.1.1 is a link-local address"),
        ("http://192.0.2.10/answer", "not HTTP on port 80"),
        ("http://192.0.2.10:8081/answer", "not HTTP on port 8081"),
        ("http://192.0.2.10:8443/answer", "not HTTP on port 8443"),
        ("https://192.0.2.10:8080/answer", "not HTTPS on port 8080"),
        ("http://192.0.2.10:8080/answers", "pxe-pilot answers at /answer, not /answers"),
        ("http://192.0.2.10:8080/", "pxe-pilot answers at /answer, not /"),
        ("ftp://192.0.2.10/answer", "not an http:// or https:// URL"),
        ("http://192.0.2.10:99999/answer", "not a URL"),
    ],
)
def test_answer_urls_that_miss_this_server(url: str, wrong: str) -> None:
    """
    A loopback, unspecified or link-local host, another scheme or port than pxe-pilot's
    listeners, or another path: installers asking there never reach this server.
    """
    problem = answer_url_problem(url, listening())
    assert problem is not None and wrong in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.10:8080/answer",
        "https://192.0.2.10:8443/answer",
        "http://pxe.example.com:8080/answer",
        "https://[2001:db8::10]:8443/answer",
        # Another machine's address may be this one's through NAT: not certain.
        "http://198.51.100.7:8080/answer",
    ],
)
def test_answer_urls_that_reach_this_server(url: str) -> None:
    """
    pxe-pilot's own ports with its path, whatever the host: nothing is flagged that
    could be right.
    """
    assert answer_url_problem(url, listening()) is None


def test_answer_urls_through_the_public_url() -> None:
    """
    With C{--public-url}, the proxy's scheme and port are right too, with the public
    URL's path; pxe-pilot's own listeners stay right.
    """
    address = listening(public_url="https://pxe.example.com/pxe/")
    assert answer_url_problem("https://pxe.example.com/pxe/answer", address) is None
    assert answer_url_problem("http://192.0.2.10:8080/answer", address) is None
    problem = answer_url_problem("https://pxe.example.com/answer", address)
    assert problem == "pxe-pilot answers at /pxe/answer, not /answer"
    problem = answer_url_problem("http://pxe.example.com/pxe/answer", address)
    assert problem is not None and "is reached at https://pxe.example.com/pxe/" in problem


def test_ports_are_not_judged_where_they_cannot_be_known() -> None:
    """
    Trusted proxies may forward any port and path; an application serving pxe-pilot
    from its own site has ports pxe-pilot does not know; a port still being chosen is
    not known yet. Only hosts nobody reaches are flagged then.
    """
    for address, proxied in (
        (listening(), True),
        (None, False),
        (HTTPAddress(None, 0, None, 0), False),
    ):
        assert answer_url_problem("http://192.0.2.10:80/pxe/answer", address, proxied) is None
        assert answer_url_problem("http://127.0.0.1:8000/answer", address, proxied) is not None


def test_https_off_makes_https_answer_urls_miss() -> None:
    problem = answer_url_problem("https://192.0.2.10:8443/answer", listening(https=0))
    assert problem is not None and "listens for HTTP on port 8080, not HTTPS" in problem


def test_assets_with_misdirected_answer_urls_are_named(tmp_path: Path) -> None:
    """
    Each version whose installers would ask elsewhere is named with its URL and why;
    the others are not.
    """
    good = publish(tmp_path, "9.1-1")
    with_answer_url(good, "http://192.0.2.10:8080/answer")
    bad = publish(tmp_path, "9.0-1")
    with_answer_url(bad, "http://127.0.0.1:8080/answer")
    status = AssetsHealth(tmp_path, address=listening()).check()
    assert status.status == "degraded"
    [problem] = status.details["answer_url_problems"]
    assert problem["version"] == "proxmox-ve/9.0-1"
    assert problem["answer_url"] == "http://127.0.0.1:8080/answer"
    assert "loopback" in problem["error"]
    [reason] = status.reasons
    assert reason.startswith(
        "proxmox-ve/9.0-1: its installers would ask http://127.0.0.1:8080/answer for "
        "their answer, but 127.0.0.1 is a loopback address"
    )


def test_pinned_to_another_certificate_has_a_reason(tmp_path: Path) -> None:
    target = publish(tmp_path, "9.1-1")
    with_answer_url(target, "https://192.0.2.10:8443/answer", "CD" * 32)
    status = AssetsHealth(tmp_path, "AB" * 32, address=listening()).check()
    assert status.details["pinned_to_another_certificate"] == ["proxmox-ve/9.1-1"]
    assert status.reasons == (
        "proxmox-ve/9.1-1: its installers pin another certificate than pxe-pilot's: "
        "rebuild it with pxe-pilot-builder",
    )


def test_health_route_of_twistd_pxe_pilot_names_the_asset(tmp_path: Path) -> None:
    """
    As C{twistd pxe-pilot} builds it (its own listeners), C{/health} compares the answer
    URLs with the configured ports; embedded in another site, it cannot.
    """
    answers, assets = tmp_path / "answers", tmp_path / "assets"
    answers.mkdir()
    with_answer_url(publish(assets, "9.1-1"), "http://192.0.2.10:80/answer")
    config = Config(answers_dir=answers, assets_dir=assets, state_dir=tmp_path / "state")
    own = PxePilot(config, clock_at_now(), run_blocking=run_here, listeners=True)
    code, _, body = Client(own.resource).get("http://pxe.test/health")
    health = json.loads(body)
    assert (code, health["status"]) == (200, "degraded")
    [reason] = health["assets"]["reasons"]
    assert reason.startswith("proxmox-ve/9.1-1: its installers would ask")
    assert "pxe-pilot listens for HTTP on port 8080 and HTTPS on port 8443" in reason
    embedded = PxePilot(config, clock_at_now(), run_blocking=run_here)
    code, _, body = Client(embedded.resource).get("http://pxe.test/health")
    assert json.loads(body)["assets"]["status"] == "ok"


def test_reasons_of_a_component() -> None:
    assert ComponentHealth("ok").reasons == ()
    assert ComponentHealth("degraded", {"reasons": ["a", "b"]}).reasons == ("a", "b")


# The menu: a machine whose answer would be refused is not installed by default.


def menu_of(answers: AnswersDir, assets: Path, **config: Any) -> tuple[str, PxePilot]:
    settings = Config(
        answers_dir=answers.root, assets_dir=assets, state_dir=assets.parent / "state", **config
    )
    pilot = PxePilot(settings, clock_at_now(), run_blocking=run_here)
    return Client(pilot.resource).script(f"http://pxe.test/menu.ipxe?mac={MAC}"), pilot


def last_event(pilot: PxePilot) -> dict[str, Any]:
    host = pilot.ledger.host(MacAddress.parse(MAC))
    assert host is not None
    event: dict[str, Any] = host.last_event.as_json()
    return event


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    assets = tmp_path / "assets"
    publish(assets, "9.1-1")
    publish(assets, "8.3-1")
    return assets


def test_answer_with_errors_boots_the_disk_and_says_why(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    A host file installer 9.1 would refuse: the menu boots the local disk, the entry
    says its answer would be refused and why, and so do the script's comment and the
    host's timeline (the status page).
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml", TWO_ERRORS)
    menu, pilot = menu_of(answers_dir, versions)
    assert default_entry(menu) == "local"
    lines = menu.splitlines()
    entry = lines.index("item install-0 Install Proxmox VE 9.1-1 (answer would be refused)")
    assert lines[entry + 1] == f"item --gap -- - {HOST_FILE} has 2 errors: see pxe-pilot check"
    reason = (
        f"answer file {HOST_FILE} has 2 errors for installer 9.1.x (see pxe-pilot check "
        "--installer-version 9.1): local disk rather than newest Proxmox VE, proxmox-ve/9.1-1"
    )
    assert f"# pxe-pilot menu for {MAC}: {reason}" in menu
    assert last_event(pilot)["summary"] == f"menu: {reason}"


def test_answer_check_warn_still_offers_the_installation(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    Under C{--answer-check warn} the file is served anyway: the machine installs.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml", TWO_ERRORS)
    menu, _ = menu_of(answers_dir, versions, answer_check="warn")
    assert default_entry(menu) == "install-0"
    assert "refused" not in menu


def test_each_version_is_judged_by_its_own_installer(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    A file in kebab-case, which installer 8.3 does not know: 9.1 installs by default,
    and only the 8.3 entry says its answer would be refused.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    menu, _ = menu_of(answers_dir, versions)
    assert default_entry(menu) == "install-0"
    assert "item install-0 Install Proxmox VE 9.1-1\n" in menu
    assert "item install-1 Install Proxmox VE 8.3-1 (answer would be refused)" in menu


def test_a_named_version_is_not_installed_when_refused(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    Whoever named the version (the host's boot settings here), a refused answer wins.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.write("hosts/b0-7b-25-c1-0a-10.boot.toml", b'default = "proxmox-ve/8.3-1"\n')
    menu, pilot = menu_of(answers_dir, versions)
    assert default_entry(menu) == "local"
    assert last_event(pilot)["summary"].endswith(
        ": local disk rather than proxmox-ve/8.3-1 from the host's boot settings"
    )


def test_unreadable_answer_is_refused_even_under_warn(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    A file that is no TOML is refused whatever C{--answer-check} says.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml", b"[global\n")
    menu, _ = menu_of(answers_dir, versions, answer_check="warn")
    assert default_entry(menu) == "local"
    assert f"item --gap -- - {HOST_FILE} cannot be served: see pxe-pilot check" in menu
    assert f"its answer file cannot be served: {HOST_FILE}, line 1" in menu


def test_no_answer_file_is_not_installed_even_when_named(
    answers_dir: AnswersDir, versions: Path
) -> None:
    """
    C{--menu-default proxmox-ve} does not send a machine without an answer file to an
    installer that would get 404.
    """
    answers_dir.host("04-3f-72-a8-1e-20.toml")
    menu, _ = menu_of(answers_dir, versions, menu_default="proxmox-ve")
    assert default_entry(menu) == "local"
    assert "item --gap -- - no answer file for the MAC address it boots from" in menu
    assert "local disk rather than proxmox-ve/9.1-1 from the --menu-default option" in menu


def test_file_being_written_is_not_judged(answers_dir: AnswersDir, versions: Path) -> None:
    """
    A file changed a moment ago may be half-written; the answer route waits for it, and
    the menu does not refuse it on what it holds now.
    """
    answers_dir.write(HOST_FILE, b"[glo", age=0)
    menu, _ = menu_of(answers_dir, versions)
    assert default_entry(menu) == "install-0"


@pytest.mark.parametrize(
    ("product", "release", "carried"),
    [
        ("pve", "8.2", "8.2"),
        ("pve", "8.3", "8.3"),
        ("pve", "9.1", "9.1"),
        ("pve", "9.2", "9.2"),
        ("pbs", "3.4", "8.4"),
        ("pbs", "4.1", "9.1"),
    ],
)
def test_installers_of_an_asset_are_the_answer_routes(
    product: str, release: str, carried: str
) -> None:
    """
    The installer versions an asset is checked for are those the answer route takes
    the request of its installer to come from.
    """
    body, accept = installer_body(
        [MacAddress.parse(MAC)], InstallerVersion.parse(carried), product
    )
    request = parse_installer_request(body)
    expected = installer_versions(request, accept)
    assert installers_of(asset(release=release, product=product)) == expected


def test_installers_of_a_product_without_release_mapping() -> None:
    """
    Mail Gateway's releases say nothing of their installer: every installer, so that
    only what all of them reject refuses the answer.
    """
    versions = installers_of(asset("proxmox-mail-gateway/9.1-1", release="9.1", product="pmg"))
    assert versions.low == OLDEST
    assert isinstance(versions, VersionRange)


# --menu-default: a name that can never be in the menu stops start-up.


@pytest.fixture
def directories(tmp_path: Path) -> Path:
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets" / "pve-lab").mkdir(parents=True)
    return tmp_path


def load(directories: Path, menu_default: str) -> Config:
    return load_config(
        {
            "answers": str(directories / "answers"),
            "assets": str(directories / "assets"),
            "menu-default": menu_default,
        },
        {},
    )


@pytest.mark.parametrize(
    "value",
    ["auto", "local", "shell", "proxmox-ve", "proxmox-backup-server/4.1-1", "pve-lab/9.1-1"],
)
def test_menu_defaults_that_can_be_offered(directories: Path, value: str) -> None:
    """
    A Proxmox product's directory, with a version not yet published, or a product
    directory the assets hold: accepted.
    """
    assert load(directories, value).menu_default == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "--menu-default: 'foo' is not auto, local, shell, a product (proxmox-ve, "),
        ("foo/9.1-1", "--menu-default: 'foo/9.1-1' is not auto, local, shell, a product"),
        (
            "pve/9.1-1",
            "--menu-default: 'pve/9.1-1' names the product by its code; the menu's name is "
            "'proxmox-ve/9.1-1'",
        ),
    ],
)
def test_menu_defaults_that_name_nothing(directories: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(directories, value)
    assert str(raised.value).startswith(message)


def test_menu_default_foo_stops_twistd(tmp_path: Path) -> None:
    """
    One line and a non-zero exit, before anything listens.
    """
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    process = TwistdProcess(["--menu-default", "foo"], cwd=tmp_path)
    assert process.finish() != 0
    [line] = process.text.strip().splitlines()
    assert line.startswith("pxe-pilot: error: --menu-default: 'foo' is not auto, local, shell")


# A port that cannot be bound: one line naming the option, the address and the cause.


class _Refusing(ListeningService):
    kind = "TFTP"

    def __init__(self, code: int, port: int = 69) -> None:
        self.code = code
        self.port = port

    def _listen(self) -> IListeningPort:
        raise CannotListenError("", self.port, OSError(self.code, errno.errorcode[self.code]))


@pytest.mark.parametrize(
    ("code", "port", "why"),
    [
        (errno.EADDRINUSE, 69, "0.0.0.0:69 is already in use (EADDRINUSE)"),
        (errno.EACCES, 69, "0.0.0.0:69 needs root or CAP_NET_BIND_SERVICE"),
        (errno.EADDRNOTAVAIL, 6969, "0.0.0.0:6969 is not an address of this machine"),
        (errno.EACCES, 6969, "0.0.0.0:6969 cannot be bound (EACCES)"),
    ],
)
def test_a_bind_error_says_where_and_why(code: int, port: int, why: str) -> None:
    """
    The listener's error is still a L{CannotListenError}, and reads as one line.
    """
    service = _Refusing(code, port)
    with pytest.raises(CannotListenError) as raised:
        service.privilegedStartService()
    assert isinstance(raised.value, ListenFailed)
    assert str(raised.value).startswith(f"TFTP cannot listen: {why}")
    assert "\n" not in str(raised.value)
    assert not service.listening


@pytest.mark.parametrize(
    ("kind", "code", "interface", "line"),
    [
        ("proxyDHCP", errno.EADDRINUSE, "", "--proxy-dhcp: 0.0.0.0:67 is already in use"),
        ("TFTP", errno.EACCES, "", "--tftp-port 67: 0.0.0.0:67 needs root"),
        ("HTTP", errno.EADDRNOTAVAIL, "192.0.2.99", "--interface 192.0.2.99: 192.0.2.99:67 is"),
    ],
)
def test_start_up_names_the_option(kind: str, code: int, interface: str, line: str) -> None:
    """
    Under twistd, the failure becomes one line naming the option behind the port (the
    interface, when the address is not this machine's) and a non-zero exit.
    """

    class Failing(_Refusing):
        def _listen(self) -> IListeningPort:
            raise CannotListenError(interface, 67, OSError(code, errno.errorcode[code]))

    service = Failing(code, 67)
    service.kind = kind
    top = _StartUp({}, {})
    service.setServiceParent(top)
    with pytest.raises(SystemExit) as raised:
        top.privilegedStartService()
    assert isinstance(raised.value, StartUpFailed)
    assert str(raised.value).startswith(f"pxe-pilot: error: {line}")


def only_line(process: TwistdProcess) -> str:
    """
    The one line of a start-up that failed, from a log with twistd's own start-up lines.
    """
    assert "Traceback" not in process.text, process.text
    [line] = [line for line in process.text.splitlines() if "pxe-pilot: error:" in line]
    return line.split("] ", 1)[-1] if "] " in line else line


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "{port}"], {}, "--port {port}"),
        ([], {"PXE_PILOT_PORT": "{port}"}, "PXE_PILOT_PORT={port}"),
        (["--port", "0", "--https-port", "{port}"], {}, "--https-port {port}"),
    ],
)
def test_port_in_use_stops_twistd_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    """
    The HTTP or HTTPS port taken by another program: no traceback, one line naming the
    option (or variable), the address and the cause, and a non-zero exit.
    """
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        process = TwistdProcess(
            ["--interface", "127.0.0.1", *(a.format(port=port) for a in args)],
            env={k: v.format(port=port) for k, v in env.items()},
            cwd=tmp_path,
        )
        assert process.finish() != 0
    assert only_line(process) == (
        f"pxe-pilot: error: {named.format(port=port)}: 127.0.0.1:{port} is already in use "
        "(Address already in use)"
    )


def test_tftp_port_in_use_stops_twistd_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        process = TwistdProcess(
            [
                "--interface",
                "127.0.0.1",
                "--port",
                "0",
                "--boot",
                "--tftp-root",
                str(tmp_path),
                "--tftp-port",
                str(port),
            ],
            cwd=tmp_path,
        )
        assert process.finish() != 0
    assert re.fullmatch(
        rf"pxe-pilot: error: --tftp-port {port}: 127\.0\.0\.1:{port} is already in use \(.*\)",
        only_line(process),
    )
