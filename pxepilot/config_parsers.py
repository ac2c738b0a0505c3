"""
The parsers of pxe-pilot's settings: each turns the text of an option or environment
variable into a value of L{pxepilot.config.Config}, or raises L{ConfigError} saying why not.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path

from hyperlink import DecodedURL
from twisted.logger import LogLevel

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is outside 0-65535")
    return value


class ConfigError(Exception):
    """
    A configuration value is invalid; the message names the option and the problem.
    """


def parse_directory(text: str) -> Path:
    if not text.strip():
        raise ValueError("empty directory name")
    # Absolute now: a daemonised twistd changes its working directory.
    return Path(text).expanduser().absolute()


MIN_TOKEN_LENGTH = 16


def parse_token(text: str) -> str | None:
    # The messages never repeat the value: it is a secret.
    token = text.strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters")
    if len(token) > 1024 or not all("!" <= c <= "~" for c in token):
        raise ValueError("a token is at most 1024 printable ASCII characters, no spaces")
    return token


def parse_database_url(text: str) -> str | None:
    # The messages never repeat the value: it may hold a password.
    url = text.strip()
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("a database URL starts with postgresql://")
    return url


def parse_answer_check(text: str) -> str:
    word = text.strip().lower()
    if word not in ("warn", "refuse"):
        raise ValueError(f"{text!r} is not warn or refuse")
    return word


def parse_secure_boot(text: str) -> str:
    word = text.strip().lower()
    if word not in ("auto", "always", "never"):
        raise ValueError(f"{text!r} is not auto, always or never")
    return word


def parse_file(text: str) -> Path | None:
    if not text.strip():
        return None
    return Path(text.strip()).expanduser().absolute()


def parse_port_or_off(text: str) -> int:
    if text.strip() == "0":
        return 0
    return parse_port(text)


def parse_port(text: str) -> int:
    try:
        number = int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    return check_port(number)


def parse_interface(text: str) -> str | None:
    # None (all, 0.0.0.0) is every IPv4 address; :: is every IPv6 address and, as Linux
    # sockets are dual-stack unless net.ipv6.bindv6only is set, every IPv4 one too.
    if text.strip().lower() in ("", "all", "*", "0.0.0.0"):
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address, '::' or 'all'") from None
    if isinstance(address, ipaddress.IPv6Address) and (address.scope_id or address.is_link_local):
        # A link-local address needs its link named in each bind and URL; iPXE's can't.
        raise ValueError(f"{text!r} is link-local; give a global or unique-local one, or '::'")
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not true or false")


_LOG_LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def parse_log_level(text: str) -> LogLevel:
    try:
        return _LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not one of debug, info, warning, error") from None


def parse_base_url(text: str) -> str | None:
    if not text.strip():
        return None
    try:
        url = DecodedURL.from_text(text.strip())
    except Exception:
        bare_ipv6 = "::" in text and "[" not in text
        hint = " (an IPv6 address goes in brackets: [fd00::1])" if bare_ipv6 else ""
        raise ValueError(f"{text!r} is not a URL{hint}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r} is not an absolute http:// or https:// URL")
    if url.query or url.fragment:
        raise ValueError(f"{text!r}: a base URL has no query or fragment")
    rendered: str = url.to_text()
    return rendered if rendered.endswith("/") else rendered + "/"


def bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}-{high}")
        return number

    return parse


def parse_menu_default(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)?", value):
        raise ValueError(
            f"{text!r} is not auto, local, shell, a product (proxmox-ve) or a version "
            "(proxmox-ve/9.1-1)"
        )
    return value


def parse_kernel_args(text: str) -> str:
    value = " ".join(text.split())
    if value and not re.fullmatch(r"[A-Za-z0-9_.,:/=+@-]+( [A-Za-z0-9_.,:/=+@-]+)*", value):
        raise ValueError(f"{text!r} has characters a kernel command line here may not have")
    return value


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or CIDR network") from None
    return tuple(networks)
