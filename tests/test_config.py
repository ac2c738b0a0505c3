"""
Configuration: options win over the environment, the environment over defaults, and
every invalid value is one clear error naming its option.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from twisted.logger import LogLevel

from pxepilot.config import SETTINGS, Config, ConfigError, load_config


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    A working directory holding the default answers and assets directories.
    """
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(dirs: Path) -> None:
    """
    With nothing given, every setting has its documented default.
    """
    config = load_config({}, {})
    assert config == Config(
        answers_dir=dirs / "answers",
        assets_dir=dirs / "assets",
        asset_url=None,
        port=8080,
        interface=None,
        boot_enabled=False,
        tftp_port=69,
        tftp_root=Path("/usr/lib/ipxe"),
        log_level=LogLevel.info,
        trusted_proxies=(),
        state_dir=dirs / "state",
        install_once=True,
        install_timeout=3600,
        host_expiry=86400,
        admin_token=None,
        answer_token=None,
        answer_check="refuse",
        proxy_dhcp=False,
    )
    assert config.answers_dir.is_absolute()


def test_environment_sets_every_setting(dirs: Path) -> None:
    """
    Every setting can come from its C{PXE_PILOT_*} variable.
    """
    other = dirs / "other"
    other.mkdir()
    environ = {
        "PXE_PILOT_ANSWERS_DIR": str(other),
        "PXE_PILOT_ASSETS_DIR": str(other),
        "PXE_PILOT_ASSET_URL": "https://cdn.example.com/pxe",
        "PXE_PILOT_PORT": "8081",
        "PXE_PILOT_INTERFACE": "192.0.2.10",
        "PXE_PILOT_BOOT_ENABLED": "true",
        "PXE_PILOT_TFTP_PORT": "6969",
        "PXE_PILOT_TFTP_ROOT": str(other),
        "PXE_PILOT_LOG_LEVEL": "WARNING",
        "PXE_PILOT_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
        "PXE_PILOT_TFTP_MAX_BLKSIZE": "1468",
        "PXE_PILOT_TFTP_MAX_WINDOWSIZE": "16",
        "PXE_PILOT_TFTP_MAX_TRANSFERS": "50",
        "PXE_PILOT_TFTP_MAX_PER_CLIENT": "4",
        "PXE_PILOT_TFTP_MAX_TRANSFER_TIME": "600",
        "PXE_PILOT_PUBLIC_URL": "http://pxe.example.com:8080",
        "PXE_PILOT_MENU_DEFAULT": "proxmox-ve",
        "PXE_PILOT_MENU_TIMEOUT": "0",
        "PXE_PILOT_KERNEL_ARGS": "console=ttyS0,115200  nomodeset",
        "PXE_PILOT_STATE_DIR": str(other / "state"),
        "PXE_PILOT_DATABASE_URL": "postgresql://pxe@db.example.com/fleet",
        "PXE_PILOT_INSTALL_ONCE": "no",
        "PXE_PILOT_INSTALL_TIMEOUT": "7200",
        "PXE_PILOT_HOST_EXPIRY": "3600",
        "PXE_PILOT_ADMIN_TOKEN": "admin-token-0123456789",
        "PXE_PILOT_ANSWER_TOKEN": "answer-token-0123456789",
        "PXE_PILOT_ANSWER_CHECK": "Warn",
        "PXE_PILOT_PROXY_DHCP": "yes",
        "PXE_PILOT_HTTPS_PORT": "9443",
        "PXE_PILOT_TLS_CERT": str(other / "cert.pem"),
        "PXE_PILOT_TLS_KEY": str(other / "key.pem"),
        "PXE_PILOT_REQUIRE_TLS": "on",
        "PXE_PILOT_WEBHOOK_TOKEN": "webhook-token-0123456789",
        "PXE_PILOT_INJECT_WEBHOOK": "true",
        "PXE_PILOT_SECURE_BOOT": "Never",
        "PXE_PILOT_SECURE_BOOT_DIR": str(other),
    }
    assert set(environ) == {s.env for s in SETTINGS}
    config = load_config({}, environ)
    assert config == Config(
        answers_dir=other,
        assets_dir=other,
        asset_url="https://cdn.example.com/pxe/",
        port=8081,
        interface="192.0.2.10",
        boot_enabled=True,
        tftp_port=6969,
        tftp_root=other,
        log_level=LogLevel.warn,
        trusted_proxies=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.0.2.1/32"),
        ),
        tftp_max_blksize=1468,
        tftp_max_windowsize=16,
        tftp_max_transfers=50,
        tftp_max_per_client=4,
        tftp_max_transfer_time=600,
        public_url="http://pxe.example.com:8080/",
        menu_default="proxmox-ve",
        menu_timeout=0,
        kernel_args="console=ttyS0,115200 nomodeset",
        state_dir=other / "state",
        database_url="postgresql://pxe@db.example.com/fleet",
        install_once=False,
        install_timeout=7200,
        host_expiry=3600,
        admin_token="admin-token-0123456789",
        answer_token="answer-token-0123456789",
        answer_check="warn",
        proxy_dhcp=True,
        https_port=9443,
        tls_cert=other / "cert.pem",
        tls_key=other / "key.pem",
        require_tls=True,
        webhook_token="webhook-token-0123456789",
        inject_webhook=True,
        secure_boot="never",
        secure_boot_dir=other,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tls-cert": "/x/cert.pem"}, "--tls-cert: needs --tls-key as well"),
        ({"tls-key": "/x/key.pem"}, "--tls-key: needs --tls-cert as well"),
        ({"https-port": "0", "require-tls": True}, "--require-tls: needs HTTPS"),
        (
            {"https-port": "0", "tls-cert": "/x/c.pem", "tls-key": "/x/k.pem"},
            "--tls-cert: HTTPS is off",
        ),
        ({"https-port": "8080"}, "--https-port: 8080 is the HTTP port"),
        ({"https-port": "70000"}, "--https-port: "),
    ],
)
def test_tls_settings_that_cannot_work_stop_start_up(
    dirs: Path, options: dict[str, object], message: str
) -> None:
    """
    A certificate without its key (or the reverse), TLS required with HTTPS off, or
    HTTPS on the HTTP port: one line naming the option, before anything listens.
    """
    with pytest.raises(ConfigError) as caught:
        load_config(options, {})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_tokens_are_checked_and_never_shown(dirs: Path) -> None:
    """
    A token too short or with spaces stops start-up without repeating it, and a valid
    one never shows in the configuration's repr (so never in a log line).
    """
    for bad in ("short-secret", "a token with spaces in it", "x" * 1025):
        with pytest.raises(ConfigError) as raised:
            load_config({"admin-token": bad}, {})
        assert bad not in str(raised.value)
        assert "--admin-token" in str(raised.value)
    config = load_config({}, {"PXE_PILOT_ANSWER_TOKEN": "  sekrit-0123456789abcdef  "})
    assert config.answer_token == "sekrit-0123456789abcdef"
    assert "sekrit" not in repr(config)


