"""
A host's own page: everything pxe-pilot knows of one machine, its timeline, what its
installer would find in its answer file, and the two things an operator does to it
(re-arm, forget), each behind a confirmation page that holds the real form.

Like the status page (L{pxepilot.hosts.page}) it works without JavaScript and updates
itself with it; every value is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from attrs import field, frozen

from pxepilot.answers.lint import Finding
from pxepilot.hosts.layout import document, fqdn_html, moment, refusal, state_badge, when
from pxepilot.hosts.model import Event, EventKind, Host, HostState
from pxepilot.hosts.page import POLL_SECONDS, REFRESH_SECONDS, age

# The most events the page lists, newest first; the store keeps up to 500.
PAGE_EVENTS = 200

# Where each event came from, as a person names it.
SOURCES = {
    EventKind.TFTP: "TFTP",
    EventKind.SCRIPT: "boot script",
    EventKind.DOWNLOAD_STARTED: "download",
    EventKind.DOWNLOAD_ENDED: "download",
    EventKind.ANSWER_SERVED: "answer served",
    EventKind.ANSWER_REFUSED: "answer refused",
    EventKind.INSTALLED: "webhook",
    EventKind.LOCAL_BOOT: "local boot",
    EventKind.REARMED: "re-arm",
    EventKind.FAILED: "failed",
}

# Details the timeline leaves out: the installation report is shown whole above it.
_UNLISTED = frozenset({"installation"})

_LONGEST_DETAIL = 2000


@frozen
class AnswerCheck:
    """
    What the host's answer file is now, and what its installer would find in it.

    @ivar file: The file that matches the host's MAC address now, if one does.
    @ivar installer: The installer versions it was checked for, as a person reads them.
    @ivar findings: What those installers would reject or warn about.
    @ivar problem: Why no file can be checked (none matches, it is being written, it is
        not valid TOML); L{None} when one was.
    """

    file: str | None
    installer: str
    findings: Sequence[Finding] = field(factory=tuple)
    problem: str | None = None


@frozen
class Action:
    """
    Something an operator does to a host from its page.

    @ivar name: The last part of its route (C{/hosts/<mac>/<name>}).
    @ivar label: The button's text.
    @ivar doing: What is under way, for the notice.
    @ivar done: What was done, for the notice.
    """

    name: str
    label: str
    doing: str
    done: str

    def consequences(self, host: Host) -> str:
        """
        What the action does to C{host}, to read before confirming.
        """
        if self.name == "reinstall":
            text = (
                f"Its next network boot installs again: the installer wipes the disks "
                f"its answer file names. {host.mac} becomes new and is served an answer."
            )
        else:
            text = (
                f"Its state and timeline are removed. If {host.mac} network-boots again, "
                "it is a new host: with install once, a host that was installed "
                "installs again."
            )
        if host.state is HostState.INSTALLING:
            text += (
                " It is installing now: its installer carries on, and its report records it again."
            )
        return text


REARM = Action("reinstall", "Re-arm (reinstall)", "Re-arming", "Re-armed")
FORGET = Action("forget", "Forget", "Forgetting", "Forgot")
ACTIONS = {action.name: action for action in (REARM, FORGET)}


def installer_of(timeline: Sequence[Event]) -> str | None:
    """
    The installer the host booted last, as the assets name it (C{proxmox-ve/9.1-1}):
    the directory of its latest download of a kernel or initrd.
    """
    for event in reversed(timeline):
        if event.kind in (EventKind.DOWNLOAD_STARTED, EventKind.DOWNLOAD_ENDED):
            parts = str(event.detail.get("file", "")).split("/")
            if len(parts) >= 3 and all(parts[:2]):
                return "/".join(parts[:2])
    return None


def _latest(timeline: Sequence[Event], key: str) -> str | None:
    for event in reversed(timeline):
        value = event.detail.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _detail_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_detail_text(item) for item in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_detail_text(item)}" for key, item in value.items())
    return str(value)


def _event(event: Event, now: float) -> str:
    details = "; ".join(
        f"{escape(str(key))}: {escape(_detail_text(value)[:_LONGEST_DETAIL])}"
        for key, value in event.detail.items()
        if key not in _UNLISTED and value not in (None, "", [], {})
    )
    kind = event.kind.value
    return (
        f'<li class="event event-{escape(kind)}">'
        f"{moment(event.at)} "
        f'<span class="age">{escape(age(now - event.at))}</span><br>'
        f'<span class="source">{escape(SOURCES.get(event.kind, kind))}</span> '
        f"{escape(event.summary)}"
        + (f'<br><span class="detail">{details}</span>' if details else "")
        + "</li>"
    )


def _fact(name: str, value: str | None, markup: str | None = None) -> str:
    if markup is None:
        if not value:
            return ""
        markup = escape(value)
    return f"<dt>{escape(name)}</dt><dd>{markup}</dd>"


def _facts(host: Host, timeline: Sequence[Event], now: float) -> str:
    installation = host.installation
    product = (installation.product if installation else None) or host.product
    if installation and installation.version:
        product = f"{product or ''} {installation.version}".strip()
    since = (
        f"{state_badge(host)} since {escape(when(host.since))} ({escape(age(now - host.since))})"
    )
    rows = [
        _fact("State", None, since),
        _fact("First seen", when(host.first_seen)),
        _fact("Product", product),
        _fact("Installer", installer_of(timeline)),
        _fact("Serial", host.serial),
        _fact("Model", host.model or _latest(timeline, "model")),
        _fact("UUID", host.uuid),
        _fact("Answer served", host.answer),
        _fact("Chosen by", host.rule),
        _fact("Webhook token", "issued" if host.webhook_token else None),
        _fact(
            "Secure Boot",
            f"booted through the signed chain (shim, GRUB) on {when(host.secure_boot_at)}"
            if host.secure_boot_at
            else None,
        ),
        _fact(
            "iPXE did not run",
            f"loaded on {when(host.ipxe_unchained_at)}, never asked for its boot script:"
            " Secure Boot refusing it, most likely"
            if host.ipxe_unchained_at
            else None,
        ),
    ]
    if installation is not None:
        disks = "; ".join(
            " ".join(
                str(part)
                for part in (
                    disk.get("device"),
                    disk.get("serial"),
                    f"{disk['size']} GB" if disk.get("size") else None,
                    "(boot)" if disk.get("boot") else None,
                )
                if part
            )
            for disk in installation.disks
        )
        keys = "; ".join(
            f"{key.get('type', '')} {key.get('fingerprint', '')}".strip()
            for key in installation.ssh_host_keys
        )
        rows += [
            _fact("Installed", when(host.installed_at) if host.installed_at else None),
            _fact(
                "FQDN",
                installation.fqdn,
                fqdn_html(installation.fqdn) if installation.fqdn else None,
            ),
            _fact("Address", installation.address),
            _fact("Boot mode", installation.boot_mode),
            _fact("Filesystem", installation.filesystem),
            _fact("Disks", disks),
            _fact("SSH host keys", keys),
            _fact("NICs", ", ".join(installation.macs)),
        ]
    return f'<dl class="facts">{"".join(rows)}</dl>'


def _finding(finding: Finding) -> str:
    where = f"line {finding.line}" if finding.line else "file"
    key = f" <code>{escape(finding.key)}</code>" if finding.key else ""
    fix = f" &mdash; {escape(finding.fix)}" if finding.fix else ""
    return (
        f'<li class="finding"><span class="severity-{escape(finding.severity)}">'
        f"{escape(finding.severity)}</span> {escape(where)}{key}: "
        f"{escape(finding.message)}{fix}</li>"
    )


def _answer(check: AnswerCheck) -> str:
    if check.file is None or check.problem is not None:
        file = f"<code>{escape(check.file)}</code>: " if check.file else ""
        return f'<p class="why">{file}{escape(check.problem or "no answer file")}</p>'
    head = (
        f"<p>Matches now: <code>{escape(check.file)}</code>, checked as installer "
        f"{escape(check.installer)} would.</p>"
    )
    if not check.findings:
        return head + '<p class="findings-none">No findings: the installer accepts it.</p>'
    items = "".join(_finding(finding) for finding in check.findings)
    return f'{head}<ul class="findings">{items}</ul>'


def _action_link(host: Host, action: Action) -> str:
    mac = str(host.mac)
    then = f' data-then="../../?forgot={host.mac.canonical}"' if action is FORGET else ""
    question = f"{action.label.split(' (')[0]} {mac}? {action.consequences(host)}"
    danger = " danger" if action is FORGET else ""
    return (
        f'<a class="button{danger}" id="{action.name}" href="{action.name}" '
        f'data-confirm="{escape(question)}" data-doing="{escape(f"{action.doing} {mac}")}" '
        f'data-done="{escape(f"{action.done} {mac}.")}"{then}>{escape(action.label)}</a>'
    )


def host_page(
    host: Host,
    timeline: Sequence[Event],
    check: AnswerCheck,
    now: float,
    version: str,
    *,
    nonce: str,
    notice: str = "",
) -> bytes:
    """
    The page of C{host}: its facts, its answer file's findings, its timeline newest
    first, and links to re-arm or forget it.

    @param timeline: Its latest events, oldest first, as the store gives them.
    @param check: Its answer file now, and what its installer would find in it.
    @param nonce: The nonce of the response's Content-Security-Policy.
    @param notice: Text to show above the page, such as what was just done.
    """
    events = list(reversed(timeline))[:PAGE_EVENTS]
    listed = "".join(_event(event, now) for event in events)
    more = (
        f'<p class="more">The latest {PAGE_EVENTS} events; <code>GET /hosts/{host.mac}/'
        "status?limit=500</code> lists up to 500.</p>"
        if len(timeline) > PAGE_EVENTS
        else ""
    )
    why = refusal(host)
    refused = (
        f'<p class="notice error">The last answer request was refused: {escape(why)}. '
        f"{escape(str(host.last_event.detail.get('reason', '')))}</p>"
        if why is not None
        else ""
    )
    content = f"""<nav><a href="../../">&larr; All hosts</a></nav>
