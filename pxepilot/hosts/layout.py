"""
What the operator's pages share: the document around them, their style and their one
small script, how a host's state is shown, and the summary line of pxe-pilot's health
and configuration.

The pages are plain server-rendered HTML that works without JavaScript: links lead to
confirmation pages with real forms, and C{<noscript>} holds a meta refresh. With
JavaScript, the script served inline with each page (no framework, no build step)
fetches the page again every few seconds and swaps the part that changes, and turns an
action link into a C{confirm()} followed by a C{fetch()} that carries the
C{X-PXE-Pilot-Request} header. The script and the style carry the nonce of the page's
Content-Security-Policy, so no other script can run in it.

Every value is escaped: FQDNs, serial numbers, summaries and file names come from
machines and files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from html import escape
from typing import Any

from attrs import field, frozen

from pxepilot.health import ComponentHealth
from pxepilot.hosts.model import EventKind, Host

STYLE = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --bad: #b91c1c;
  --ok: #15803d; --warn: #b45309; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font: 15px/1.4 system-ui, sans-serif; }
a { color: inherit; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.counts, .overview { display: flex; flex-wrap: wrap; gap: .4rem; margin: 0; padding: 0; }
.counts li { list-style: none; }
.overview { gap: .3rem 1.2rem; margin: .3rem 0 0; font-size: .85rem; }
.overview li { list-style: none; overflow-wrap: anywhere; }
.overview .what { font-weight: 600; }
.health { font-weight: 600; }
.health-ok { color: var(--ok); } .health-degraded { color: var(--warn); }
.health-unavailable { color: var(--bad); } .health-disabled { color: var(--muted); }
.reasons { color: var(--bad); }
table { width: 100%; border-collapse: collapse; margin-top: 1rem; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: anywhere; }
th { font-size: .8rem; text-transform: uppercase; color: var(--muted); }
/* Cells may break anywhere, or a long summary would push the table off the screen; but
   headers, MACs, addresses and ages broken mid-word no longer read as what they are. */
th, .mac, td[data-label="Address"], .age { white-space: nowrap; }
/* An FQDN wraps after its dots (the page marks them), never inside a label, unless one
   label alone is wider than the screen; its box keeps the table from squeezing it. */
.fqdn { display: inline-block; max-width: min(100%, 36rem); overflow-wrap: break-word;
  word-break: normal; }
.mac, code { font-family: ui-monospace, monospace; }
.age { color: var(--muted); font-size: .85rem; }
.state { display: inline-block; padding: .1rem .5rem; border-radius: 1rem;
  font-size: .85rem; font-weight: 600; white-space: nowrap; color: #fff; }
.state-new { background: #6b7280; } .state-booting { background: #2563eb; }
.state-installing { background: #d97706; } .state-installed { background: #15803d; }
.state-local-boot { background: #0f766e; } .state-failed { background: #b91c1c; }
.state-refused { background: #7f1d1d; }
.why { color: var(--bad); font-size: .85rem; }
.empty, .more { color: var(--muted); margin-top: 1rem; }
.empty { margin-top: 2rem; }
footer { margin-top: 1.5rem; color: var(--muted); font-size: .8rem; }
.fingerprint { overflow-wrap: anywhere; }
.notice { margin: .8rem 0; padding: .5rem .8rem; border-radius: .4rem;
  border: 1px solid var(--ok); }
.notice.error { border-color: var(--bad); color: var(--bad); }
.notice:empty { display: none; }
.actions { display: flex; flex-wrap: wrap; gap: .6rem; margin: .8rem 0; }
.button { display: inline-block; padding: .4rem .9rem; border-radius: .4rem;
  border: 1px solid var(--line); text-decoration: none; font: inherit; cursor: pointer;
  background: transparent; color: inherit; }
.button.danger { border-color: var(--bad); color: var(--bad); }
dl.facts { display: grid; grid-template-columns: minmax(8rem, max-content) 1fr;
  gap: .3rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; min-width: 0; }
.findings, .timeline { padding-left: 1.2rem; margin: .3rem 0; }
.findings li, .timeline li { margin-bottom: .4rem; overflow-wrap: anywhere; }
.severity-error { color: var(--bad); font-weight: 600; }
.severity-warning { color: var(--warn); font-weight: 600; }
.source { display: inline-block; min-width: 7rem; font-weight: 600; }
.detail { color: var(--muted); font-size: .85rem; }
.stale { color: var(--warn); font-size: .8rem; }
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
  dl.facts { grid-template-columns: 1fr; gap: 0; }
  dl.facts dd { margin-bottom: .4rem; }
}
"""

