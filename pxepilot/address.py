"""
Where machines reach pxe-pilot's HTTP side, for the scripts and DHCP replies that
name it before any HTTP request says so.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from attrs import define, field


# Asked for every request, about the same few clients.
@functools.lru_cache(maxsize=4096)
def plain_address(text: str) -> str:
    """
    A client's address as pxe-pilot keeps and shows it: an IPv4 client of a dual-stack
    socket (bound to C{::}) arrives as C{::ffff:10.0.0.5} and is C{10.0.0.5}, as it would
    be on an IPv4 socket; IPv6 in its one compressed, lower-case spelling, without a
    scope. Anything that is not an address (C{unknown}) is left as it is.
    """
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def url_host(address: str) -> str:
    """
    An address or name as the host of a URL: an IPv6 address in brackets.
    """
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


@define
class HTTPAddress:
    """
    pxe-pilot's HTTP base URL as a machine must be told it.

    Built before anything listens and handed to whatever names the URL (the TFTP chain
    script, proxyDHCP); the HTTP listener reports the port it got once it listens, which
    matters when it was asked for any free one.

    @ivar public_url: The operator's external base URL (ending in C{/}), if given.
    @ivar configured_port: The HTTP port from the configuration.
    @ivar interface: The address HTTP and TFTP are bound to, if one.
    @ivar configured_https_port: The HTTPS port from the configuration; 0 for none.
    """

    public_url: str | None
    configured_port: int
    interface: str | None = None
    configured_https_port: int = 0
    _listening_port: int | None = field(default=None, init=False)
    _listening_https_port: int | None = field(default=None, init=False)

    def listening(self, port: int | None) -> None:
        """
        The HTTP listener now listens on C{port}; L{None} once it stopped.
        """
        self._listening_port = port

    def https_listening(self, port: int | None) -> None:
        """
        The HTTPS listener now listens on C{port}; L{None} once it stopped.
        """
        self._listening_https_port = port

    def https_port(self) -> int | None:
        """
        The port HTTPS listens on; L{None} while it does not.
        """
        return self._listening_https_port

    def tls_elsewhere(self) -> bool:
        """
        Whether machines reach HTTPS through something else that terminates TLS (the
        public URL is HTTPS on another port than pxe-pilot's): what they see is that
        proxy's certificate, not pxe-pilot's.
        """
        if not self.public_url or not self.public_url.startswith("https://"):
            return False
        return (urlsplit(self.public_url).port or 443) != self.configured_https_port

    def https_base_url(self, host: str) -> str | None:
        """
        The HTTPS base URL (ending in C{/}) for a machine that reached pxe-pilot at
        C{host}; L{None} without HTTPS. A public URL that is itself HTTPS (a proxy that
        terminates TLS) is used as it is; otherwise its host, on the HTTPS port.
        """
        if not self.configured_https_port:
            return None
        if self.public_url and self.public_url.startswith("https://"):
            return self.public_url
        if self.public_url:
            host = urlsplit(self.public_url).hostname or host
        host = url_host(host)
        port = self._listening_https_port or self.configured_https_port
        return f"https://{host}:{port}/"

    def port(self) -> int:
        """
        The port machines reach HTTP on: the listener's, else the configured one.
        """
        return self._listening_port if self._listening_port is not None else self.configured_port

    def base_url(self, host: str) -> str:
        """
        The base URL (ending in C{/}) for a machine that reached pxe-pilot at C{host}.
        """
        if self.public_url:
            return self.public_url
        return f"http://{url_host(host)}:{self.port()}/"

    def own_ipv4(self) -> str | None:
        """
        pxe-pilot's IPv4 address where the system cannot say which one a request came
        to: the bound interface, else the public URL's host if it is an address.
        """
        if self.interface and ":" not in self.interface:
            return self.interface
        host = urlsplit(self.public_url or "").hostname
        try:
            return str(ipaddress.IPv4Address(host or ""))
        except ValueError:
            return None

    def own_ipv6(self) -> str | None:
        """
        pxe-pilot's IPv6 address where the system cannot say which one a request came
        to: the bound interface (not C{::}), else the public URL's host if it is an
        IPv6 address.
        """
        if self.interface and ":" in self.interface and self.interface != "::":
            return self.interface
        host = urlsplit(self.public_url or "").hostname
        try:
            return str(ipaddress.IPv6Address(host or ""))
        except ValueError:
            return None
