"""
pxe-pilot's configuration: one frozen L{Config}, loaded from command-line options and
C{PXE_PILOT_*} environment variables.

L{SETTINGS} is the single description of every setting; the twistd options, the
environment lookup and the documentation are all derived from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen
from twisted.logger import LogLevel

from pxepilot.boot.catalogue import unknown_product
from pxepilot.config_parsers import (
    MIN_TOKEN_LENGTH as MIN_TOKEN_LENGTH,
)
from pxepilot.config_parsers import (
    ConfigError as ConfigError,
)
from pxepilot.config_parsers import (
    IPNetwork as IPNetwork,
)
from pxepilot.config_parsers import (
    bounded,
    check_port,
    parse_answer_check,
    parse_base_url,
    parse_bool,
    parse_database_url,
    parse_directory,
    parse_file,
    parse_interface,
    parse_kernel_args,
    parse_log_level,
    parse_menu_default,
    parse_networks,
    parse_port,
    parse_port_or_off,
    parse_secure_boot,
    parse_token,
)


def _check_port(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    try:
        check_port(value)
    except ValueError as e:
        raise ConfigError(f"{attribute.name}: {e}") from None


def _check_port_or_off(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value != 0:
        _check_port(_instance, attribute, value)


# The listen queue of the HTTP and HTTPS ports. Twisted's default of 50 overflows when a
# rack's installers ask for their answers at once: the kernel drops the connection and
# the client tries again a second later, then two, then four. The kernel caps it at
# net.core.somaxconn (4096 on current kernels).
LISTEN_BACKLOG = 1024


@frozen
class Config:
    """
    Everything pxe-pilot needs to run. Build one directly when embedding pxe-pilot, or with
    L{load_config} from options and the environment.

    @ivar answers_dir: Holds C{default.toml} and C{hosts/<mac>.toml}.
    @ivar assets_dir: Boot assets made by the builder.
    @ivar asset_url: External base URL of the assets directory, with a trailing slash;
        L{None} to derive it from each request.
    @ivar port: HTTP port; 0 picks a free one.
    @ivar interface: Address to bind HTTP and TFTP to; L{None} for all IPv4 addresses,
        C{::} for all IPv6 and IPv4 addresses.
    @ivar boot_enabled: Whether to run the built-in TFTP server.
    @ivar tftp_port: TFTP port; 0 picks a free one.
    @ivar tftp_root: Files served over TFTP.
    @ivar log_level: The least severe pxe-pilot event that is logged.
    @ivar trusted_proxies: Peers whose C{X-Forwarded-*} headers are believed.
    @ivar tftp_max_blksize: The largest TFTP block size granted.
    @ivar tftp_max_windowsize: The largest TFTP window granted, in blocks.
    @ivar tftp_max_transfers: Concurrent TFTP transfers in all.
    @ivar tftp_max_per_client: Concurrent TFTP transfers from one address.
    @ivar tftp_max_transfer_time: Longest a TFTP transfer may take, in seconds.
    @ivar public_url: External base URL of pxe-pilot's HTTP side, with a trailing
        slash; L{None} to derive it from each request (or from the address a TFTP
        request was sent to).
    @ivar menu_default: What the menu boots by default: C{auto}, C{local}, C{shell},
        a product or a version directory.
    @ivar menu_timeout: Seconds before the menu takes its default; 0 waits.
    @ivar kernel_args: Appended to every installer's kernel command line.
    @ivar state_dir: Holds the host database; created when missing.
    @ivar database_url: A PostgreSQL URL: the host database is there, shared by
        several instances, instead of in L{state_dir}. A secret (it may hold a password).
    @ivar install_once: Whether an installed host boots from its disk and is refused
        answers until it is re-armed.
    @ivar install_timeout: Seconds after its answer before an installation that has not
        reported success is marked failed.
    @ivar host_expiry: Seconds after its last event before a host that was only seen
        (never served an answer, never installed) is forgotten.
    @ivar admin_token: When set, the host list, status page, metrics and re-arming need
        it as a bearer token.
    @ivar answer_token: When set, C{POST /answer} needs it as a bearer token.
    @ivar answer_check: What happens to an answer file the asking installer would
        reject: C{refuse} (422, with the findings) or C{warn} (served, findings logged).
    @ivar proxy_dhcp: Whether to answer PXE clients' DHCP requests with boot
        information (UDP 67 and 4011), next to the network's own DHCP server.
    @ivar https_port: The HTTPS port; 0 serves no HTTPS.
    @ivar tls_cert: The HTTPS certificate (PEM, the leaf first); L{None} to use the one
        pxe-pilot creates in its state directory.
    @ivar tls_key: The certificate's private key (PEM), given with C{tls_cert}.
    @ivar require_tls: Whether answers, webhooks and the operator's routes refuse plain
        HTTP (403, naming the HTTPS URL).
    @ivar webhook_token: When set, C{POST /webhook} needs it as the body's C{token}.
    @ivar inject_webhook: Whether an answer without a C{[post-installation-webhook]}
        gets one pointing at pxe-pilot, with a token for that host.
    @ivar secure_boot: Who proxyDHCP sends shim rather than iPXE: C{auto}, C{always} or
        C{never} (L{pxepilot.boot.secure.SecureBootChoice}).
    @ivar secure_boot_dir: Holds the signed C{shimx64.efi} and C{grubx64.efi}; L{None}
        to serve the newest asset's.
    """

    answers_dir: Path = field(default=Path("answers"), converter=Path)
    assets_dir: Path = field(default=Path("assets"), converter=Path)
    asset_url: str | None = None
    port: int = field(default=8080, validator=_check_port)
    interface: str | None = None
    boot_enabled: bool = False
    tftp_port: int = field(default=69, validator=_check_port)
    tftp_root: Path = field(default=Path("/usr/lib/ipxe"), converter=Path)
    log_level: LogLevel = LogLevel.info
    trusted_proxies: tuple[IPNetwork, ...] = ()
    tftp_max_blksize: int = 65464
    tftp_max_windowsize: int = 64
    tftp_max_transfers: int = 200
    tftp_max_per_client: int = 8
    tftp_max_transfer_time: float = 3600.0
    public_url: str | None = None
    menu_default: str = "auto"
    menu_timeout: int = 10
    kernel_args: str = ""
    state_dir: Path = field(default=Path("state"), converter=Path)
    database_url: str | None = field(default=None, repr=False)
    install_once: bool = True
    install_timeout: float = 3600.0
    host_expiry: float = 86400.0
    # Secrets: never in a repr, so never in a log line.
    admin_token: str | None = field(default=None, repr=False)
    answer_token: str | None = field(default=None, repr=False)
    answer_check: str = "refuse"
    proxy_dhcp: bool = False
    https_port: int = field(default=8443, validator=_check_port_or_off)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    webhook_token: str | None = field(default=None, repr=False)
    inject_webhook: bool = False
    secure_boot: str = "auto"
    secure_boot_dir: Path | None = None

    def http_endpoint(self) -> str:
        """
        The server endpoint description the HTTP listener binds to.
        """
        backlog = f"backlog={LISTEN_BACKLOG}"
        if self.interface is None:
            return f"tcp:port={self.port}:{backlog}"
        family = "tcp6" if ":" in self.interface else "tcp"
        escaped = self.interface.replace(":", "\\:")
        return f"{family}:port={self.port}:interface={escaped}:{backlog}"

    @property
    def https_enabled(self) -> bool:
        return self.https_port != 0


# Parsers turn the text of an option or variable into a value, or raise ValueError with
# a message that completes "--option: ...".


@frozen
class Setting:
    """
    One configurable value: its option, its environment variable and its default.

    @ivar name: The L{Config} attribute.
    @ivar option: The long option, without dashes.
    @ivar env: The environment variable.
    @ivar default: The default, as it would be written on the command line.
    @ivar meaning: One line for C{--help} and the documentation.
    @ivar parse: Turns text into the value; raises L{ValueError}.
    @ivar flag: A boolean given as C{--option} / C{--no-option}.
    @ivar metavar: What the option's argument is, for C{--help}.
    """

    name: str
    option: str
    env: str
    default: str
    meaning: str
    parse: Callable[[str], Any]
    flag: bool = False
    metavar: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "answers_dir",
        "answers",
        "PXE_PILOT_ANSWERS_DIR",
        "./answers",
        "directory with default.toml and hosts/*.toml",
        parse_directory,
        metavar="DIR",
    ),
    Setting(
        "assets_dir",
        "assets",
        "PXE_PILOT_ASSETS_DIR",
        "./assets",
        "boot assets made by pxe-pilot-builder",
        parse_directory,
        metavar="DIR",
    ),
    Setting(
        "asset_url",
        "asset-url",
        "PXE_PILOT_ASSET_URL",
        "",
        "external base URL of the assets directory (default: derived from each request)",
        parse_base_url,
        metavar="URL",
    ),
    Setting("port", "port", "PXE_PILOT_PORT", "8080", "HTTP port", parse_port, metavar="N"),
    Setting(
        "interface",
        "interface",
        "PXE_PILOT_INTERFACE",
        "all",
        "address to bind HTTP and TFTP to: IPv4, IPv6, :: (all, both) or all (IPv4)",
        parse_interface,
        metavar="ADDR",
    ),
    Setting(
        "boot_enabled",
        "boot",
        "PXE_PILOT_BOOT_ENABLED",
        "false",
        "run the built-in TFTP server",
        parse_bool,
        flag=True,
    ),
    Setting(
        "tftp_port", "tftp-port", "PXE_PILOT_TFTP_PORT", "69", "TFTP port", parse_port, metavar="N"
    ),
    Setting(
        "tftp_root",
        "tftp-root",
        "PXE_PILOT_TFTP_ROOT",
        "/usr/lib/ipxe",
        "files served over TFTP",
        parse_directory,
        metavar="DIR",
    ),
    Setting(
        "log_level",
        "log-level",
        "PXE_PILOT_LOG_LEVEL",
        "info",
        "debug, info, warning or error",
        parse_log_level,
        metavar="LEVEL",
    ),
    Setting(
        "trusted_proxies",
        "trusted-proxies",
        "PXE_PILOT_TRUSTED_PROXIES",
        "",
        "comma-separated addresses or CIDRs allowed to set X-Forwarded-*",
        parse_networks,
        metavar="CIDRS",
    ),
    Setting(
        "public_url",
        "public-url",
        "PXE_PILOT_PUBLIC_URL",
        "",
        "external base URL of pxe-pilot's HTTP side (default: derived from each request)",
        parse_base_url,
        metavar="URL",
    ),
    Setting(
        "menu_default",
        "menu-default",
        "PXE_PILOT_MENU_DEFAULT",
        "auto",
        "what the boot menu boots by default: auto, local, shell, a product or a version",
        parse_menu_default,
        metavar="CHOICE",
    ),
    Setting(
        "menu_timeout",
        "menu-timeout",
        "PXE_PILOT_MENU_TIMEOUT",
        "10",
        "seconds before the boot menu takes its default; 0 waits for a person",
        bounded(0, 3600),
        metavar="SECONDS",
    ),
    Setting(
        "kernel_args",
        "kernel-args",
        "PXE_PILOT_KERNEL_ARGS",
        "",
        "appended to the installer's kernel command line (such as console=ttyS0,115200)",
        parse_kernel_args,
        metavar="ARGS",
    ),
    Setting(
        "tftp_max_blksize",
        "tftp-max-blksize",
        "PXE_PILOT_TFTP_MAX_BLKSIZE",
        "65464",
        "largest TFTP block size granted (8-65464)",
        bounded(8, 65464),
        metavar="BYTES",
    ),
    Setting(
        "tftp_max_windowsize",
        "tftp-max-windowsize",
        "PXE_PILOT_TFTP_MAX_WINDOWSIZE",
        "64",
        "largest TFTP window granted, in blocks (1-65535)",
        bounded(1, 65535),
        metavar="BLOCKS",
    ),
    Setting(
        "tftp_max_transfers",
        "tftp-max-transfers",
        "PXE_PILOT_TFTP_MAX_TRANSFERS",
        "200",
        "concurrent TFTP transfers in all",
        bounded(1, 100000),
        metavar="N",
    ),
    Setting(
        "tftp_max_per_client",
        "tftp-max-per-client",
        "PXE_PILOT_TFTP_MAX_PER_CLIENT",
        "8",
        "concurrent TFTP transfers from one address",
        bounded(1, 100000),
        metavar="N",
    ),
    Setting(
        "tftp_max_transfer_time",
        "tftp-max-transfer-time",
        "PXE_PILOT_TFTP_MAX_TRANSFER_TIME",
        "3600",
        "longest a TFTP transfer may take, in seconds",
        bounded(1, 7 * 86400),
        metavar="SECONDS",
    ),
    Setting(
        "state_dir",
        "state",
        "PXE_PILOT_STATE_DIR",
        "./state",
        "directory of the host database (created when missing)",
        parse_directory,
        metavar="DIR",
    ),
    Setting(
        "database_url",
        "database",
        "PXE_PILOT_DATABASE_URL",
        "",
        "PostgreSQL URL of a host database shared by several instances (default: SQLite "
        "in --state)",
        parse_database_url,
        metavar="URL",
    ),
    Setting(
        "install_once",
        "install-once",
        "PXE_PILOT_INSTALL_ONCE",
        "true",
        "boot installed hosts from their disk and refuse them answers until re-armed",
        parse_bool,
        flag=True,
    ),
    Setting(
        "install_timeout",
        "install-timeout",
        "PXE_PILOT_INSTALL_TIMEOUT",
        "3600",
        "seconds after the answer before an installation without a report has failed",
        bounded(60, 7 * 86400),
        metavar="SECONDS",
    ),
    Setting(
        "host_expiry",
        "host-expiry",
        "PXE_PILOT_HOST_EXPIRY",
        "86400",
        "seconds after its last event before a host never served an answer nor installed "
        "is forgotten",
        bounded(60, 366 * 86400),
        metavar="SECONDS",
    ),
    Setting(
        "admin_token",
        "admin-token",
        "PXE_PILOT_ADMIN_TOKEN",
        "",
        "bearer token for /hosts, /, /metrics and re-arming (default: open)",
        parse_token,
        metavar="TOKEN",
    ),
    Setting(
        "answer_token",
        "answer-token",
        "PXE_PILOT_ANSWER_TOKEN",
        "",
        "bearer token POST /answer requires, as set with pxe-pilot-builder --answer-token",
        parse_token,
        metavar="TOKEN",
    ),
    Setting(
        "answer_check",
        "answer-check",
        "PXE_PILOT_ANSWER_CHECK",
        "refuse",
        "an answer the asking installer would reject: refuse (422) or warn (serve, log)",
        parse_answer_check,
        metavar="POLICY",
    ),
    Setting(
        "proxy_dhcp",
        "proxy-dhcp",
        "PXE_PILOT_PROXY_DHCP",
        "false",
        "answer PXE clients' DHCP with boot information (proxyDHCP, UDP 67 and 4011)",
        parse_bool,
        flag=True,
    ),
    Setting(
        "https_port",
        "https-port",
        "PXE_PILOT_HTTPS_PORT",
        "8443",
        "HTTPS port, serving the same routes as HTTP; 0 turns HTTPS off",
        parse_port_or_off,
        metavar="N",
    ),
    Setting(
        "tls_cert",
        "tls-cert",
        "PXE_PILOT_TLS_CERT",
        "",
        "HTTPS certificate, PEM, leaf first (default: one pxe-pilot creates in --state)",
        parse_file,
        metavar="FILE",
    ),
    Setting(
        "tls_key",
        "tls-key",
        "PXE_PILOT_TLS_KEY",
        "",
        "private key of --tls-cert, PEM",
        parse_file,
        metavar="FILE",
    ),
    Setting(
        "require_tls",
        "require-tls",
        "PXE_PILOT_REQUIRE_TLS",
        "false",
        "refuse answers, webhooks and the operator's routes over plain HTTP (403)",
        parse_bool,
        flag=True,
    ),
    Setting(
        "webhook_token",
        "webhook-token",
        "PXE_PILOT_WEBHOOK_TOKEN",
        "",
        "token POST /webhook requires in its body (the answer's auth-token, 9.2 and later)",
        parse_token,
        metavar="TOKEN",
    ),
    Setting(
        "inject_webhook",
        "inject-webhook",
        "PXE_PILOT_INJECT_WEBHOOK",
        "false",
        "add a post-installation webhook to pxe-pilot, with a per-host token, to answers "
        "that have none",
        parse_bool,
        flag=True,
    ),
    Setting(
        "secure_boot",
        "secure-boot",
        "PXE_PILOT_SECURE_BOOT",
        "auto",
        "who proxyDHCP sends shimx64.efi rather than iPXE: auto (the hosts whose boot "
        "settings say so, or whose iPXE was refused), always or never",
        parse_secure_boot,
        metavar="WHEN",
    ),
    Setting(
        "secure_boot_dir",
        "secure-boot-dir",
        "PXE_PILOT_SECURE_BOOT_DIR",
        "",
        "directory with the signed shimx64.efi and grubx64.efi (default: the newest asset's)",
        parse_file,
        metavar="DIR",
    ),
)


def load_config(options: Mapping[str, object], environ: Mapping[str, str]) -> Config:
    """
    Resolve every setting: an explicit option wins over the environment, the environment
    over the default. Directories must exist (the TFTP root only when boot is enabled).

    @param options: Option values by L{Setting.option}; L{None} or absent when the
        option was not given. Flags are L{bool}, other options text.
    @param environ: The process environment.

    @raise ConfigError: naming the option (and variable) and what is wrong.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        given = options.get(setting.option)
        if given is not None:
            source = f"--{setting.option}"
            if isinstance(given, bool):
                values[setting.name] = given
                sources[setting.option] = source
                continue
            text = str(given)
        elif environ.get(setting.env, "").strip():
            source = setting.env
            text = environ[setting.env]
        else:
            source = f"--{setting.option} (default)"
            text = setting.default
        sources[setting.option] = source
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None

    config = Config(**values)
    directories = [("answers", config.answers_dir), ("assets", config.assets_dir)]
    if config.boot_enabled:
        directories.append(("tftp-root", config.tftp_root))
    if config.secure_boot_dir is not None:
        directories.append(("secure-boot-dir", config.secure_boot_dir))
    if config.proxy_dhcp and not config.boot_enabled:
        raise ConfigError(
            f"{sources.get('proxy-dhcp', '--proxy-dhcp')}: proxyDHCP sends machines to "
            "pxe-pilot's TFTP server, which needs --boot"
        )
    if (config.tls_cert is None) != (config.tls_key is None):
        given, missing = ("tls-cert", "tls-key") if config.tls_cert else ("tls-key", "tls-cert")
        raise ConfigError(f"{sources[given]}: needs --{missing} as well")
    if config.tls_cert is not None and not config.https_enabled:
        raise ConfigError(f"{sources['tls-cert']}: HTTPS is off (--https-port 0)")
    if config.require_tls and not config.https_enabled:
        raise ConfigError(f"{sources['require-tls']}: needs HTTPS, which --https-port 0 turns off")
    if config.https_enabled and config.https_port == config.port:
        raise ConfigError(f"{sources['https-port']}: {config.port} is the HTTP port")
    if config.state_dir.exists() and not config.state_dir.is_dir():
        raise ConfigError(f"{sources['state']}: {config.state_dir} is not a directory")
    for option, path in directories:
        if not path.is_dir():
            problem = "is not a directory" if path.exists() else "does not exist"
            raise ConfigError(f"{sources[option]}: {path} {problem}")
    # A default that names nothing would quietly boot every machine from its disk.
    if config.menu_default not in ("auto", "local", "shell"):
        unknown = unknown_product(config.menu_default, config.assets_dir)
        if unknown is not None:
            raise ConfigError(f"{sources['menu-default']}: {unknown}")
    return config