# The page's one script. It changes nothing the page shows without it: each link keeps
# working as a link to its confirmation page, where a plain form does the work.
SCRIPT = """
(() => {
  "use strict";
  const every = Number(document.body.dataset.poll || 0) * 1000;
  const notice = document.getElementById("notice");
  const stale = document.getElementById("stale");
  // fetch() refuses a URL with credentials in it, as a page opened as
  // http://user:token@host/ has; the browser sends what it was given all the same.
  const plain = (address) => {
    const url = new URL(address, location.href);
    url.username = "";
    url.password = "";
    return url;
  };
  const say = (text, error) => {
    notice.textContent = text;
    notice.className = error ? "notice error" : "notice";
  };
  let timer = null;
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const response = await fetch(plain(location.href), {
        credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" },
      });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const next = fresh.getElementById("live");
      if (!next) throw new Error("the page came back without its content");
      document.getElementById("live").replaceChildren(...next.childNodes);
      document.title = fresh.title;
      stale.textContent = "";
    } catch (error) {
      stale.textContent = `Not updated since ${new Date().toLocaleTimeString()}: ${error.message}`;
    }
    if (every) timer = setTimeout(refresh, every);
  };
  if (every) timer = setTimeout(refresh, every);
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-confirm]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    if (!window.confirm(link.dataset.confirm)) return;
    say(`${link.dataset.doing}…`);
    let response;
    try {
      response = await fetch(plain(link.href), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-PXE-Pilot-Request": "1", Accept: "application/json" },
      });
    } catch (error) {
      say(`${link.dataset.doing} failed: ${error.message}`, true);
      return;
    }
    const report = await response.json().catch(() => ({}));
    if (!response.ok) {
      say(`${link.dataset.doing} refused (${response.status}): ${report.error || ""}`, true);
      return;
    }
    if (link.dataset.then) {
      location.assign(plain(new URL(link.dataset.then, link.href)));
      return;
    }
    say(link.dataset.done);
    refresh();
  });
})();
"""


def document(
    title: str,
    content: str,
    nonce: str,
    version: str,
    *,
    refresh: int | None = None,
    poll: int | None = None,
    notice: str = "",
    notice_error: bool = False,
) -> bytes:
    """
    A whole page: C{content} (markup, already escaped) in the part the script replaces
    as it polls, a notice above it, and the foot.

    @param nonce: The nonce of the response's Content-Security-Policy.
    @param refresh: Seconds between reloads without JavaScript; none when L{None}.
    @param poll: Seconds between updates with JavaScript; none when L{None}.
    @param notice: Text (not markup) to show above the content.
    """
    every = (
        f"updates every {poll} s" + (f" (every {refresh} s without JavaScript)" if refresh else "")
        if poll
        else ""
    )
    reload = (
        f'<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>\n'
        if refresh
        else ""
    )
    notice_class = "notice error" if notice_error else "notice"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{reload}<title>{escape(title)}</title>