def test_proxy_dhcp_needs_the_tftp_server(dirs: Path) -> None:
    """
    proxyDHCP sends firmware to pxe-pilot's TFTP server: without --boot, start-up stops
    with one line saying so.
    """
    with pytest.raises(ConfigError, match=r"--proxy-dhcp: .* needs --boot"):
        load_config({"proxy-dhcp": True}, {})
    with pytest.raises(ConfigError, match=r"PXE_PILOT_PROXY_DHCP: .* needs --boot"):
        load_config({}, {"PXE_PILOT_PROXY_DHCP": "true"})
    assert load_config({"proxy-dhcp": True, "boot": True}, {}).proxy_dhcp


def test_state_directory_must_be_a_directory(dirs: Path) -> None:
    """
    A state path that is a file is refused by name; a missing one is fine (created).
    """
    (dirs / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--state: .*file is not a directory"):
        load_config({"state": str(dirs / "file")}, {})
    assert load_config({"state": str(dirs / "new")}, {}).state_dir == dirs / "new"


def test_option_wins_over_environment(dirs: Path) -> None:
    """
    An explicit option beats the environment variable, flags included.
    """
    config = load_config(
        {"port": "9000", "boot": False, "log-level": "debug"},
        {
            "PXE_PILOT_PORT": "8081",
            "PXE_PILOT_BOOT_ENABLED": "yes",
            "PXE_PILOT_LOG_LEVEL": "error",
        },
    )
    assert (config.port, config.boot_enabled, config.log_level) == (9000, False, LogLevel.debug)
    assert load_config(
        {"boot": True}, {"PXE_PILOT_BOOT_ENABLED": "false", "PXE_PILOT_TFTP_ROOT": str(dirs)}
    ).boot_enabled


def test_empty_environment_variable_is_unset(dirs: Path) -> None:
    """
    C{-e PXE_PILOT_PORT=} (an empty value) means the default.
    """
    assert load_config({}, {"PXE_PILOT_PORT": "", "PXE_PILOT_ASSET_URL": " "}).port == 8080


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        ({"port": "http"}, {}, "--port: 'http' is not a port number"),
        ({"port": "70000"}, {}, "--port: port 70000 is outside 0-65535"),
        ({}, {"PXE_PILOT_PORT": "-1"}, "PXE_PILOT_PORT: port -1 is outside 0-65535"),
        ({"tftp-port": "6 9"}, {}, "--tftp-port: '6 9' is not a port number"),
        ({"log-level": "verbose"}, {}, "--log-level: 'verbose' is not one of debug"),
        ({}, {"PXE_PILOT_BOOT_ENABLED": "maybe"}, "PXE_PILOT_BOOT_ENABLED: 'maybe' is not"),
        ({"interface": "eth0"}, {}, "--interface: 'eth0' is not an IPv4 or IPv6 address"),
        ({"interface": "fd00::zz"}, {}, "--interface: 'fd00::zz' is not an IPv4 or IPv6"),
        ({"interface": "fe80::1%eth0"}, {}, "--interface: 'fe80::1%eth0' is link-local; give"),
        ({"interface": "fe80::1"}, {}, "--interface: 'fe80::1' is link-local; give a global"),
        ({"asset-url": "ftp://x/"}, {}, "--asset-url: 'ftp://x/' is not an absolute http"),
        ({"asset-url": "/assets"}, {}, "is not an absolute http:// or https:// URL"),
        ({"asset-url": "http://x/?a=1"}, {}, "a base URL has no query"),
        ({"trusted-proxies": "10.0.0.0/33"}, {}, "--trusted-proxies: '10.0.0.0/33' is not"),
        ({"answers": "missing"}, {}, "--answers: "),
        ({"tftp-max-blksize": "4"}, {}, "--tftp-max-blksize: 4 is outside 8-65464"),
        ({"tftp-max-windowsize": "0"}, {}, "--tftp-max-windowsize: 0 is outside 1-65535"),
        ({}, {"PXE_PILOT_TFTP_MAX_TRANSFERS": "many"}, "'many' is not a whole number"),
        ({"menu-default": "../etc"}, {}, "--menu-default: '../etc' is not auto, local"),
        ({"menu-timeout": "-1"}, {}, "--menu-timeout: -1 is outside 0-3600"),
        ({"host-expiry": "59"}, {}, "--host-expiry: 59 is outside 60-31622400"),
        ({"kernel-args": "a;reboot"}, {}, "--kernel-args: 'a;reboot' has characters"),
        ({"public-url": "pxe:8080"}, {}, "--public-url: 'pxe:8080' is not an absolute"),
        (
            {"public-url": "http://fd00::1:8080/"},
            {},
            "--public-url: 'http://fd00::1:8080/' is not a URL (an IPv6 address goes in "
            "brackets: [fd00::1])",
        ),
        (
            {"public-url": "http://[fd00::zz]/"},
            {},
            "--public-url: 'http://[fd00::zz]/' is not a URL",
        ),
        ({}, {"PXE_PILOT_ASSETS_DIR": "missing"}, "PXE_PILOT_ASSETS_DIR: "),
    ],
)
def test_invalid_values(
    dirs: Path, options: dict[str, object], environ: dict[str, str], message: str
) -> None:
    """
    Each invalid value raises one L{ConfigError} naming where it came from.
    """
    with pytest.raises(ConfigError) as raised:
        load_config(options, environ)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_directory_problems(dirs: Path) -> None:
    """
    A missing directory and a file in place of a directory are told apart.
    """
    (dirs / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--answers: .*/missing does not exist"):
        load_config({"answers": "missing"}, {})
    with pytest.raises(ConfigError, match=r"--assets: .*/file is not a directory"):
        load_config({"assets": "file"}, {})


def test_tftp_root_only_checked_with_boot(dirs: Path) -> None:
    """
    The TFTP root must exist only when the TFTP server runs.
    """
    assert not load_config({"tftp-root": "missing"}, {}).boot_enabled
    with pytest.raises(ConfigError, match=r"--tftp-root: .*missing does not exist"):
        load_config({"tftp-root": "missing", "boot": True}, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_boolean_spellings(dirs: Path, text: str, expected: bool) -> None:
    """
    Booleans accept the usual spellings of true and false.
    """
    environ = {"PXE_PILOT_BOOT_ENABLED": text, "PXE_PILOT_TFTP_ROOT": str(dirs)}
    assert load_config({}, environ).boot_enabled is expected


def test_interfaces(dirs: Path) -> None:
    """
    An interface is an IPv4 or IPv6 address, or all of them; the endpoint follows.
    """
    assert load_config({"interface": "all"}, {}).interface is None
    assert load_config({}, {}).http_endpoint() == "tcp:port=8080:backlog=1024"
    v4 = load_config({"interface": "127.0.0.1", "port": "0"}, {})
    assert v4.http_endpoint() == "tcp:port=0:interface=127.0.0.1:backlog=1024"
    v6 = load_config({"interface": "::1"}, {})
    assert v6.http_endpoint() == "tcp6:port=8080:interface=\\:\\:1:backlog=1024"


@pytest.mark.parametrize(
    ("given", "interface", "endpoint"),
    [
        # Every IPv4 address, however it is said.
        ("all", None, "tcp:port=8080:backlog=1024"),
        ("0.0.0.0", None, "tcp:port=8080:backlog=1024"),
        # Every IPv6 address, and (dual-stack) every IPv4 one.
        ("::", "::", "tcp6:port=8080:interface=\\:\\::backlog=1024"),
        ("fd00:77::1", "fd00:77::1", "tcp6:port=8080:interface=fd00\\:77\\:\\:1:backlog=1024"),
        # One spelling: compressed, lower case; brackets as in a URL are taken off.
        ("FD00:0077:0:0::0001", "fd00:77::1", None),
        ("[fd00:77::1]", "fd00:77::1", None),
        # An IPv4 address written as IPv6 is the IPv4 address.
        ("::ffff:192.0.2.10", "192.0.2.10", "tcp:port=8080:interface=192.0.2.10:backlog=1024"),
    ],
)
def test_ipv6_interfaces(
    dirs: Path, given: str, interface: str | None, endpoint: str | None
) -> None:
    """
    C{--interface} takes an IPv6 address or C{::}, kept in one spelling, and the HTTP
    endpoint binds IPv6 for it; C{all} and C{0.0.0.0} stay every IPv4 address.
    """
    config = load_config({"interface": given}, {})
    assert config.interface == interface
    if endpoint is not None:
        assert config.http_endpoint() == endpoint


def test_public_url_with_an_ipv6_address(dirs: Path) -> None:
    """
    The public and asset URLs may name a host by an IPv6 address, in brackets.
    """
    config = load_config(
        {"public-url": "http://[fd00:77::1]:8080", "asset-url": "http://[fd00:77::2]/assets"}, {}
    )
    assert config.public_url == "http://[fd00:77::1]:8080/"
    assert config.asset_url == "http://[fd00:77::2]/assets/"


def test_asset_url_normalised(dirs: Path) -> None:
    """
    The asset base URL always ends with one slash.
    """
    assert load_config({"asset-url": "http://h:8080/a/b"}, {}).asset_url == "http://h:8080/a/b/"
    assert load_config({"asset-url": "https://h/"}, {}).asset_url == "https://h/"


def test_config_rejects_bad_ports_when_built_directly() -> None:
    """
    Embedding code that builds a L{Config} by hand gets the same port check.
    """
    with pytest.raises(ConfigError, match="port: port 65536"):
        Config(port=65536)
