"""
The status page: every known host at a glance, for a person, on a desk or on a phone.

Plain server-rendered HTML and CSS, refreshed by the browser every few seconds; every
value is escaped (MAC addresses are canonical, but FQDNs, serial numbers and file names
come from machines and files). It shows the L{PAGE_HOSTS} most recently active hosts:
a page of every host would grow with every MAC address anyone makes up, and be rendered
again every few seconds.

The page has no actions yet. One that changes something must pass the check of the
operator's routes against forged requests (C{forged_because} in
C{pxepilot/http/operator.py}): sent from the page's own origin, with the
C{X-PXE-Pilot-Request} header (a C{fetch()} can add it; a plain form cannot).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping
from html import escape

from pxepilot.hosts.model import Host, HostState

REFRESH_SECONDS = 10

# The most hosts the page shows, the most recently active.
PAGE_HOSTS = 500

_STYLE = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font: 15px/1.4 system-ui, sans-serif; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
.counts { display: flex; flex-wrap: wrap; gap: .4rem; margin: 0; padding: 0; }
.counts li { list-style: none; }
table { width: 100%; border-collapse: collapse; margin-top: 1rem; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: anywhere; }
th { font-size: .8rem; text-transform: uppercase; color: var(--muted); }
/* Cells may break anywhere, or a long FQDN would push the table off the screen; but
   headers, MACs, addresses and ages broken mid-word no longer read as what they are. */
th, .mac, td[data-label="Address"], .age { white-space: nowrap; }
.mac { font-family: ui-monospace, monospace; }
.age { color: var(--muted); font-size: .85rem; }
.state { display: inline-block; padding: .1rem .5rem; border-radius: 1rem;
  font-size: .85rem; font-weight: 600; white-space: nowrap; color: #fff; }
.state-new { background: #6b7280; } .state-booting { background: #2563eb; }
.state-installing { background: #d97706; } .state-installed { background: #15803d; }
.state-local-boot { background: #0f766e; } .state-failed { background: #b91c1c; }
.empty { color: var(--muted); margin-top: 2rem; }
.more { color: var(--muted); margin-top: 1rem; }
footer { margin-top: 1.5rem; color: var(--muted); font-size: .8rem; }
.tls { color: var(--muted); font-size: .8rem; }
.fingerprint { overflow-wrap: anywhere; }
@media (max-width: 700px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border: 1px solid var(--line); border-radius: .5rem; margin-bottom: .8rem;
    padding: .3rem 0; }
  td { border: 0; padding: .2rem .7rem; }
  /* A card is as wide as the phone: an IPv6 address may have to wrap there. */
  td[data-label="Address"] { white-space: normal; }
  td::before { content: attr(data-label) ": "; color: var(--muted); font-size: .8rem; }
  td.mac::before, td.status::before { content: ""; }
}
"""

_COLUMNS = ("MAC", "State", "Product", "Last event", "Answer", "FQDN", "Address")


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


def _cell(label: str, content: str, css: str = "") -> str:
    classes = f' class="{css}"' if css else ""
    return f'<td data-label="{escape(label)}"{classes}>{content}</td>'


def _row(host: Host, now: float) -> str:
    installation = host.installation
    product = (installation.product if installation else None) or host.product or ""
    if installation and installation.version:
        product = f"{product} {installation.version}".strip()
    state = host.state.value
    last = host.last_event
    cells = [
        _cell("MAC", escape(str(host.mac)), "mac"),
        _cell(
            "State",
            f'<span class="state state-{state}">{escape(state)}</span>'
            f' <span class="age">{escape(age(now - host.since))}</span>',
            "status",
        ),
        _cell("Product", escape(product) or "&ndash;"),
        _cell(
            "Last event",
            f'{escape(last.summary)} <span class="age">{escape(age(now - last.at))}</span>',
        ),
        _cell("Answer", escape(host.answer or "") or "&ndash;"),
        _cell("FQDN", escape((installation.fqdn if installation else None) or "") or "&ndash;"),
        _cell(
            "Address",
            escape((installation.address if installation else None) or "") or "&ndash;",
        ),
    ]
    return f'<tr id="host-{escape(host.mac.canonical)}">{"".join(cells)}</tr>'


def status_page(
    hosts: Collection[Host],
    counts: Mapping[str, int],
    now: float,
    version: str,
    fingerprint: str | None = None,
    shown: int = PAGE_HOSTS,
) -> bytes:
    """
    The page, newest activity first: the C{shown} most recently active hosts, and how
    many more there are and how to list them.

    @param fingerprint: The HTTPS certificate's SHA-256 fingerprint, to compare with
        what the installers pin; L{None} without HTTPS.
    """
    ordered = heapq.nlargest(shown, hosts, key=lambda host: host.last_event.at)
    summary = "".join(
        f'<li><span class="state state-{escape(state.value)}">'
        f"{escape(state.value)}: {counts.get(state.value, 0)}</span></li>"
        for state in HostState
        if counts.get(state.value, 0)
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
    tls = (
        '<p class="tls">HTTPS certificate SHA-256 '
        f'<code class="fingerprint">{escape(fingerprint)}</code></p>\n'
        if fingerprint
        else ""
    )
    html = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>pxe-pilot: {total} host{"" if total == 1 else "s"}</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>pxe-pilot</h1><ul class="counts">{summary}</ul></header>
{body}{more}
{tls}<footer>pxe-pilot {escape(version)} &middot; refreshes every {REFRESH_SECONDS} s</footer>
</body>
</html>
"""
    return html.encode("utf-8")