<header><h1 class="mac">{escape(str(host.mac))}</h1>{state_badge(host)}</header>
{refused}<div class="actions">{_action_link(host, REARM)}{_action_link(host, FORGET)}</div>
<h2>Host</h2>
{_facts(host, timeline, now)}
<h2>Answer file</h2>
{_answer(check)}
<h2>Timeline</h2>
<ol class="timeline" reversed>{listed}</ol>{more}"""
    return document(
        f"pxe-pilot: {host.mac}",
        content,
        nonce,
        version,
        refresh=REFRESH_SECONDS,
        poll=POLL_SECONDS,
        notice=notice,
    )


def confirmation_page(
    host: Host, action: Action, token: str, version: str, *, nonce: str
) -> bytes:
    """
    The page that asks before C{action} is done to C{host}: a plain form posting to the
    action's route with the token that lets it through (L{pxepilot.http.forms}). It
    neither refreshes nor polls: the person is reading it.
    """
    mac = escape(str(host.mac))
    verb = escape(action.label.split(" (")[0])
    content = f"""<nav><a href="page">&larr; {mac}</a></nav>
<header><h1>{verb} <span class="mac">{mac}</span>?</h1>{state_badge(host)}</header>
<p>{escape(action.consequences(host))}</p>
<form method="post" action="{escape(action.name)}" class="actions">
<input type="hidden" name="token" value="{escape(token)}">
<button class="button danger" type="submit" id="confirm">{verb} {mac}</button>
<a class="button" href="page">Cancel</a>
</form>"""
    return document(
        f"pxe-pilot: {action.label.split(' (')[0]} {host.mac}?", content, nonce, version
    )
