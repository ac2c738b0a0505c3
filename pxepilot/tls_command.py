"""
C{pxe-pilot tls}: the HTTPS certificate's fingerprint, the DHCP, DNS and builder lines
that pin it, and its rotation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pxepilot.tls import (
    CONFIGURED,
    GENERATED,
    CertificateFacts,
    ServerCertificate,
    TLSSetupError,
    certificate_facts,
    generated_paths,
    load_generated,
    normalise_fingerprint,
    rotate,
)

DEFAULT_TLS_PORT = 8443


class TLSCommandError(Exception):
    """
    The command cannot do what was asked; the message says why, in one line.
    """


def tls(arguments: argparse.Namespace, now: datetime, out: TextIO) -> int:
    """
    Print the HTTPS certificate's facts and the lines that pin it, or rotate it; the
    exit status: 1 when there is no certificate, it cannot be read, or rotating is
    refused, else 0.
    """
    try:
        facts = certificate_report(arguments.tls_cert, arguments.state, arguments.assets)
        url = arguments.answer_url or default_answer_url(os.environ.get("PXE_PILOT_PUBLIC_URL"))
        if not arguments.rotate:
            _print_certificate(facts, url, arguments.assets, arguments.json, out)
            return 0
        if arguments.tls_cert is not None:
            raise TLSCommandError(
                f"--tls-cert {arguments.tls_cert} is the operator's certificate: rotate it by "
                "replacing its files, then restart pxe-pilot"
            )
        pinned = facts["assets_pinned"]
        if pinned and not arguments.force:
            raise TLSCommandError(
                "these assets pin the current certificate and would stop getting answers: "
                f"{', '.join(pinned)}; rebuild them after rotating, or pass --force"
            )
        # The names it was made for: this command does not know the server's interface,
        # and the installer ignores names anyway.
        new = rotate(arguments.state, facts["names"], now)
    except (TLSCommandError, TLSSetupError) as e:
        print(f"pxe-pilot: error: {e}", file=sys.stderr)
        return 1
    rotated = {
        **facts,
        "fingerprint": new.fingerprint,
        "names": list(new.names),
        "not_after": _timestamp(new.not_after),
        "assets_pinned": [],
        "previous_fingerprint": facts["fingerprint"],
        "assets_to_rebuild": pinned,
    }
    if arguments.json:
        _print_certificate(rotated, url, arguments.assets, True, out)
        return 0
    print(f"rotated: the new fingerprint is {new.fingerprint}", file=out)
    print(f"         (was {facts['fingerprint']})", file=out)
    for asset in pinned:
        print(f"rebuild {asset} with --cert-fingerprint {new.fingerprint}", file=out)
    print("restart pxe-pilot to serve the new certificate", file=out)
    print(file=out)
    _print_certificate(rotated, url, arguments.assets, False, out)
    return 0


def certificate_report(tls_cert: Path | None, state: Path, assets: Path) -> dict[str, Any]:
    """
    The facts of the certificate pxe-pilot serves: the operator's, else the generated.

    @raise TLSCommandError: there is none yet.
    @raise TLSSetupError: it cannot be read.
    """
    if tls_cert is not None:
        facts: CertificateFacts | ServerCertificate = certificate_facts(tls_cert)
        origin, file = CONFIGURED, tls_cert
    else:
        generated = load_generated(state)
        if generated is None:
            raise TLSCommandError("no certificate yet: start pxe-pilot once, or give --tls-cert")
        facts, origin, file = generated, GENERATED, generated_paths(state)[0]
    return {
        "fingerprint": facts.fingerprint,
        "origin": origin,
        "names": list(facts.names),
        "not_after": _timestamp(facts.not_after),
        "file": str(file),
        "assets_pinned": pinning_assets(assets, facts.fingerprint),
    }


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pinning_assets(assets: Path, fingerprint: str) -> list[str]:
    """
    The assets (C{product/version}) whose ISO pins C{fingerprint}: installers booted
    from them accept only that certificate.

    An C{asset.json} that cannot be read is skipped: pxe-pilot does not serve that
    version either.
    """
    pinned = []
    for metadata in sorted(assets.glob("*/*/asset.json")):
        version = metadata.parent
        if version.name.startswith(".") or version.parent.name.startswith("."):
            continue
        try:
            data = json.loads(metadata.read_bytes())
        except (OSError, ValueError):
            continue
        answer = data.get("answer") if isinstance(data, dict) else None
        pin = answer.get("cert_fingerprint") if isinstance(answer, dict) else None
        if isinstance(pin, str) and _same_fingerprint(pin, fingerprint):
            pinned.append(f"{version.parent.name}/{version.name}")
    return pinned


def _same_fingerprint(written: str, fingerprint: str) -> bool:
    try:
        return normalise_fingerprint(written) == fingerprint
    except ValueError:
        return False


def default_answer_url(public_url: str | None) -> str:
    """
    The HTTPS answer URL machines are likely told: on the public URL's host, else on
    this host's fully qualified name, at the default HTTPS port.
    """
    host = (urlsplit(public_url).hostname if public_url else None) or socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{DEFAULT_TLS_PORT}/answer"


def search_domain(url: str) -> str | None:
    """
    The DNS domain to publish the installer's TXT records in: the answer URL host's
    own domain, when the host is a name in one; usually the machines' search domain too.
    """
    host = urlsplit(url).hostname or ""
    if "." not in host or host.replace(".", "").isdigit() or ":" in host:
        return None
    return host.split(".", 1)[1]


def pinning_lines(url: str, fingerprint: str, domain: str | None, assets: Path) -> list[str]:
    """
    Ready-to-paste lines that tell the installer the answer URL and the fingerprint:
    for the builder (baked into the ISO) and, for an ISO prepared without a URL, for
    dnsmasq, ISC dhcpd, Kea and DNS (options 250 and 251, the installer's TXT records).
    """
    url_name = "proxmox-auto-installer-manifest-url"
    fingerprint_name = "proxmox-auto-installer-cert-fingerprint"
    zone = domain or "<your-search-domain>"

    def kea(entry: dict[str, Any]) -> str:
        return "    " + json.dumps(entry)

    return [
        "# pxe-pilot-builder: baked into the ISO",
        f"pxe-pilot-builder --iso ISO --output {assets} --answer-url {url} "
        f"--cert-fingerprint {fingerprint}",
        "",
        "# dnsmasq (for an ISO prepared without a URL, as are the DHCP and DNS lines below)",
        f'dhcp-option-force=250,"{url}"',
        f'dhcp-option-force=251,"{fingerprint}"',
        "",
        "# ISC dhcpd",
        f"option {url_name} code 250 = text;",
        f"option {fingerprint_name} code 251 = text;",
        f'option {url_name} "{url}";',
        f'option {fingerprint_name} "{fingerprint}";',
        "",
        "# Kea (in Dhcp4)",
        '"option-def": [',
        kea({"name": url_name, "code": 250, "type": "string", "space": "dhcp4"}) + ",",
        kea({"name": fingerprint_name, "code": 251, "type": "string", "space": "dhcp4"}),
        "],",
        '"option-data": [',
        kea({"name": url_name, "data": url}) + ",",
        kea({"name": fingerprint_name, "data": fingerprint}),
        "]",
        "",
        "# DNS, in the machines' search domain",
        f'proxmox-auto-installer.{zone}. IN TXT "{url}"',
        f'{fingerprint_name}.{zone}. IN TXT "{fingerprint}"',
    ]


def _print_certificate(
    facts: dict[str, Any], url: str, assets: Path, as_json: bool, out: TextIO
) -> None:
    if as_json:
        print(json.dumps({**facts, "answer_url": url}, indent=2), file=out)
        return
    origin = "generated by pxe-pilot" if facts["origin"] == GENERATED else "the operator's"
    pinned = facts["assets_pinned"]
    for label, value in (
        ("certificate", f"{facts['file']} ({origin})"),
        ("fingerprint", facts["fingerprint"]),
        ("names", ", ".join(facts["names"]) or "-"),
        ("expires", facts["not_after"].replace("T", " ").replace("Z", " UTC")),
        ("answer URL", url),
        ("pinned by", ", ".join(pinned) if pinned else f"no asset in {assets}"),
    ):
        print(f"{label:<12} {value}", file=out)
    print(file=out)
    print(
        "The installer accepts this certificate by its fingerprint alone "
        "(names and expiry do not matter). Tell it the URL and fingerprint one way:",
        file=out,
    )
    print(file=out)
    for line in pinning_lines(url, facts["fingerprint"], search_domain(url), assets):
        print(line, file=out)
