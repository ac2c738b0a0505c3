"""
The status page: every known host at a glance, for a person, on a desk or on a phone,
with a summary line of pxe-pilot's health and configuration.

Plain server-rendered HTML and CSS that updates itself: with JavaScript by fetching
itself every L{POLL_SECONDS} seconds and swapping its content, without by a meta
refresh every L{REFRESH_SECONDS} seconds (L{pxepilot.hosts.layout}). Every value is
escaped (MAC addresses are canonical, but FQDNs, serial numbers and file names come
from machines and files). It shows the L{PAGE_HOSTS} most recently active hosts: a
page of every host would grow with every MAC address anyone makes up, and be rendered
again every few seconds.

Each MAC address links to the host's own page (L{pxepilot.hosts.host_page}), where its
timeline is and where it can be re-armed or forgotten.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection
from html import escape

from pxepilot.hosts.layout import (
    Overview,
    document,
    fqdn_html,
    overview_html,
    refusal,
    state_badge,
)
from pxepilot.hosts.model import Host, HostState
from pxepilot.macs import MacAddress

# Without JavaScript, the browser reloads the page this often.
REFRESH_SECONDS = 10

# With JavaScript, the page fetches itself this often: during an installation a step
# takes seconds, and a page is cheap to render.
POLL_SECONDS = 5

# The most hosts the page shows, the most recently active.
PAGE_HOSTS = 500

_COLUMNS = (
    "MAC",
    "State",
    "Product",
    "Serial",
    "Model",
    "Last event",
    "Answer",
    "FQDN",
    "Address",
)


def age(seconds: float) -> str:
    """
    How long ago, as a person says it.
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"
    return f"{seconds // 86400} d ago"


def host_link(mac: MacAddress) -> str:
    """
    The path of a host's page, relative to the status page: pxe-pilot may be served
    below a path of a proxy's.
    """
    return f"hosts/{mac.canonical}/page"


def _cell(label: str, content: str, css: str = "") -> str:
    classes = f' class="{css}"' if css else ""
    return f'<td data-label="{escape(label)}"{classes}>{content}</td>'


def _answer(host: Host) -> str:
    if not host.answer:
        return "&ndash;"
    # Which rule chose it (mac, uuid, serial, model, default), for hosts recorded since.
    rule = f' <span class="age">by {escape(host.rule)}</span>' if host.rule else ""
    return f"{escape(host.answer)}{rule}"


def _row(host: Host, now: float) -> str:
    installation = host.installation
    product = (installation.product if installation else None) or host.product or ""
    if installation and installation.version:
        product = f"{product} {installation.version}".strip()
    last = host.last_event
    fqdn = installation.fqdn if installation else None
    cells = [
        _cell("MAC", f'<a href="{host_link(host.mac)}">{escape(str(host.mac))}</a>', "mac"),
        _cell(
            "State",
            f'{state_badge(host)} <span class="age">{escape(age(now - host.since))}</span>'
            # Its latest boot went through the signed chain (shim, GRUB): Secure Boot.
            + (' <span class="age">Secure Boot</span>' if host.secure_boot_at else ""),
            "status",
        ),
        _cell("Product", escape(product) or "&ndash;"),
        _cell("Serial", escape(host.serial or "") or "&ndash;"),
        _cell("Model", escape(host.model or "") or "&ndash;"),
        _cell(
            "Last event",
            f'{escape(last.summary)} <span class="age">{escape(age(now - last.at))}</span>',
        ),
        _cell("Answer", _answer(host)),
        _cell("FQDN", fqdn_html(fqdn) if fqdn else "&ndash;"),
        _cell(
            "Address",
            escape((installation.address if installation else None) or "") or "&ndash;",
        ),
    ]
    return f'<tr id="host-{escape(host.mac.canonical)}">{"".join(cells)}</tr>'


def status_page(
    hosts: Collection[Host],
    now: float,
    version: str,
    *,
    overview: Overview,
    nonce: str,
    shown: int = PAGE_HOSTS,
    notice: str = "",
) -> bytes:
    """
    The page, newest activity first: the C{shown} most recently active hosts, and how
    many more there are and how to list them.

    @param overview: pxe-pilot's health and configuration, for the summary line (with
        the HTTPS certificate's fingerprint, to compare with what installers pin).
    @param nonce: The nonce of the response's Content-Security-Policy.
    @param notice: Text to show above the hosts, such as what was just done.
    """
    ordered = heapq.nlargest(shown, hosts, key=lambda host: host.last_event.at)
    # Counted as the rows show them: a host whose answer was refused last is counted
    # there, not in the state it was left in.
    counts = Counter(
        "refused" if refusal(host) is not None else host.state.value for host in hosts
    )
    labels = [(state.value, state.value) for state in HostState]
    labels.append(("refused", "answer refused"))
    summary = "".join(
        f'<li><span class="state state-{escape(key)}">{escape(label)}: {counts[key]}</span></li>'
        for key, label in labels
        if counts[key]
    )
    if ordered:
        head = "".join(f"<th>{escape(name)}</th>" for name in _COLUMNS)
        rows = "".join(_row(host, now) for host in ordered)
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    else:
        body = (
            '<p class="empty">No host has network-booted yet. Hosts appear here from '
            "their first boot file or menu request.</p>"
        )
    total = len(hosts)
    hidden = total - len(ordered)
    more = (
        f'<p class="more">{hidden} more host{"" if hidden == 1 else "s"}, less recently '
        "active, not shown here. List every host with <code>pxe-pilot hosts</code> "
        "(or <code>GET /hosts</code>, page by page).</p>"
        if hidden > 0
        else ""
    )
    content = (
        f'<header><h1>pxe-pilot</h1><ul class="counts">{summary}</ul></header>\n'
        f"{overview_html(overview)}\n{body}{more}"
    )
    return document(
        f"pxe-pilot: {total} host{'' if total == 1 else 's'}",
        content,
        nonce,
        version,
        refresh=REFRESH_SECONDS,
        poll=POLL_SECONDS,
        notice=notice,
    )