<style nonce="{nonce}">{STYLE}</style>
</head>
<body data-poll="{poll or 0}">
<p id="notice" class="{notice_class}" role="status">{escape(notice)}</p>
<div id="live">
{content}
</div>
<footer>pxe-pilot {escape(version)}{" &middot; " + every if every else ""}
<span id="stale" class="stale" role="status"></span></footer>
<script nonce="{nonce}">{SCRIPT}</script>
</body>
</html>
""".encode()


def content_security_policy(nonce: str) -> bytes:
    """
    The pages' policy: their own style and script only, requests to pxe-pilot only, and
    no frame of another site around them (a page of buttons that wipe disks must not be
    shown under someone else's).
    """
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ).encode("ascii")


def error_page(code: int, message: str, version: str, *, nonce: str, home: str) -> bytes:
    """
    A refusal, for a person whose browser navigated to a route: the status, why, and
    the way back to the status page.

    @param home: The status page's address, relative to the refused route's.
    """
    content = (
        f'<header><h1>{code}</h1></header>\n<p class="why">{escape(message)}</p>\n'
        f'<p><a href="{escape(home)}">Back to the status page</a></p>'
    )
    return document(f"pxe-pilot: {code}", content, nonce, version)


# -- a host's state


def refusal(host: Host) -> str | None:
    """
    Why the host's answer was refused, when that is the last thing that happened to
    it: its installer then waits on its console with the error, whatever state the host
    was in before.
    """
    last = host.last_event
    if last.kind is not EventKind.ANSWER_REFUSED:
        return None
    summary = last.summary.strip()
    prefix = "answer refused: "
    return summary[len(prefix) :] if summary.lower().startswith(prefix) else summary


def state_badge(host: Host) -> str:
    """
    The host's state as a coloured label; a refused answer as an error, with why.
    """
    why = refusal(host)
    if why is not None:
        return (
            '<span class="state state-refused">answer refused</span>'
            f' <span class="why">{escape(why)}</span>'
        )
    state = host.state.value
    return f'<span class="state state-{state}">{escape(state)}</span>'


def fqdn_html(fqdn: str) -> str:
    """
    An FQDN that wraps after its dots: a line break inside a label would read as two
    names.
    """
    # The break goes after the dot, not before: "pve01." then "example.com".
    marked = ".<wbr>".join(escape(label) for label in fqdn.split("."))
    return f'<span class="fqdn">{marked}</span>'


def when(at: float) -> str:
    """
    A moment, to the second, in UTC.
    """
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def moment(at: float) -> str:
    """
    A C{<time>} element for a moment, readable by people and programs.
    """
    machine = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f'<time datetime="{machine}">{escape(when(at))}</time>'


# -- pxe-pilot's health and configuration


# How the summary line names each component that C{/health} reports on.
_NAMES = {
    "answers": "Answers",
    "assets": "Assets",
    "hosts": "Host database",
    "tftp": "TFTP",
    "proxy_dhcp": "proxyDHCP",
    "tls": "TLS",
}

# Details that describe a working component, shown whatever its status.
_FACTS = {
    "answers": ("host_count",),
    "assets": ("versions",),
    "hosts": ("hosts",),
    "tftp": ("port",),
    "tls": ("fingerprint",),
}

# Details that are counters, which say nothing about why a component is not well.
_COUNTERS = frozenset({"transfers", "bytes_sent", "active_transfers", "packets"})

_LONGEST_VALUE = 300
_MOST_ITEMS = 10


@frozen
class Overview:
    """
    What the summary line says about pxe-pilot itself.

    @ivar status: C{/health}'s overall status.
    @ivar components: Each component's health, as C{/health} reports it.
    @ivar places: What each component is configured as, by component (a directory),
        for the operator who reads the page.
    """

    status: str
    components: Mapping[str, ComponentHealth]
    places: Mapping[str, str] = field(factory=dict)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        items = [_value(item) for item in value[:_MOST_ITEMS]]
        more = len(value) - len(items)
        text = ", ".join(items) + (f" and {more} more" if more > 0 else "")
    elif isinstance(value, Mapping):
        text = ", ".join(f"{key}: {_value(item)}" for key, item in value.items())
    else:
        text = str(value)
    return text[:_LONGEST_VALUE]


def _shown(value: Any) -> bool:
    return value is not None and value != [] and value != {} and value != ""


def _component(name: str, health: ComponentHealth, place: str | None) -> str:
    details = health.details
    parts = [f'<span class="what">{escape(_NAMES.get(name, name))}</span>']
    if place:
        parts.append(f"<code>{escape(place)}</code>")
    status = health.status
    parts.append(f'<span class="health health-{escape(status)}">{escape(status)}</span>')
    if name == "answers" and details.get("default_present"):
        parts.append("<code>default.toml</code>")
    facts = _FACTS.get(name, ())
    for key in facts:
        value = details.get(key)
        if not _shown(value):
            continue
        if key == "fingerprint":
            parts.append(f'SHA-256 <code class="fingerprint">{escape(str(value))}</code>')
        elif key == "versions":
            parts.append(escape(_value(value)))
        elif key == "port":
            parts.append(f"port {escape(str(value))}")
        elif key == "host_count":
            parts.append(f"{escape(str(value))} host file{'' if value == 1 else 's'}")
        else:
            parts.append(f"{escape(str(value))} {escape(key.replace('_', ' '))}")
    if name == "assets" and status == "ok" and not _shown(details.get("versions")):
        parts.append("no versions")
    if status not in ("ok", "disabled"):
        # A check's own sentences when it has them; otherwise whatever it says, named as
        # it names it.
        given = details.get("reasons")
        if isinstance(given, list | tuple) and given:
            reasons = [escape(str(reason)[:_LONGEST_VALUE]) for reason in given]
        else:
            reasons = [
                f"{escape(key.replace('_', ' '))}: {escape(_value(value))}"
                for key, value in details.items()
                if key not in facts and key not in _COUNTERS and _shown(value)
            ]
        if reasons:
            parts.append(f'<span class="reasons">{"; ".join(reasons)}</span>')
    return f'<li class="component" data-component="{escape(name)}">{" ".join(parts)}</li>'


def overview_html(overview: Overview) -> str:
    """
    The summary line: the overall health, then each component, where it is, how it is
    and why when it is not well.
    """
    status = overview.status
    items = [
        f'<li><span class="what">Health</span> '
        f'<span class="health health-{escape(status)}">{escape(status)}</span></li>'
    ]
    items += [
        _component(name, health, overview.places.get(name))
        for name, health in overview.components.items()
    ]
    return f'<ul class="overview" aria-label="pxe-pilot">{"".join(items)}</ul>'
