"""
A Proxmox ISO's identity, from its C{/.cd-info} (or C{/.disk/info}): shell-style
C{KEY='value'} lines written when the ISO was built.
"""

from __future__ import annotations

import re

from attrs import frozen

PRODUCTS = {
    "pve": "Proxmox VE",
    "pbs": "Proxmox Backup Server",
    "pmg": "Proxmox Mail Gateway",
    "pdm": "Proxmox Datacenter Manager",
}

# Names that end up as directory names: no separators, no hidden names.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class NotProxmox(Exception):
    """
    The ISO is not a Proxmox ISO pxe-pilot can install from.
    """


@frozen
class ProductInfo:
    """
    @ivar product: C{pve}, C{pbs}, C{pmg} or C{pdm}.
    @ivar product_name: The long name, such as C{Proxmox VE}.
    @ivar iso_name: The ISO's name, such as C{proxmox-ve}: the assets directory.
    @ivar release: Such as C{9.1}.
    @ivar iso_release: Such as C{1}.
    """

    product: str
    product_name: str
    iso_name: str
    release: str
    iso_release: str

    @property
    def version(self) -> str:
        """
        C{9.1-1}: the version directory.
        """
        return f"{self.release}-{self.iso_release}"


def parse_cd_info(data: bytes) -> dict[str, str]:
    """
    The variables of a C{.cd-info} file; keys upper-cased, quotes removed.
    """
    values = {}
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().upper()] = value
    return values


def product_info(data: bytes) -> ProductInfo:
    """
    Read and check a C{.cd-info} file.

    @raise NotProxmox: when it does not describe a Proxmox product.
    """
    values = parse_cd_info(data)
    product = values.get("PRODUCT", "").lower()
    if product not in PRODUCTS:
        raise NotProxmox(f"not a Proxmox ISO (.cd-info names product {product or 'none'!r})")
    info = ProductInfo(
        product=product,
        product_name=values.get("PRODUCTLONG") or PRODUCTS[product],
        iso_name=values.get("ISONAME", ""),
        release=values.get("RELEASE", ""),
        iso_release=values.get("ISORELEASE", ""),
    )
    for field, value in (
        ("ISONAME", info.iso_name),
        ("RELEASE", info.release),
        ("ISORELEASE", info.iso_release),
    ):
        if not SAFE_NAME.fullmatch(value):
            raise NotProxmox(f".cd-info has no usable {field} ({value!r})")
    return info
